// Package firmware owns firmware bundles: validated upload, storage of the five
// artifacts under firmware/{code}/{version}/, version history, retention and the
// current-version pointer devices download.
package firmware

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/blobcache"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/outbox"
	"github.com/iotsupport/iotsupport/internal/ttlcache"
)

// Artifacts are the generic object names of a stored version.
var Artifacts = []string{"firmware.bin", "firmware.elf", "firmware.map", "sdkconfig", "version.json"}

// ValidArtifact reports whether name is one of Artifacts.
func ValidArtifact(name string) bool {
	for _, a := range Artifacts {
		if a == name {
			return true
		}
	}
	return false
}

// The object-key layout of firmware: firmware/{code}/{version}/{artifact}. Root, Key,
// Prefix and ModelPrefix are the only places it is spelled out.

// Root is the prefix of every firmware object.
const Root = "firmware/"

// Key is the object key of one artifact.
func Key(code, version, artifact string) string { return Prefix(code, version) + artifact }

// Prefix is the folder of one version.
func Prefix(code, version string) string { return ModelPrefix(code) + version + "/" }

// ModelPrefix is the folder of every version of a model.
func ModelPrefix(code string) string { return Root + code + "/" }

// ArtifactInfo is the recorded size and SHA-256 of one stored artifact.
type ArtifactInfo struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Version is one stored firmware version of a model.
type Version struct {
	ID            int64
	ModelID       int64
	Version       string
	UploadedAt    time.Time
	ProjectName   string
	IDFVersion    string
	Chip          string
	SecureVersion int64
	CompileDate   string
	CompileTime   string
	ELFSHA256     string
	GitCommit     string
	BinSize       int64
	BinSHA256     string
	Artifacts     map[string]ArtifactInfo
	Current       bool
}

// Config holds the limits and retention of the service.
type Config struct {
	MaxFirmwares   int
	MaxBundleBytes int64
	Limits         bundle.Limits
	TempDir        string
}

// Models is what firmware needs of the device-model owner (devices.Service): the model a
// request names, its devices to notify, and its current-version column.
type Models interface {
	GetModel(ctx context.Context, id int64) (*devices.Model, error)
	GetModelByCode(ctx context.Context, code string) (*devices.Model, error)
	ListDevices(ctx context.Context, modelID *int64) ([]*devices.Device, error)
	FirmwareVersionTx(ctx context.Context, tx *sql.Tx, modelID int64) (string, error)
	SetFirmwareVersionTx(ctx context.Context, tx *sql.Tx, modelID int64, version string) error
}

// Dumps is what firmware needs of the core-dump owner (coredumps.Service).
type Dumps interface {
	// FirmwareNeeds lists what the model's undecoded (PENDING) dumps wait for, inside tx:
	// the versions they reported and the ELF SHA-256 prefixes they carry. Retention and
	// deletion keep every version matching either.
	FirmwareNeeds(ctx context.Context, tx *sql.Tx, modelID int64) (versions, elfPrefixes []string, err error)
	// FirmwareArrived re-queues the dumps that failed for want of this version's ELF.
	FirmwareArrived(ctx context.Context, modelID int64, version, elfSHA256 string) (int, error)
}

// Service implements firmware operations: it is the only writer of firmware_versions and
// of the objects under firmware/.
type Service struct {
	db     *db.DB
	store  blob.Store
	models Models
	dumps  Dumps
	notify notify.Notifier
	log    *slog.Logger
	cfg    Config
	// current answers CurrentOfDevice from memory (CacheCurrent); notify waits for its TTL.
	current *ttlcache.Cache[int64, currentOf]
	later   delayed
	// answer is the device answer's prepared statement (answer.go).
	answer atomic.Pointer[sql.Stmt]
	// Cache, when set, serves artifacts with a recorded size and SHA-256 from local
	// disk (see cache.go); nil reads every download from the store.
	Cache *blobcache.Cache
}

