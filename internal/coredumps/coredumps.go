// Package coredumps owns core dump ingestion and administration: the coredumps rows, their
// objects under coredumps/{device_key}/{id}.dmp, per-device retention and the upload rate
// limit. It orders every change by the consistency rules of docs/ARCHITECTURE.md: rows and objects
// are written in one transaction (rule 1) and objects are deleted only through the
// blob_deletions outbox after the rows' removal committed (rule 2).
package coredumps

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/naming"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

// Parse statuses (ORIGINAL-SYSTEM §4.4).
const (
	StatusPending = "PENDING"
	StatusParsed  = "PARSED"
	StatusError   = "ERROR"
)

var deviceKeyPattern = naming.DeviceKeyPattern

// Coredump is one stored core dump and what ingest found in it.
type Coredump struct {
	ID              int64
	DeviceID        int64
	Chip            string
	FirmwareVersion string
	Size            int64
	ParseStatus     string
	ParsedOutput    *string
	UploadedAt      time.Time
	ParsedAt        *time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time

	// Ingest findings; nil on rows that were never inspected (adopted from the older service).
	Container       *string
	DumpVersion     *int64
	ChecksumOK      *bool
	AppELFSHAPrefix *string
	Recognized      bool
	SHA256          *string
	ParseError      *string
	// ReportedChip is the chip the device named at upload when the dump's header names
	// another; Chip is then the dump's.
	ReportedChip *string
	// Report is the decoder's structured report (JSON), once decoded.
	Report json.RawMessage
	// CrashGroupID is the crash group the dump is in (internal/crashgroups), nil when none;
	// set by Get only.
	CrashGroupID *int64
}

// Options are the service's limits.
type Options struct {
	// MaxBytes is the largest accepted dump (COREDUMP_MAX_BYTES).
	MaxBytes int64
	// Keep is how many dumps a device keeps (MAX_COREDUMPS).
	Keep int
	// UploadsPerHour caps uploads per device (COREDUMP_UPLOADS_PER_HOUR).
	UploadsPerHour int
}

// DecodeQueue queues a core dump for decoding inside the transaction that stored or
// reset its row, so a committed PENDING dump always has its job (decoding.Queue).
type DecodeQueue interface {
	EnqueueTx(ctx context.Context, tx *sql.Tx, coredumpID int64) error
}

// UploadAudit records a device's upload in the upload's own transaction (auth.Audit).
type UploadAudit interface {
	RecordPendingTx(ctx context.Context, tx *sql.Tx, status int) error
}

// Fleet records a stored dump as a crash of its device on the dump's version, and the
// device as seen running it (fleet.Service). Its statements join the upload's batch, so
// they commit with the dump.
type Fleet interface {
	DumpQueries(deviceID int64, version string, at time.Time) []db.Query
}

// Service implements core dump operations: it is the only writer of the coredumps and
// coredump_uploads tables and of the objects under coredumps/.
type Service struct {
	db      *db.DB
	store   blob.Store
	decodes DecodeQueue
	audit   UploadAudit
	fleet   Fleet
	opts    Options
	log     *slog.Logger
	// now is the clock (tests move it).
	now func() time.Time
	// refused remembers devices this replica turned away for the rate limit.
	refused refusals
}

