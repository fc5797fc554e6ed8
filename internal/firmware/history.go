package firmware

import (
	"context"

	"github.com/iotsupport/iotsupport/internal/db"
)

// UploadedAfter reports whether version was uploaded after than, both stored versions of
// the model (firmware history order: upload time, then id). A version no longer stored
// (or never) is after nothing. q is the database or the caller's transaction.
func (s *Service) UploadedAfter(ctx context.Context, q db.Querier, modelID int64, version, than string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM firmware_versions v, firmware_versions t
		WHERE v.device_model_id = $1 AND v.version = $2 AND t.device_model_id = $1 AND t.version = $3
		AND (v.uploaded_at > t.uploaded_at OR (v.uploaded_at = t.uploaded_at AND v.id > t.id))`, modelID, version, than).Scan(&n)
	if err != nil {
		return false, db.Classify(err)
	}
	return n > 0, nil
}
