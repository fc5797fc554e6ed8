package devices

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// Device is a device with its model reference and derived fields.
type Device struct {
	ID             int64
	Key            string
	DeviceModelID  int64
	ModelCode      string
	ModelName      string
	ModelFirmware  *string
	Active         bool
	Config         string
	DeviceName     *string
	DeviceEntityID *string
	EnableOTA      *bool
	LastCoredumpAt *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// Rotation bookkeeping under the older service's names: RotationState is OK unless a
	// rotation is pending (only an adopted database can hold another value, until the
	// device's credentials are next issued).
	RotationState           string
	SecretCreatedAt         *time.Time
	LastRotationAttemptAt   *time.Time
	LastRotationCompletedAt *time.Time
	// RotationExcluded is the older service's devices.active = false, kept on adoption.
	RotationExcluded bool
	// What the device last reported (internal/fleet's device_status; nil until it has).
	LastSeenAt      *time.Time
	RunningVersion  *string
	RunningSince    *time.Time
	LastResetReason *string
	LastBootAt      *time.Time
}

// RotationStates are the values of rotation_state (the older service's enum).
var RotationStates = []string{"OK", "QUEUED", "PENDING", "TIMEOUT"}

// ClientID is the device's OIDC client id, `iotdevice-{model_code}-{key}`.
func (d *Device) ClientID() string { return "iotdevice-" + d.ModelCode + "-" + d.Key }

// deviceColumns is selected by every device query. last_coredump_at is a plain column
// of a subquery (not MAX, which loses the timestamp type on SQLite).
const deviceColumns = `d.id, d.key, d.device_model_id, m.code, m.name, m.firmware_version, d.active, d.config,
	d.device_name, d.device_entity_id, d.enable_ota, d.created_at, d.updated_at,
	d.rotation_state, d.secret_created_at, d.last_rotation_attempt_at, d.last_rotation_completed_at, d.rotation_excluded,
	(SELECT c.uploaded_at FROM coredumps c WHERE c.device_id = d.id ORDER BY c.uploaded_at DESC LIMIT 1),
	st.last_seen_at, st.running_version, st.running_since, st.last_reset_reason, st.last_boot_at`

func scanDevice(s scanner) (*Device, error) {
	var d Device
	var fw, name, entity sql.NullString
	var ota sql.NullBool
	var lastCoredump, secretAt, attemptAt, completedAt sql.NullTime
	var seen, since, bootAt sql.NullTime
	var running, reason sql.NullString
	if err := s.Scan(&d.ID, &d.Key, &d.DeviceModelID, &d.ModelCode, &d.ModelName, &fw, &d.Active, &d.Config,
		&name, &entity, &ota, &d.CreatedAt, &d.UpdatedAt,
		&d.RotationState, &secretAt, &attemptAt, &completedAt, &d.RotationExcluded, &lastCoredump,
		&seen, &running, &since, &reason, &bootAt); err != nil {
		return nil, err
	}
	d.LastSeenAt, d.RunningSince, d.LastBootAt = nullTime(seen), nullTime(since), nullTime(bootAt)
	d.RunningVersion, d.LastResetReason = nullStr(running), nullStr(reason)
	d.LastCoredumpAt, d.SecretCreatedAt = nullTime(lastCoredump), nullTime(secretAt)
	d.LastRotationAttemptAt, d.LastRotationCompletedAt = nullTime(attemptAt), nullTime(completedAt)
	d.ModelFirmware, d.DeviceName, d.DeviceEntityID = nullStr(fw), nullStr(name), nullStr(entity)
	if ota.Valid {
		d.EnableOTA = &ota.Bool
	}
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return &d, nil
}

func nullTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

const deviceFrom = ` FROM devices d JOIN device_models m ON m.id = d.device_model_id LEFT JOIN device_status st ON st.device_id = d.id`

// DeviceFilter narrows FindDevices and FindDevicePage (the API's list and the console's,
// one implementation); zero fields match every device.
type DeviceFilter struct {
	ModelID       int64
	RotationState string
	// RunningVersion matches the version the device last reported running.
	RunningVersion string
	// SeenBefore and SeenAfter bound last_seen_at (before: strictly earlier; after: at or
	// later); devices that never reported match neither.
	SeenBefore, SeenAfter *time.Time
	// StaleBefore matches devices not seen since then, a device that never reported
	// counting from its creation (the fleet view's stale_devices).
	StaleBefore *time.Time
	// Active is nil for every device, else only active (true) or inactive (false) ones.
	Active *bool
	// Search matches a substring of the key or (case-insensitively) the name.
	Search string
}