// NewService returns a Service. decodes, audit and fleet are required: every stored dump
// gets its decode job, every upload its audit entry, and the fleet view its crash.
func NewService(d *db.DB, store blob.Store, decodes DecodeQueue, audit UploadAudit, fleet Fleet, opts Options, log *slog.Logger) *Service {
	if decodes == nil || audit == nil || fleet == nil {
		panic("coredumps.NewService: a decode queue, an audit log and the fleet are required")
	}
	if log == nil {
		log = slog.Default()
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 20
	}
	if opts.Keep <= 0 {
		opts.Keep = 20
	}
	if opts.UploadsPerHour <= 0 {
		opts.UploadsPerHour = 30
	}
	return &Service{db: d, store: store, decodes: decodes, audit: audit, fleet: fleet, opts: opts, log: log, now: db.Now,
		refused: refusals{until: map[int64]refusal{}}}
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// The object-key layout of core dumps: coredumps/{device_key}/{id}.dmp. Root, Key,
// DevicePrefix and keySQL are the only places it is spelled out.
const (
	// Root is the prefix of every core dump object.
	Root      = "coredumps/"
	keySuffix = ".dmp"
)

// Key is the object key of a core dump.
func Key(deviceKey string, id int64) string {
	return DevicePrefix(deviceKey) + strconv.FormatInt(id, 10) + keySuffix
}

// DevicePrefix is the prefix holding every core dump object of a device.
func DevicePrefix(deviceKey string) string { return Root + deviceKey + "/" }

// keySQL is Key as an SQL expression, for statements that handle many dumps at once:
// prefix is an SQL expression for DevicePrefix, id one for the dump's id.
func keySQL(prefix, id string) string {
	return "CAST(" + prefix + " AS TEXT) || " + id + " || '" + keySuffix + "'"
}

// ParseKey splits a core dump object key into its device key and id (ok false for any
// other key).
func ParseKey(key string) (deviceKey string, id int64, ok bool) {
	rest, found := strings.CutPrefix(key, Root)
	if !found {
		return "", 0, false
	}
	deviceKey, name, found := strings.Cut(rest, "/")
	num, isDump := strings.CutSuffix(name, keySuffix)
	if !found || !isDump || !naming.ValidDeviceKey(deviceKey) {
		return "", 0, false
	}
	id, err := strconv.ParseInt(num, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != num {
		return "", 0, false
	}
	return deviceKey, id, true
}

// DeviceObjects removes a device's core dump objects with the device: devices.Service
// calls it in the deletion's transaction (the rows go by ON DELETE CASCADE).
type DeviceObjects struct{}

// DeviceDeleting queues every core dump object of the device for deletion, inside tx.
func (DeviceObjects) DeviceDeleting(ctx context.Context, tx *sql.Tx, d *devices.Device) error {
	if !deviceKeyPattern.MatchString(d.Key) {
		return fmt.Errorf("coredumps: invalid device key %q", d.Key)
	}
	return outbox.EnqueuePrefix(ctx, tx, DevicePrefix(d.Key))
}

// UploadInput is a device's upload.
type UploadInput struct {
	DeviceID        int64
	DeviceKey       string
	Chip            string
	FirmwareVersion string
	Body            io.Reader
	// Size is the body's declared length (Content-Length), or -1 when unknown; it only
	// sizes the read buffer, the limit is enforced on what is read.
	Size int64
}

// CheckUploadParams validates the query parameters of an upload (messages of ORIGINAL-SYSTEM §4.1)
// and returns the chip in lower case.
func CheckUploadParams(chip, version string) (string, error) {
	chip = strings.ToLower(strings.TrimSpace(chip))
	if chip == "" {
		return "", apperr.Validationf("Missing required query parameter: chip")
	}
	if version == "" {
		return "", apperr.Validationf("Missing required query parameter: firmware_version")
	}
	if !KnownChip(chip) {
		return "", apperr.Validationf("Unknown chip %q: expected an ESP32-family name such as esp32, esp32s3 or esp32c6", chip)
	}
	if !naming.ValidVersion(version) {
		return "", apperr.Validationf("Invalid firmware_version: 1-32 characters of A-Z, a-z, 0-9, '.', '_', '+' and '-'")
	}
	return chip, nil
}

// readLimited reads at most max bytes; more is TooLarge, none is a validation error.
func readLimited(r io.Reader, max, size int64) ([]byte, error) {
	if r == nil {
		return nil, apperr.Validationf("No coredump content provided")
	}
	var buf bytes.Buffer
	if size > 0 && size <= max {
		buf.Grow(int(size) + bytes.MinRead) // one allocation instead of doubling up to it
	}
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, apperr.Validationf("Could not read the coredump body: %v", err)
	}
	if n > max {
		return nil, apperr.TooLargef("Coredump exceeds maximum size of %d bytes", max)
	}
	if n == 0 {
		return nil, apperr.Validationf("No coredump content provided")
	}
	return buf.Bytes(), nil
}

func versionValue(h Header) any {
	if h.Version == 0 && !h.Recognized {
		return nil
	}
	return int64(h.Version)
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// deleteRows deletes coredumps rows and queues their objects, inside tx.
func deleteRows(ctx context.Context, tx *sql.Tx, deviceKey string, ids []int64) error {
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM coredumps WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete coredump %d: %w", id, err)
		}
		if err := outbox.Enqueue(ctx, tx, Key(deviceKey, id)); err != nil {
			return err
		}
	}
	return nil
}

const columns = `id, device_id, chip, firmware_version, size, parse_status, parsed_output, uploaded_at, parsed_at,
	created_at, updated_at, container, dump_version, checksum_ok, app_elf_sha_prefix, recognized, sha256, parse_error, report,
	reported_chip`

type scanner interface{ Scan(...any) error }