// NewService returns the firmware service. Every argument is required.
func NewService(d *db.DB, store blob.Store, models Models, dumps Dumps, n notify.Notifier, log *slog.Logger, cfg Config) *Service {
	if models == nil || dumps == nil || n == nil || log == nil {
		panic("firmware.NewService: models, dumps, notifier and log are required")
	}
	return &Service{db: d, store: store, models: models, dumps: dumps, notify: n, log: log, cfg: cfg}
}

// ModelRef names a model by id or, on the pipeline routes, by code.
type ModelRef struct {
	ID   int64
	Code string
}

// ModelID refers to a model by id.
func ModelID(id int64) ModelRef { return ModelRef{ID: id} }

// ModelCode refers to a model by code.
func ModelCode(code string) ModelRef { return ModelRef{Code: code} }

func (s *Service) model(ctx context.Context, ref ModelRef) (*devices.Model, error) {
	if ref.Code != "" {
		return s.models.GetModelByCode(ctx, ref.Code)
	}
	return s.models.GetModel(ctx, ref.ID)
}

// UploadResult is the outcome of an upload.
type UploadResult struct {
	ModelID int64
	Code    string
	Version string
	Created bool // false when an identical version was re-uploaded
}

// Upload validates a bundle and stores it, as the model's current version when
// makeCurrent is set (otherwise it waits, for a rollout say). body is called once the
// model is known (an unknown model is refused before the body is read). Replace allows a
// version that exists with different content to be overwritten.
func (s *Service) Upload(ctx context.Context, ref ModelRef, body func() (io.Reader, error), replace, makeCurrent bool) (*UploadResult, error) {
	m, err := s.model(ctx, ref)
	if err != nil {
		return nil, err
	}
	r, err := body()
	if err != nil {
		return nil, err
	}
	f, size, cleanup, err := Spool(s.cfg.TempDir, r, s.cfg.MaxBundleBytes)
	defer cleanup()
	if err != nil {
		return nil, err
	}
	b, err := bundle.Validate(f, size, m.Code, s.cfg.Limits, bundle.Strict)
	if err != nil {
		return nil, asValidation(err)
	}
	return s.store2(ctx, m, b, replace, time.Time{}, makeCurrent)
}

func asValidation(err error) error {
	var ve *bundle.ValidationError
	if errors.As(err, &ve) {
		return apperr.Validationf("%s", ve.Error())
	}
	var ie *espimage.Error
	if errors.As(err, &ie) {
		return apperr.Validationf("%s", ie.Error())
	}
	return fmt.Errorf("validate bundle: %w", err)
}

func storeErr(op string, err error) error {
	var ae *apperr.Error
	if err != nil && !errors.As(err, &ae) && errors.Is(err, blob.ErrUnavailable) {
		return apperr.UnavailableErr("object storage", fmt.Errorf("%s: %w", op, err))
	}
	return db.Err(op, err)
}

