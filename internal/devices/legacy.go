package devices

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/db"
)

// This file holds what adopting the older service's database changes in devices, and
// what importing its files reads.

// AdoptLegacyActiveTx moves the older service's devices.active (its revision 008: false
// meant only "left out of credential rotation") into rotation_excluded and makes every
// device active, since our active decides whether a device may authenticate at all. It
// runs in tx once, with the adoption baseline, so a device deactivated later through our
// API is never re-activated. A schema without the older column is left alone.
func AdoptLegacyActiveTx(ctx context.Context, d *db.DB, tx *sql.Tx) error {
	has, err := d.ColumnExists(ctx, tx, "devices", "active")
	if err != nil || !has {
		return err
	}
	// The same column as migration 00008 creates; added here because adoption runs first.
	has, err = d.ColumnExists(ctx, tx, "devices", "rotation_excluded")
	if err != nil {
		return err
	}
	if !has {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE devices ADD COLUMN rotation_excluded BOOLEAN NOT NULL DEFAULT false`); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `UPDATE devices SET rotation_excluded = NOT active, active = true`)
	return err
}

// IDsByKey maps every device's key to its id (the older service kept core dump files in
// one folder per device key).
func IDsByKey(ctx context.Context, q db.Querier) (map[string]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, key FROM devices`)
	if err != nil {
		return nil, db.Classify(fmt.Errorf("list devices: %w", err))
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id int64
		var key string
		if err := rows.Scan(&id, &key); err != nil {
			return nil, err
		}
		out[key] = id
	}
	return out, db.Classify(rows.Err())
}
