package devices

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/db"
)

// RotateSecretWith issues a new secret like RotateSecret and calls use with the device
// and that secret inside the same transaction, so whatever use builds from the secret
// exists exactly when the rotation committed: when use fails, the old secret stays.
func (s *Service) RotateSecretWith(ctx context.Context, id int64, use func(d *Device, secret string) error) error {
	secret := NewSecret()
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		d, err := s.getDevice(ctx, tx, `d.id = $1`, id, fmt.Sprint(id))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET secret_hash = $1, secret_created_at = $2 WHERE id = $3`, s.hash(secret), db.Now(), id); err != nil {
			return err
		}
		return use(d, secret)
	})
	s.forget()
	return db.Err("rotate device secret", err)
}

// NewDevice is a device just created with its secret, which is known only now.
type NewDevice struct {
	Device *Device
	Secret string
}

// CreateDevices inserts n devices of a model, all with config, in one transaction and
// calls use with them before commit: when anything fails, no device remains.
func (s *Service) CreateDevices(ctx context.Context, modelID int64, n int, config string, use func(devs []NewDevice) error) error {
	m, err := s.GetModel(ctx, modelID)
	if err != nil {
		return err
	}
	f, err := checkConfig(config, m.ConfigSchema)
	if err != nil {
		return err
	}
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := s.lockModelShared(ctx, tx, modelID); err != nil {
			return err
		}
		devs := make([]NewDevice, 0, n)
		now := db.Now()
		for len(devs) < n {
			secret := NewSecret()
			var id int64
			// A taken key (1 in 2^40 per pair) inserts nothing and is retried; ON CONFLICT
			// keeps PostgreSQL's transaction usable where a unique violation would abort it.
			for attempt := 0; ; attempt++ {
				err := tx.QueryRowContext(ctx, `INSERT INTO devices (key, device_model_id, config, device_name, device_entity_id,
					enable_ota, active, secret_hash, secret_created_at, created_at, updated_at)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) ON CONFLICT (key) DO NOTHING RETURNING id`,
					NewKey(), modelID, config, f.name, f.entity, f.ota, true, s.hash(secret), now).Scan(&id)
				if err == nil {
					break
				}
				if !errors.Is(err, sql.ErrNoRows) || attempt == 8 {
					return fmt.Errorf("insert device %d of %d: %w", len(devs)+1, n, err)
				}
			}
			d, err := s.getDevice(ctx, tx, `d.id = $1`, id, fmt.Sprint(id))
			if err != nil {
				return err
			}
			devs = append(devs, NewDevice{Device: d, Secret: secret})
		}
		return use(devs)
	})
	s.forget()
	return db.Err("create devices", err)
}