// store2 runs consistency rule 1 for a validated bundle. uploadedAt zero means now.
func (s *Service) store2(ctx context.Context, m *devices.Model, b *bundle.Bundle, replace bool, uploadedAt time.Time, makeCurrent bool) (*UploadResult, error) {
	version := b.Version
	arts := map[string]ArtifactInfo{}
	for _, a := range b.Artifacts {
		arts[a.Name] = ArtifactInfo{Size: a.Size, SHA256: hex.EncodeToString(a.SHA256[:])}
	}
	artJSON, _ := json.Marshal(arts)
	res := &UploadResult{ModelID: m.ID, Code: m.Code, Version: version}
	var written []string
	var pruned []string
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := LockModel(ctx, s.db, tx, m.ID); err != nil {
			return err
		}
		// The time is taken under the model lock, so upload times follow commit order
		// and retention never keeps an extra version from a concurrent upload.
		uploadedAt := uploadedAt
		if uploadedAt.IsZero() {
			uploadedAt = db.Now()
		}
		var (
			existingID  int64
			existingArt sql.NullString
		)
		err := tx.QueryRowContext(ctx, `SELECT id, artifacts FROM firmware_versions WHERE device_model_id = $1 AND version = $2`,
			m.ID, version).Scan(&existingID, &existingArt)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			res.Created = true
		case err != nil:
			return err
		}
		writeObjects := true
		if !res.Created {
			same := existingArt.Valid && SameArtifacts(existingArt.String, arts)
			if !same && !replace {
				return apperr.Existsf("FirmwareVersion for %s %s already exists with different content (use ?replace=true to overwrite)", m.Code, version)
			}
			writeObjects = !same
			if _, err := tx.ExecContext(ctx, `UPDATE firmware_versions SET uploaded_at = $1, project_name = $2, idf_version = $3, chip = $4,
				secure_version = $5, compile_date = $6, compile_time = $7, elf_sha256 = $8, git_commit = $9, bin_size = $10, bin_sha256 = $11,
				artifacts = $12 WHERE id = $13`, uploadedAt, b.Image.ProjectName, b.Image.IDFVersion, b.Image.Chip, int64(b.Image.SecureVersion),
				b.Image.CompileDate, b.Image.CompileTime, hex.EncodeToString(b.Image.AppELFSHA256[:]), b.GitCommit,
				arts["firmware.bin"].Size, arts["firmware.bin"].SHA256, string(artJSON), existingID); err != nil {
				return err
			}
		} else {
			if _, err := tx.ExecContext(ctx, `INSERT INTO firmware_versions (device_model_id, version, uploaded_at, created_at, project_name,
				idf_version, chip, secure_version, compile_date, compile_time, elf_sha256, git_commit, bin_size, bin_sha256, artifacts)
				VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, m.ID, version, uploadedAt, b.Image.ProjectName,
				b.Image.IDFVersion, b.Image.Chip, int64(b.Image.SecureVersion), b.Image.CompileDate, b.Image.CompileTime,
				hex.EncodeToString(b.Image.AppELFSHA256[:]), b.GitCommit, arts["firmware.bin"].Size, arts["firmware.bin"].SHA256, string(artJSON)); err != nil {
				return err
			}
		}
		current := version
		if makeCurrent {
			if err := refuseWhileRolling(ctx, tx, m.ID, version); err != nil {
				return err
			}
			if err := s.models.SetFirmwareVersionTx(ctx, tx, m.ID, version); err != nil {
				return err
			}
		} else if current, err = s.models.FirmwareVersionTx(ctx, tx, m.ID); err != nil {
			return err
		}
		var err2 error
		pruned, err2 = s.retain(ctx, tx, m, current, version)
		if err2 != nil {
			return err2
		}
		if !writeObjects {
			return nil
		}
		// Queued deletions overlapping this folder run now, so none can remove what we write.
		if err := outbox.Settle(ctx, tx, s.store, Prefix(m.Code, version)); err != nil {
			return err
		}
		for _, a := range b.Artifacts {
			// Recorded before the Put: a failed Put may still have stored the object.
			written = append(written, Key(m.Code, version, a.Name))
			if err := s.putArtifact(ctx, Key(m.Code, version, a.Name), a); err != nil {
				return err
			}
		}
		return nil
	})
	s.current.Clear()
	if err != nil {
		// Only objects of a version that did not exist before are ours to remove.
		if res.Created {
			outbox.Cleanup(ctx, s.db, s.store, s.log, func(ctx context.Context, tx *sql.Tx) (bool, error) {
				// Another upload of the same version may have committed meanwhile: its objects stay.
				if err := LockModel(ctx, s.db, tx, m.ID); err != nil {
					return false, err
				}
				var n int
				err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM firmware_versions WHERE device_model_id = $1 AND version = $2`, m.ID, version).Scan(&n)
				return n > 0, err
			}, written...)
		}
		return nil, storeErr("upload firmware", err)
	}
	if len(pruned) > 0 {
		s.log.Info("firmware retention pruned versions", "model", m.Code, "versions", pruned)
	}
	if makeCurrent {
		s.afterCurrentChanged(ctx, m, version)
	}
	if v, err := s.getVersion(ctx, m, version); err == nil {
		// Dumps that failed for want of this ELF decode now.
		if n, err := s.dumps.FirmwareArrived(ctx, m.ID, v.Version, v.ELFSHA256); err != nil {
			s.log.Warn("re-queue decodes after firmware upload", "error", err)
		} else if n > 0 {
			s.log.Info("re-queued core dumps waiting for this firmware", "version", v.Version, "count", n)
		}
	}
	return res, nil
}

