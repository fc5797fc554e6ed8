package coredumps

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
)

// WriteUploadRowsTx writes, inside tx, the rows a device's upload writes — the dump row
// (PENDING) and, when logged, its upload-log entry — by the upload's own statement, but with
// none of its rules: no validation, rate limit, retention, object or decode job. The
// benchmark's ingest baseline uses it to measure what storing an upload costs without the
// service around it. h is the dump's inspection (Inspect), done once by the caller.
func (s *Service) WriteUploadRowsTx(ctx context.Context, tx *sql.Tx, deviceID int64, chip, version string, dump []byte, h Header, logged bool) (int64, error) {
	sum := sha256.Sum256(dump)
	r := newRow{deviceID: deviceID, chip: chip, version: version, size: len(dump), header: h, sha: hex.EncodeToString(sum[:]), now: s.now()}
	c, err := scan(tx.QueryRowContext(ctx, insertRow, r.args()...))
	if err != nil {
		return 0, fmt.Errorf("insert coredump: %w", err)
	}
	if logged {
		if _, err := tx.ExecContext(ctx, `INSERT INTO coredump_uploads (device_id, uploaded_at) VALUES ($1, $2)`, deviceID, r.now); err != nil {
			return 0, fmt.Errorf("record upload: %w", err)
		}
	}
	return c.ID, nil
}

// ClearUploadLog forgets a device's uploads for the hourly limit.
func (s *Service) ClearUploadLog(ctx context.Context, deviceID int64) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM coredump_uploads WHERE device_id = $1`, deviceID)
	return err
}
