package devices

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/db"
)

// The model's current firmware version lives in device_models.firmware_version (the older
// service's column). Package firmware decides it; these are the only statements that
// read it under the firmware change's lock and write it.

// FirmwareVersionTx returns the model's current firmware version ("" when none), inside tx.
func (s *Service) FirmwareVersionTx(ctx context.Context, tx *sql.Tx, modelID int64) (string, error) {
	var v sql.NullString
	if err := tx.QueryRowContext(ctx, `SELECT firmware_version FROM device_models WHERE id = $1`, modelID).Scan(&v); err != nil {
		return "", fmt.Errorf("current firmware of model %d: %w", modelID, err)
	}
	return v.String, nil
}

// SetFirmwareVersionTx makes version the model's current firmware, inside tx.
func (s *Service) SetFirmwareVersionTx(ctx context.Context, tx *sql.Tx, modelID int64, version string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE device_models SET firmware_version = $1, updated_at = $2 WHERE id = $3`, version, db.Now(), modelID); err != nil {
		return fmt.Errorf("set current firmware of model %d: %w", modelID, err)
	}
	return nil
}