func (s *Service) putArtifact(ctx context.Context, key string, a *bundle.Artifact) error {
	rc, err := a.Open()
	if err != nil {
		return fmt.Errorf("open %s in bundle: %w", a.Name, err)
	}
	defer rc.Close()
	return s.store.Put(ctx, key, rc, a.Size, "application/octet-stream")
}

// LockModel serialises changes to a model's firmware (uploads, pin, delete, retention):
// the model's row, held for update. Readers that depend on the model's firmware set (a
// core dump upload, a decode recording a missing ELF) share it.
func LockModel(ctx context.Context, d *db.DB, tx *sql.Tx, modelID int64) error {
	return d.LockRow(ctx, tx, db.ForUpdate, "device_models", "id", modelID)
}

// ShareModel holds the model's firmware set unchanged for the rest of tx (see LockModel).
func ShareModel(ctx context.Context, d *db.DB, tx *sql.Tx, modelID int64) error {
	return d.LockRow(ctx, tx, db.ForShare, "device_models", "id", modelID)
}

// protected returns which of the model's versions undecoded core dumps still need, by
// reported version or ELF SHA-256 prefix (versions maps version to its ELF SHA-256).
func (s *Service) protected(ctx context.Context, tx *sql.Tx, modelID int64, versions map[string]string) (map[string]bool, error) {
	names, prefixes, err := s.dumps.FirmwareNeeds(ctx, tx, modelID)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, v := range names {
		if _, ok := versions[v]; ok {
			out[v] = true
		}
	}
	for v, sha := range versions {
		for _, p := range prefixes {
			if sha != "" && p != "" && strings.HasPrefix(strings.ToLower(sha), strings.ToLower(p)) {
				out[v] = true
			}
		}
	}
	return out, nil
}

// SameArtifacts reports whether a stored artifact record (JSON) lists exactly arts.
func SameArtifacts(stored string, arts map[string]ArtifactInfo) bool {
	var old map[string]ArtifactInfo
	if json.Unmarshal([]byte(stored), &old) != nil || len(old) != len(arts) {
		return false
	}
	for k, v := range arts {
		if old[k] != v {
			return false
		}
	}
	return true
}

// retain keeps the newest MaxFirmwares versions by upload time, never the current
// version nor protected ones; pruned rows go now, their objects through the outbox.
func (s *Service) retain(ctx context.Context, tx *sql.Tx, m *devices.Model, current, storing string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, version, COALESCE(elf_sha256, '') FROM firmware_versions WHERE device_model_id = $1
		ORDER BY uploaded_at DESC, id DESC`, m.ID)
	if err != nil {
		return nil, err
	}
	type row struct {
		id           int64
		version, elf string
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.version, &r.elf); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(all) <= s.cfg.MaxFirmwares {
		return nil, nil
	}
	elfs := map[string]string{}
	for _, r := range all {
		elfs[r.version] = r.elf
	}
	protected, err := s.protected(ctx, tx, m.ID, elfs)
	if err != nil {
		return nil, err
	}
	held, err := heldVersions(ctx, tx, m.ID)
	if err != nil {
		return nil, err
	}
	var pruned []string
	for _, r := range all[s.cfg.MaxFirmwares:] {
		if r.version == current || r.version == storing || protected[r.version] || held[r.version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM firmware_versions WHERE id = $1`, r.id); err != nil {
			return nil, err
		}
		if err := outbox.EnqueuePrefix(ctx, tx, Prefix(m.Code, r.version)); err != nil {
			return nil, err
		}
		pruned = append(pruned, r.version)
	}
	return pruned, nil
}

