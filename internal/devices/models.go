// Package devices owns device models and devices: their validation, key generation,
// config schemas and the transactions that change them.
package devices

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/naming"
	"github.com/iotsupport/iotsupport/internal/ttlcache"
)

// Model is a device model with its derived fields.
type Model struct {
	ID              int64
	Code            string
	Name            string
	FirmwareVersion *string
	ConfigSchema    *string
	DeviceCount     int
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// ModelInput holds the fields of a create or update; nil means "leave unchanged".
type ModelInput struct {
	Code         string
	Name         *string
	ConfigSchema *string
}

// ModelCleanup removes, inside a model deletion's transaction, what other owners keep
// of the model (firmware.ModelObjects: its versions and their objects).
type ModelCleanup interface {
	ModelDeleting(ctx context.Context, tx *sql.Tx, m *Model) error
}

// DeviceCleanup removes, inside a device deletion's transaction, what other owners keep
// of the device (coredumps.DeviceObjects: its core dump objects).
type DeviceCleanup interface {
	DeviceDeleting(ctx context.Context, tx *sql.Tx, d *Device) error
}

// ConfigNotifier tells a device that its config changed, after the change committed
// (notify.Notifier over MQTT).
type ConfigNotifier interface {
	ConfigChanged(ctx context.Context, clientID string)
}

// Service implements device-model and device operations: it is the only writer of the
// device_models and devices tables.
type Service struct {
	db            *db.DB
	modelCleanup  ModelCleanup
	deviceCleanup DeviceCleanup
	notifier      ConfigNotifier
	// Hasher stores device secrets; required.
	Hasher SecretHasher
	// creds answers device authentication from memory for a few seconds (CacheCredentials).
	creds *ttlcache.Cache[string, cred]
}

type cred struct {
	dev  Device
	hash string
}

// CacheCredentials lets Credentials answer from memory for ttl (0: never). Every write
// through this Service clears the cache, so only other replicas' changes wait for ttl.
func (s *Service) CacheCredentials(ttl time.Duration) {
	s.creds = ttlcache.New[string, cred](ttl, 100_000)
}

// forget drops cached credentials after a committed change.
func (s *Service) forget() { s.creds.Clear() }

// NewService returns a Service over d. Every argument is required.
func NewService(d *db.DB, hasher SecretHasher, models ModelCleanup, devices DeviceCleanup, notifier ConfigNotifier) *Service {
	if hasher == nil || models == nil || devices == nil || notifier == nil {
		panic("devices.NewService: hasher, model and device cleanup and notifier are required")
	}
	return &Service{db: d, Hasher: hasher, modelCleanup: models, deviceCleanup: devices, notifier: notifier}
}

const modelColumns = `m.id, m.code, m.name, m.firmware_version, m.config_schema, m.created_at, m.updated_at,
	(SELECT COUNT(*) FROM devices d WHERE d.device_model_id = m.id)`

type scanner interface{ Scan(...any) error }

func scanModel(s scanner) (*Model, error) {
	var m Model
	var fw, schema sql.NullString
	if err := s.Scan(&m.ID, &m.Code, &m.Name, &fw, &schema, &m.CreatedAt, &m.UpdatedAt, &m.DeviceCount); err != nil {
		return nil, err
	}
	m.FirmwareVersion = nullStr(fw)
	m.ConfigSchema = nullStr(schema)
	m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
	return &m, nil
}

func nullStr(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

// ListModels returns every model ordered by code.
func (s *Service) ListModels(ctx context.Context) ([]*Model, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+modelColumns+` FROM device_models m ORDER BY m.code`)
	if err != nil {
		return nil, db.Err("list device models", err)
	}
	defer rows.Close()
	var out []*Model
	for rows.Next() {
		m, err := scanModel(rows)
		if err != nil {
			return nil, db.Err("list device models", err)
		}
		out = append(out, m)
	}
	return out, db.Err("list device models", rows.Err())
}

// GetModel returns one model or a NotFound error.
func (s *Service) GetModel(ctx context.Context, id int64) (*Model, error) {
	return s.getModel(ctx, s.db, `m.id = $1`, id, fmt.Sprint(id))
}

// GetModelByCode returns one model by its code.
func (s *Service) GetModelByCode(ctx context.Context, code string) (*Model, error) {
	return s.getModel(ctx, s.db, `m.code = $1`, code, code)
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func (s *Service) getModel(ctx context.Context, q querier, where string, arg any, label string) (*Model, error) {
	m, err := scanModel(q.QueryRowContext(ctx, `SELECT `+modelColumns+` FROM device_models m WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("DeviceModel %s was not found", label)
	}
	if err != nil {
		return nil, db.Err("get device model", err)
	}
	return m, nil
}

func validateName(name string) error {
	n := strings.TrimSpace(name)
	if n == "" || len(name) > 255 {
		return apperr.Validationf("name must be 1-255 characters and not blank")
	}
	return nil
}

// CreateModel validates and inserts a model; a duplicate code is RECORD_EXISTS.
func (s *Service) CreateModel(ctx context.Context, in ModelInput) (*Model, error) {
	if !naming.ValidModelCode(in.Code) {
		return nil, apperr.Validationf("code must match ^[a-z0-9_]+$ and be 1-50 characters")
	}
	if in.Name == nil {
		return nil, apperr.Validationf("name is required")
	}
	if err := validateName(*in.Name); err != nil {
		return nil, err
	}
	schema, err := normalizeSchema(in.ConfigSchema)
	if err != nil {
		return nil, err
	}
	now := db.Now()
	var id int64
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO device_models (code, name, config_schema, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $4) RETURNING id`, in.Code, strings.TrimSpace(*in.Name), schema, now).Scan(&id)
	})
	if db.IsUniqueViolation(err) {
		return nil, apperr.Existsf("DeviceModel for %s already exists", in.Code)
	}
	if err != nil {
		return nil, db.Err("create device model", err)
	}
	return s.GetModel(ctx, id)
}

// UpdateModel changes name and/or config schema; nil fields stay as they are.
func (s *Service) UpdateModel(ctx context.Context, id int64, in ModelInput) (*Model, error) {
	if in.Name != nil {
		if err := validateName(*in.Name); err != nil {
			return nil, err
		}
	}
	schema, err := normalizeSchema(in.ConfigSchema)
	if err != nil {
		return nil, err
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.getModel(ctx, tx, `m.id = $1`, id, fmt.Sprint(id)); err != nil {
			return err
		}
		if in.Name != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE device_models SET name = $1 WHERE id = $2`, strings.TrimSpace(*in.Name), id); err != nil {
				return err
			}
		}
		if schema != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE device_models SET config_schema = $1 WHERE id = $2`, *schema, id); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE device_models SET updated_at = $1 WHERE id = $2`, db.Now(), id)
		return err
	})
	if err != nil {
		return nil, db.Err("update device model", err)
	}
	return s.GetModel(ctx, id)
}

// DeleteModel removes a model that has no devices.
func (s *Service) DeleteModel(ctx context.Context, id int64) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		// Lock the model so a device created concurrently cannot be cascaded away unseen.
		if err := s.db.LockRow(ctx, tx, db.ForUpdate, "device_models", "id", id); err != nil {
			return err
		}
		m, err := s.getModel(ctx, tx, `m.id = $1`, id, fmt.Sprint(id))
		if err != nil {
			return err
		}
		if m.DeviceCount > 0 {
			return apperr.InvalidOperationf("Cannot delete device model because model has %d associated device(s)", m.DeviceCount)
		}
		if err := s.modelCleanup.ModelDeleting(ctx, tx, m); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM device_models WHERE id = $1`, id)
		return err
	})
	s.forget()
	return db.Err("delete device model", err)
}

// normalizeSchema checks that a config schema is a compilable JSON Schema; blank means none.
func normalizeSchema(schema *string) (*string, error) {
	if schema == nil || strings.TrimSpace(*schema) == "" {
		return nil, nil
	}
	if !json.Valid([]byte(*schema)) {
		return nil, apperr.Validationf("config_schema must be valid JSON")
	}
	if _, err := compileSchema(*schema); err != nil {
		return nil, apperr.Validationf("config_schema is not a valid JSON Schema: %v", err)
	}
	return schema, nil
}