// where is f's WHERE clause over deviceFrom, with its arguments.
func (f DeviceFilter) where() (string, []any, error) {
	w := ` WHERE 1 = 1`
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		w += ` AND ` + strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(args)))
	}
	if f.ModelID != 0 {
		add(`d.device_model_id = ?`, f.ModelID)
	}
	if f.RotationState != "" {
		if !slices.Contains(RotationStates, f.RotationState) {
			return "", nil, apperr.Validationf("rotation_state must be one of %s", strings.Join(RotationStates, ", "))
		}
		add(`d.rotation_state = ?`, f.RotationState)
	}
	if f.RunningVersion != "" {
		if !naming.ValidVersion(f.RunningVersion) {
			return "", nil, apperr.Validationf("running_version %q is not a valid firmware version", f.RunningVersion)
		}
		add(`st.running_version = ?`, f.RunningVersion)
	}
	if f.SeenBefore != nil {
		add(`st.last_seen_at < ?`, f.SeenBefore.UTC())
	}
	if f.SeenAfter != nil {
		add(`st.last_seen_at >= ?`, f.SeenAfter.UTC())
	}
	if f.StaleBefore != nil {
		add(`COALESCE(st.last_seen_at, d.created_at) < ?`, f.StaleBefore.UTC())
	}
	if f.Active != nil {
		add(`d.active = ?`, *f.Active)
	}
	if q := strings.ToLower(strings.TrimSpace(f.Search)); q != "" {
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q)
		add(`(d.key LIKE ? ESCAPE '\' OR LOWER(d.device_name) LIKE ? ESCAPE '\')`, "%"+esc+"%")
	}
	return w, args, nil
}

// ListDevices returns devices ordered by key, optionally of one model.
func (s *Service) ListDevices(ctx context.Context, modelID *int64) ([]*Device, error) {
	var f DeviceFilter
	if modelID != nil {
		f.ModelID = *modelID
	}
	return s.FindDevices(ctx, f)
}

// FindDevices returns the devices matching f, ordered by key.
func (s *Service) FindDevices(ctx context.Context, f DeviceFilter) ([]*Device, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	q := `SELECT ` + deviceColumns + deviceFrom + where
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY d.key`, args...)
	if err != nil {
		return nil, db.Err("list devices", err)
	}
	defer rows.Close()
	var out []*Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, db.Err("list devices", err)
		}
		out = append(out, d)
	}
	return out, db.Err("list devices", rows.Err())
}

// GetDevice returns one device or NotFound.
func (s *Service) GetDevice(ctx context.Context, id int64) (*Device, error) {
	return s.getDevice(ctx, s.db, `d.id = $1`, id, fmt.Sprint(id))
}

// GetDeviceByKey returns one device by key or NotFound.
func (s *Service) GetDeviceByKey(ctx context.Context, key string) (*Device, error) {
	return s.getDevice(ctx, s.db, `d.key = $1`, key, key)
}

func (s *Service) getDevice(ctx context.Context, q querier, where string, arg any, label string) (*Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceColumns+deviceFrom+` WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("Device %s was not found", label)
	}
	if err != nil {
		return nil, db.Err("get device", err)
	}
	return d, nil
}

// configFields are the display fields copied out of a device config.
type configFields struct {
	name, entity *string
	ota          *bool
}

// checkConfig parses config, validates it against the model's schema and extracts display fields.
func checkConfig(config string, schema *string) (configFields, error) {
	var f configFields
	dec := json.NewDecoder(bytes.NewReader([]byte(config)))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil || dec.More() {
		return f, apperr.Validationf("config must be valid JSON")
	}
	if schema != nil {
		sch, err := compileSchema(*schema)
		if err != nil {
			return f, apperr.Validationf("model config_schema is invalid: %v", err)
		}
		if err := sch.Validate(doc); err != nil {
			return f, apperr.Validationf("Config validation failed: %s", oneLine(err))
		}
	}
	if obj, ok := doc.(map[string]any); ok {
		if v, ok := obj["deviceName"].(string); ok && strings.TrimSpace(v) != "" {
			f.name = &v
		}
		if v, ok := obj["deviceEntityId"].(string); ok && strings.TrimSpace(v) != "" {
			f.entity = &v
		}
		if v, ok := obj["enableOTA"].(bool); ok {
			f.ota = &v
		}
	}
	return f, nil
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// refuseLoader stops schemas from pulling remote or local files through $ref.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external $ref %q is not allowed", url)
}

func compileSchema(schema string) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(refuseLoader{})
	if err := c.AddResource("config_schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("config_schema.json")
}

var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewKey returns a random device key: 5 random bytes in lower-case base32, [a-z2-7]{8}.
func NewKey() string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return strings.ToLower(keyEncoding.EncodeToString(b))
}

// SecretHasher turns a device secret into its stored form (auth.Hash in production).
type SecretHasher func(secret string) string