// afterCurrentChanged notifies every device of the model, after commit.
func (s *Service) afterCurrentChanged(ctx context.Context, m *devices.Model, version string) {
	ctx = context.WithoutCancel(ctx)
	s.later.run(func() { s.notifyDevices(ctx, m, version) })
}

func (s *Service) notifyDevices(ctx context.Context, m *devices.Model, version string) {
	ds, err := s.models.ListDevices(ctx, &m.ID)
	if err != nil {
		s.log.Warn("list devices for notification", "model", m.Code, "error", err)
		return
	}
	other, err := s.otherAnswer(ctx, m.ID)
	if err != nil {
		s.log.Warn("read pins and rollouts for notification", "model", m.Code, "error", err)
		return
	}
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		if !other(d.Key) {
			ids = append(ids, d.ClientID())
		}
	}
	s.notify.FirmwareUpdated(ctx, ids, version)
}

const versionColumns = `fv.id, fv.device_model_id, fv.version, fv.uploaded_at, COALESCE(fv.project_name, ''), COALESCE(fv.idf_version, ''),
	COALESCE(fv.chip, ''), COALESCE(fv.secure_version, 0), COALESCE(fv.compile_date, ''), COALESCE(fv.compile_time, ''),
	COALESCE(fv.elf_sha256, ''), COALESCE(fv.git_commit, ''), COALESCE(fv.bin_size, 0), COALESCE(fv.bin_sha256, ''),
	COALESCE(fv.artifacts, ''), CASE WHEN m.firmware_version = fv.version THEN 1 ELSE 0 END`

type scanner interface{ Scan(...any) error }

func scanVersion(sc scanner) (*Version, error) {
	var v Version
	var arts string
	var current int
	if err := sc.Scan(&v.ID, &v.ModelID, &v.Version, &v.UploadedAt, &v.ProjectName, &v.IDFVersion, &v.Chip, &v.SecureVersion,
		&v.CompileDate, &v.CompileTime, &v.ELFSHA256, &v.GitCommit, &v.BinSize, &v.BinSHA256, &arts, &current); err != nil {
		return nil, err
	}
	v.UploadedAt = v.UploadedAt.UTC()
	v.Current = current == 1
	if arts != "" {
		_ = json.Unmarshal([]byte(arts), &v.Artifacts)
	}
	return &v, nil
}

// ListVersions returns the model and its stored versions, newest upload first.
func (s *Service) ListVersions(ctx context.Context, ref ModelRef) (*devices.Model, []*Version, error) {
	m, err := s.model(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	vs, err := s.listVersions(ctx, m)
	return m, vs, err
}

func (s *Service) listVersions(ctx context.Context, m *devices.Model) ([]*Version, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+versionColumns+` FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id
		WHERE fv.device_model_id = $1 ORDER BY fv.uploaded_at DESC, fv.id DESC`, m.ID)
	if err != nil {
		return nil, storeErr("list firmware versions", err)
	}
	defer rows.Close()
	out := []*Version{}
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, storeErr("list firmware versions", err)
		}
		out = append(out, v)
	}
	return out, storeErr("list firmware versions", rows.Err())
}

// GetVersion returns one stored version.
func (s *Service) GetVersion(ctx context.Context, ref ModelRef, version string) (*Version, error) {
	m, err := s.model(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.getVersion(ctx, m, version)
}

func (s *Service) getVersion(ctx context.Context, m *devices.Model, version string) (*Version, error) {
	v, err := scanVersion(s.db.QueryRowContext(ctx, `SELECT `+versionColumns+` FROM firmware_versions fv JOIN device_models m ON m.id = fv.device_model_id
		WHERE fv.device_model_id = $1 AND fv.version = $2`, m.ID, version))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("FirmwareVersion %s %s was not found", m.Code, version)
	}
	return v, storeErr("get firmware version", err)
}