func scan(sc scanner) (*Coredump, error) {
	var c Coredump
	var out, container, prefix, sha, perr, report, reportedChip sql.NullString
	var parsedAt sql.NullTime
	var version sql.NullInt64
	var ok sql.NullBool
	if err := sc.Scan(&c.ID, &c.DeviceID, &c.Chip, &c.FirmwareVersion, &c.Size, &c.ParseStatus, &out, &c.UploadedAt, &parsedAt,
		&c.CreatedAt, &c.UpdatedAt, &container, &version, &ok, &prefix, &c.Recognized, &sha, &perr, &report, &reportedChip); err != nil {
		return nil, err
	}
	c.ParsedOutput, c.Container, c.AppELFSHAPrefix, c.ParseError = str(out), str(container), str(prefix), str(perr)
	c.ReportedChip = str(reportedChip)
	if report.Valid && report.String != "" {
		c.Report = json.RawMessage(report.String)
	}
	if sha.Valid {
		v := strings.TrimSpace(sha.String)
		c.SHA256 = &v
	}
	if parsedAt.Valid {
		t := parsedAt.Time.UTC()
		c.ParsedAt = &t
	}
	if version.Valid {
		c.DumpVersion = &version.Int64
	}
	if ok.Valid {
		c.ChecksumOK = &ok.Bool
	}
	c.UploadedAt, c.CreatedAt, c.UpdatedAt = c.UploadedAt.UTC(), c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return &c, nil
}

func str(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

func getCoredump(ctx context.Context, q querier, deviceID, id int64) (*Coredump, error) {
	c, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM coredumps WHERE id = $1 AND device_id = $2`, id, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("Coredump %d was not found", id)
	}
	return c, err
}

// deviceKey returns a device's key, or NotFound.
func deviceKey(ctx context.Context, q querier, deviceID int64) (string, error) {
	var key string
	err := q.QueryRowContext(ctx, `SELECT key FROM devices WHERE id = $1`, deviceID).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", apperr.NotFoundf("Device %d was not found", deviceID)
	}
	return key, err
}

// Page is one page of a device's dumps, newest first, and the device's total.
type Page struct {
	Coredumps []*Coredump
	Total     int
}

// List returns up to limit dumps of a device, newest first, older than the dump beforeID
// when beforeID > 0.
func (s *Service) List(ctx context.Context, deviceID int64, limit int, beforeID int64) (*Page, error) {
	if _, err := deviceKey(ctx, s.db, deviceID); err != nil {
		return nil, db.Err("list coredumps", err)
	}
	p := &Page{Coredumps: []*Coredump{}}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps WHERE device_id = $1`, deviceID).Scan(&p.Total); err != nil {
		return nil, db.Err("list coredumps", err)
	}
	q := `SELECT ` + columns + ` FROM coredumps WHERE device_id = $1`
	args := []any{deviceID}
	if beforeID > 0 {
		// Page on (uploaded_at, id), the sort order; a cursor row deleted meanwhile falls back to id.
		var at time.Time
		err := s.db.QueryRowContext(ctx, `SELECT uploaded_at FROM coredumps WHERE id = $1 AND device_id = $2`, beforeID, deviceID).Scan(&at)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			q += ` AND id < $2`
			args = append(args, beforeID)
		case err != nil:
			return nil, db.Err("list coredumps", err)
		default:
			q += ` AND (uploaded_at < $2 OR (uploaded_at = $2 AND id < $3))`
			args = append(args, at, beforeID)
		}
	}
	q += fmt.Sprintf(` ORDER BY uploaded_at DESC, id DESC LIMIT %d`, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.Err("list coredumps", err)
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scan(rows)
		if err != nil {
			return nil, db.Err("list coredumps", err)
		}
		p.Coredumps = append(p.Coredumps, c)
	}
	return p, db.Err("list coredumps", rows.Err())
}

// Get returns one dump of a device, with its crash group; a dump of another device is NotFound.
func (s *Service) Get(ctx context.Context, deviceID, id int64) (*Coredump, error) {
	c, err := getCoredump(ctx, s.db, deviceID, id)
	if err == nil {
		var g sql.NullInt64
		err = s.db.QueryRowContext(ctx, `SELECT group_id FROM crash_group_dumps WHERE coredump_id = $1`, id).Scan(&g)
		if errors.Is(err, sql.ErrNoRows) {
			err = nil
		}
		if g.Valid {
			c.CrashGroupID = &g.Int64
		}
	}
	return c, db.Err("get coredump", err)
}

