package firmware

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
)

// This file holds what `iotsupport migrate-to-s3` needs of the version history when it
// imports the older service's bundles (Import stores them).

// StoredVersion is what an import compares a bundle with.
type StoredVersion struct {
	UploadedAt time.Time
	// Artifacts is the artifact record (JSON); NULL on a row of the older service.
	Artifacts sql.NullString
}

// StoredVersions returns a model's versions by version string. It needs no Service: a
// dry run has none.
func StoredVersions(ctx context.Context, q db.Querier, modelID int64) (map[string]StoredVersion, error) {
	rows, err := q.QueryContext(ctx, `SELECT version, uploaded_at, artifacts FROM firmware_versions WHERE device_model_id = $1`, modelID)
	if err != nil {
		return nil, db.Classify(fmt.Errorf("list firmware versions: %w", err))
	}
	defer rows.Close()
	out := map[string]StoredVersion{}
	for rows.Next() {
		var v string
		var e StoredVersion
		if err := rows.Scan(&v, &e.UploadedAt, &e.Artifacts); err != nil {
			return nil, err
		}
		out[v] = e
	}
	return out, db.Classify(rows.Err())
}

// DropUnrecordedVersion deletes the older service's row of a version (one without an
// artifact record; it has no objects of ours) so that Import can store the bundle of
// that version in its place. A row with an artifact record is left alone.
func (s *Service) DropUnrecordedVersion(ctx context.Context, modelID int64, version string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM firmware_versions WHERE device_model_id = $1 AND version = $2 AND artifacts IS NULL`, modelID, version)
	return db.Classify(err)
}