// SetCurrent makes a stored version current (rollback or pin), notifies devices and
// returns the model as it is now.
func (s *Service) SetCurrent(ctx context.Context, ref ModelRef, version string) (*devices.Model, error) {
	m, err := s.model(ctx, ref)
	if err != nil {
		return nil, err
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := LockModel(ctx, s.db, tx, m.ID); err != nil {
			return err
		}
		if err := refuseWhileRolling(ctx, tx, m.ID, version); err != nil {
			return err
		}
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM firmware_versions WHERE device_model_id = $1 AND version = $2`, m.ID, version).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return apperr.NotFoundf("FirmwareVersion %s %s was not found", m.Code, version)
		}
		if err != nil {
			return err
		}
		return s.models.SetFirmwareVersionTx(ctx, tx, m.ID, version)
	})
	s.current.Clear()
	if err != nil {
		return nil, storeErr("set current firmware", err)
	}
	s.afterCurrentChanged(ctx, m, version)
	return s.models.GetModel(ctx, m.ID)
}

// DeleteVersion removes a stored version that is neither current nor protected.
func (s *Service) DeleteVersion(ctx context.Context, ref ModelRef, version string) error {
	m, err := s.model(ctx, ref)
	if err != nil {
		return err
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := LockModel(ctx, s.db, tx, m.ID); err != nil {
			return err
		}
		current, err := s.models.FirmwareVersionTx(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		var id int64
		var elf string
		err = tx.QueryRowContext(ctx, `SELECT id, COALESCE(elf_sha256, '') FROM firmware_versions WHERE device_model_id = $1 AND version = $2`,
			m.ID, version).Scan(&id, &elf)
		if errors.Is(err, sql.ErrNoRows) {
			return apperr.NotFoundf("FirmwareVersion %s %s was not found", m.Code, version)
		}
		if err != nil {
			return err
		}
		if current == version {
			return apperr.InvalidOperationf("Cannot delete firmware version %s because it is the current version of %s", version, m.Code)
		}
		p, err := s.protected(ctx, tx, m.ID, map[string]string{version: elf})
		if err != nil {
			return err
		}
		if p[version] {
			return apperr.InvalidOperationf("Cannot delete firmware version %s because core dumps waiting to be decoded need it", version)
		}
		held, err := heldVersions(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		if held[version] {
			return apperr.InvalidOperationf("Cannot delete firmware version %s because a rollout or a device pin uses it", version)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM firmware_versions WHERE id = $1`, id); err != nil {
			return err
		}
		return outbox.EnqueuePrefix(ctx, tx, Prefix(m.Code, version))
	})
	s.current.Clear()
	return storeErr("delete firmware version", err)
}

// ModelObjects removes a model's firmware with the model: devices.Service calls it in the
// deletion's transaction.
type ModelObjects struct{}