// CreateDevice validates config against the model and inserts a device with a fresh key
// and secret; the secret is returned only here.
func (s *Service) CreateDevice(ctx context.Context, modelID int64, config string) (*Device, string, error) {
	m, err := s.GetModel(ctx, modelID)
	if err != nil {
		return nil, "", err
	}
	f, err := checkConfig(config, m.ConfigSchema)
	if err != nil {
		return nil, "", err
	}
	secret := NewSecret()
	// A key collision (1 in 2^40 per pair) is retried with a new key.
	for attempt := 0; attempt < 8; attempt++ {
		var id int64
		now := db.Now()
		err = s.db.Tx(ctx, func(tx *sql.Tx) error {
			if err := s.lockModelShared(ctx, tx, modelID); err != nil {
				return err
			}
			return tx.QueryRowContext(ctx, `INSERT INTO devices (key, device_model_id, config, device_name, device_entity_id,
				enable_ota, active, secret_hash, secret_created_at, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) RETURNING id`,
				NewKey(), modelID, config, f.name, f.entity, f.ota, true, s.hash(secret), now).Scan(&id)
		})
		if db.IsUniqueViolation(err) {
			continue
		}
		if err != nil {
			return nil, "", db.Err("create device", err)
		}
		d, err := s.GetDevice(ctx, id)
		return d, secret, err
	}
	return nil, "", fmt.Errorf("create device: no free key after retries: %w", err)
}

// NewSecret returns a random 256-bit device secret.
func NewSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// RotateSecret issues a new secret for a device; the old one stops working at once, so the
// rotation is attempted and completed in one step and rotation_state is OK afterwards.
func (s *Service) RotateSecret(ctx context.Context, id int64) (*Device, string, error) {
	secret := NewSecret()
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET secret_hash = $1, secret_created_at = $2, rotation_state = 'OK',
			last_rotation_attempt_at = $2, last_rotation_completed_at = $2 WHERE id = $3`, s.hash(secret), db.Now(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.NotFoundf("Device %d was not found", id)
		}
		return nil
	})
	s.forget()
	if err != nil {
		return nil, "", db.Err("rotate device secret", err)
	}
	d, err := s.GetDevice(ctx, id)
	return d, secret, err
}

// Credentials returns a device and its stored secret hash ("" when it has none) by key.
//
// It runs on every device request, so it is one indexed lookup, or none while the
// answer is cached (CacheCredentials): the returned Device has only ID, Key,
// DeviceModelID and Active set. Unknown keys are never cached.
func (s *Service) Credentials(ctx context.Context, key string) (*Device, string, error) {
	if c, ok := s.creds.Get(key); ok {
		d := c.dev
		return &d, c.hash, nil
	}
	gen := s.creds.Generation()
	var d Device
	var h sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT id, key, device_model_id, active, secret_hash FROM devices WHERE key = $1`, key).
		Scan(&d.ID, &d.Key, &d.DeviceModelID, &d.Active, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", apperr.NotFoundf("Device %s was not found", key)
	}
	if err != nil {
		return nil, "", db.Err("device credentials", err)
	}
	s.creds.Put(gen, key, cred{dev: d, hash: h.String})
	return &d, h.String, nil
}

func (s *Service) hash(secret string) string {
	if s.Hasher == nil {
		panic("devices: Service.Hasher not set")
	}
	return s.Hasher(secret)
}

// UpdateDevice replaces a device's config and active flag.
func (s *Service) UpdateDevice(ctx context.Context, id int64, config string, active bool) (*Device, error) {
	var changed bool
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		d, err := s.getDevice(ctx, tx, `d.id = $1`, id, fmt.Sprint(id))
		if err != nil {
			return err
		}
		var schema sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT config_schema FROM device_models WHERE id = $1`, d.DeviceModelID).Scan(&schema); err != nil {
			return err
		}
		f, err := checkConfig(config, nullStr(schema))
		if err != nil {
			return err
		}
		changed = d.Config != config
		_, err = tx.ExecContext(ctx, `UPDATE devices SET config = $1, device_name = $2, device_entity_id = $3, enable_ota = $4,
			active = $5, updated_at = $6 WHERE id = $7`, config, f.name, f.entity, f.ota, active, db.Now(), id)
		return err
	})
	s.forget()
	if err != nil {
		return nil, db.Err("update device", err)
	}
	d, err := s.GetDevice(ctx, id)
	if err == nil && changed {
		s.notifier.ConfigChanged(ctx, d.ClientID())
	}
	return d, err
}

// DeleteDevice removes a device; hooks queue its objects for deletion in the same transaction.
func (s *Service) DeleteDevice(ctx context.Context, id int64) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		d, err := s.getDevice(ctx, tx, `d.id = $1`, id, fmt.Sprint(id))
		if err != nil {
			return err
		}
		if err := s.deviceCleanup.DeviceDeleting(ctx, tx, d); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM devices WHERE id = $1`, id)
		return err
	})
	s.forget()
	return db.Err("delete device", err)
}

// lockModelShared keeps the model from being deleted under the transaction's new
// devices (it conflicts with DeleteModel's lock); SQLite transactions already run one at a time.
func (s *Service) lockModelShared(ctx context.Context, tx *sql.Tx, modelID int64) error {
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM device_models WHERE id = $1`+s.db.Lock(db.ForShare), modelID).Scan(&one); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return apperr.NotFoundf("DeviceModel %d was not found", modelID)
		}
		return err
	}
	return nil
}