// Open streams a dump's object, or a range of it. A missing object is NotFound, a store
// outage Unavailable, a range outside the object blob.ErrInvalidRange.
func (s *Service) Open(ctx context.Context, deviceID, id int64, rng *blob.Range) (io.ReadCloser, blob.Info, *Coredump, error) {
	c, err := getCoredump(ctx, s.db, deviceID, id)
	if err != nil {
		return nil, blob.Info{}, nil, db.Err("download coredump", err)
	}
	key, err := deviceKey(ctx, s.db, deviceID)
	if err != nil {
		return nil, blob.Info{}, nil, db.Err("download coredump", err)
	}
	rc, info, err := s.store.Get(ctx, Key(key, id), rng)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		if legacyPending(ctx, s.db, id) {
			return nil, blob.Info{}, nil, apperr.NotFoundf("Coredump %d has not been migrated from the older service yet (run `iotsupport migrate-to-s3`)", id)
		}
		return nil, blob.Info{}, nil, apperr.NotFoundf("Coredump file %d was not found", id)
	case errors.Is(err, blob.ErrInvalidRange):
		return nil, info, c, err
	case err != nil:
		return nil, blob.Info{}, nil, storeErr(err)
	}
	return rc, info, c, nil
}

// Delete removes one dump; its object is deleted through the outbox after commit.
func (s *Service) Delete(ctx context.Context, deviceID, id int64) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		key, err := deviceKey(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		if _, err := getCoredump(ctx, tx, deviceID, id); err != nil {
			return err
		}
		return deleteRows(ctx, tx, key, []int64{id})
	})
	return db.Err("delete coredump", err)
}

// DeleteAll removes every dump of a device (none is fine).
func (s *Service) DeleteAll(ctx context.Context, deviceID int64) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		key, err := deviceKey(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		ids, err := db.Int64s(ctx, tx, `SELECT id FROM coredumps WHERE device_id = $1`, deviceID)
		if err != nil {
			return err
		}
		return deleteRows(ctx, tx, key, ids)
	})
	return db.Err("delete coredumps", err)
}

// SeedInput is a testing-mode core dump (ORIGINAL-SYSTEM §2.6).
type SeedInput struct {
	DeviceID        int64
	Chip            string
	FirmwareVersion string
	Size            int64
	ParseStatus     string
	ParsedOutput    *string
}

// Seed creates a dump in any parse state with an object of Size zero bytes, so downloads
// work (testing mode only). It is stored as an upload of the device is, under the same
// retention and hourly limit; no decode job is queued.
func (s *Service) Seed(ctx context.Context, in SeedInput) (*Coredump, error) {
	switch in.ParseStatus {
	case StatusPending, StatusParsed, StatusError:
	default:
		return nil, apperr.Validationf("parse_status must be PENDING, PARSED or ERROR")
	}
	if _, err := CheckUploadParams(in.Chip, in.FirmwareVersion); err != nil {
		return nil, err
	}
	if in.Size < 1 || in.Size > s.opts.MaxBytes {
		return nil, apperr.Validationf("size must be between 1 and %d", s.opts.MaxBytes)
	}
	key, err := deviceKey(ctx, s.db, in.DeviceID)
	if err != nil {
		return nil, db.Err("seed coredump", err)
	}
	out := in.ParsedOutput
	if in.ParseStatus == StatusParsed && out == nil {
		v := "Test coredump parsed output"
		out = &v
	}
	var c *Coredump
	setState := func(ctx context.Context, tx *sql.Tx, id int64) error {
		var parsedAt any
		if in.ParseStatus != StatusPending {
			parsedAt = s.now()
		}
		if _, err := tx.ExecContext(ctx, `UPDATE coredumps SET parse_status = $1, parsed_output = $2, parsed_at = $3 WHERE id = $4`,
			in.ParseStatus, out, parsedAt, id); err != nil {
			return fmt.Errorf("set parse state: %w", err)
		}
		var err error
		c, err = getCoredump(ctx, tx, in.DeviceID, id)
		return err
	}
	if _, err := s.upload(ctx, UploadInput{DeviceID: in.DeviceID, DeviceKey: key, Chip: in.Chip, FirmwareVersion: in.FirmwareVersion,
		Body: bytes.NewReader(make([]byte, in.Size)), Size: in.Size}, setState); err != nil {
		return nil, err
	}
	return c, nil
}

// storeErr maps object-store failures: an outage is 503.
func storeErr(err error) error {
	if errors.Is(err, blob.ErrUnavailable) {
		return apperr.UnavailableErr("object storage", err)
	}
	return err
}