// ModelDeleting deletes the model's versions and queues their objects, inside tx.
func (ModelObjects) ModelDeleting(ctx context.Context, tx *sql.Tx, m *devices.Model) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM firmware_versions WHERE device_model_id = $1`, m.ID); err != nil {
		return err
	}
	return outbox.EnqueuePrefix(ctx, tx, ModelPrefix(m.Code))
}

type currentOf struct {
	m   *devices.Model
	a   *Artifact
	err error
}

// CacheCurrent lets CurrentOfDevice answer from memory for ttl (0: never). Changes
// through this Service clear it at once; other replicas may answer the old version for
// up to ttl, so firmware notifications to devices are sent ttl after the change.
func (s *Service) CacheCurrent(ttl time.Duration) {
	s.current = ttlcache.New[int64, currentOf](ttl, 100_000)
	s.later.delay = ttl
}

// FlushNotifications sends the delayed firmware notifications now (at shutdown).
func (s *Service) FlushNotifications() { s.later.flush() }

// Artifact is an open stored artifact.
type Artifact struct {
	Code, Version, Name string
	Size                int64
	SHA256              string
}

// Current returns the current firmware.bin of a model: 404 when there is none.
func (s *Service) Current(ctx context.Context, ref ModelRef) (*Artifact, error) {
	m, err := s.model(ctx, ref)
	if err != nil {
		return nil, err
	}
	if m.FirmwareVersion == nil {
		return nil, apperr.NotFoundf("Firmware %s was not found", m.Code)
	}
	return s.artifact(ctx, m, *m.FirmwareVersion, "firmware.bin")
}

// CurrentOfDevice returns a device's model (ID, Code, Name and FirmwareVersion only,
// FirmwareVersion being the version this device is to run: its pin, else its rollout's,
// else the model's current one; see answer.go) and that firmware.bin, in one query,
// since devices poll for it.
// The model is nil when the device does not exist; the artifact is nil, with a
// NotFound error, when the model has no current version.
func (s *Service) CurrentOfDevice(ctx context.Context, deviceID int64) (*devices.Model, *Artifact, error) {
	if c, ok := s.current.Get(deviceID); ok {
		return c.m, c.a, c.err
	}
	gen := s.current.Generation()
	m, a, err := s.currentOfDevice(ctx, deviceID)
	if m != nil && (err == nil || apperr.KindOf(err) == apperr.NotFound) {
		// Shared by every caller until it expires: callers only read it.
		s.current.Put(gen, deviceID, currentOf{m: m, a: a, err: err})
	}
	return m, a, err
}

// Artifact describes one artifact of a stored version. Versions adopted from the older
// service have no recorded sizes; their size comes from the store.
func (s *Service) Artifact(ctx context.Context, ref ModelRef, version, name string) (*Artifact, error) {
	m, err := s.model(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.artifact(ctx, m, version, name)
}

func (s *Service) artifact(ctx context.Context, m *devices.Model, version, name string) (*Artifact, error) {
	if !ValidArtifact(name) {
		return nil, apperr.NotFoundf("Artifact %s was not found", name)
	}
	v, err := s.getVersion(ctx, m, version)
	if err != nil {
		return nil, err
	}
	a := &Artifact{Code: m.Code, Version: version, Name: name}
	if info, ok := v.Artifacts[name]; ok {
		a.Size, a.SHA256 = info.Size, info.SHA256
		return a, nil
	}
	st, err := s.store.Stat(ctx, Key(m.Code, version, name))
	if errors.Is(err, blob.ErrNotFound) {
		return nil, apperr.NotFoundf("Firmware %s %s %s was not found", m.Code, version, name)
	}
	if err != nil {
		return nil, storeErr("stat artifact", err)
	}
	a.Size = st.Size
	return a, nil
}

// Open reads an artifact or a range of it from storage.
func (s *Service) Open(ctx context.Context, a *Artifact, rng *blob.Range) (io.ReadCloser, error) {
	if rc, ok := s.openCached(ctx, a, rng); ok {
		return rc, nil
	}
	rc, _, err := s.store.Get(ctx, Key(a.Code, a.Version, a.Name), rng)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, apperr.NotFoundf("Firmware %s %s %s was not found", a.Code, a.Version, a.Name)
	}
	if err != nil {
		return nil, storeErr("read artifact", err)
	}
	return rc, nil
}

// TempDir is where bundles are spooled.
func (s *Service) TempDir() string {
	if s.cfg.TempDir != "" {
		return s.cfg.TempDir
	}
	return os.TempDir()
}

// Import stores an already validated bundle with a given upload time (used when
// adopting the older service's files, whose modification times keep retention order).
// It does not change the model's current version unless makeCurrent is set, and an
// identical existing version is left as it is.
func (s *Service) Import(ctx context.Context, m *devices.Model, b *bundle.Bundle, uploadedAt time.Time, makeCurrent bool) (*UploadResult, error) {
	return s.store2(ctx, m, b, false, uploadedAt.UTC().Truncate(time.Microsecond), makeCurrent)
}
