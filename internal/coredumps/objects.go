package coredumps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
)

// This file answers the consistency check (fsck) for the objects under coredumps/: which
// objects the rows expect, whether a row owns a key, and the repair of a row whose object
// is gone.

// ObjectPrefix is the folder of the objects this service owns.
func (s *Service) ObjectPrefix() string { return Root }

// Recorded returns how many core dump rows exist and the object each expects. Rows that
// still name a file of the older service (not yet moved by migrate-to-s3) are Pending;
// rows already marked ERROR/missing_object are Settled.
func (s *Service) Recorded(ctx context.Context) (int, []blob.Recorded, error) {
	legacy, err := HasLegacyFilename(ctx, s.db, s.db)
	if err != nil {
		return 0, nil, fmt.Errorf("read core dumps: %w", db.Classify(err))
	}
	pending := `false`
	if legacy {
		pending = `c.filename IS NOT NULL`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT c.id, d.key, c.size, COALESCE(c.sha256, ''), c.parse_status, COALESCE(c.parse_error, ''), `+
		pending+` FROM coredumps c JOIN devices d ON d.id = c.device_id`)
	if err != nil {
		return 0, nil, fmt.Errorf("read core dumps: %w", db.Classify(err))
	}
	defer rows.Close()
	var out []blob.Recorded
	for rows.Next() {
		var id int64
		var dev, status, kind string
		r := blob.Recorded{}
		if err := rows.Scan(&id, &dev, &r.Size, &r.SHA256, &status, &kind, &r.Pending); err != nil {
			return 0, nil, err
		}
		r.Key = Key(dev, id)
		r.Settled = status == StatusError && kind == KindMissingObject
		r.Missing = fmt.Sprintf("core dump %d has no object", id)
		out = append(out, r)
	}
	return len(out), out, db.Classify(rows.Err())
}

// Expects reports whether a core dump row still expects the object at key and has not
// recorded it missing (a fresh look-up before a missing object is reported).
func (s *Service) Expects(ctx context.Context, key string) (bool, error) {
	dev, id, ok := ParseKey(key)
	if !ok {
		return false, nil
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps c JOIN devices d ON d.id = c.device_id
		WHERE c.id = $1 AND d.key = $2 AND NOT (c.parse_status = $3 AND COALESCE(c.parse_error, '') = $4)`,
		id, dev, StatusError, KindMissingObject).Scan(&n)
	return n > 0, db.Classify(err)
}

// OwnedTx reports whether a core dump row owns key. It first locks the device's row for
// the rest of tx, the lock an upload takes, so an upload cannot create the owner between
// this answer and the caller's deletion of an orphan.
func (s *Service) OwnedTx(ctx context.Context, tx *sql.Tx, key string) (bool, error) {
	dev, id, ok := ParseKey(key)
	if !ok {
		return false, nil
	}
	if err := s.db.LockRow(ctx, tx, db.ForUpdate, "devices", "key", dev); err != nil {
		return false, err
	}
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps c JOIN devices d ON d.id = c.device_id
		WHERE c.id = $1 AND d.key = $2`, id, dev).Scan(&n)
	return n > 0, err
}

// RepairMissing marks the core dump whose object at key is gone ERROR/missing_object, so
// it is no longer offered for download or decoding. It changes nothing if the object is
// back (written meanwhile) or the row is gone. A core dump is never unrepairable.
func (s *Service) RepairMissing(ctx context.Context, key string) (repaired, unrepairable bool, err error) {
	dev, id, ok := ParseKey(key)
	if !ok {
		return false, false, fmt.Errorf("coredumps: %q is not a core dump key", key)
	}
	if _, err := s.store.Stat(ctx, key); err == nil {
		return false, false, nil
	} else if !errors.Is(err, blob.ErrNotFound) {
		return false, false, err
	}
	now := db.Now()
	res, err := s.db.ExecContext(ctx, `UPDATE coredumps SET parse_status = $1, parse_error = $2, parsed_output = $3,
		parsed_at = $4, updated_at = $4 WHERE id = $5 AND device_id = (SELECT id FROM devices WHERE key = $6)`,
		StatusError, KindMissingObject, "fsck: the stored core dump object is missing", now, id, dev)
	if err != nil {
		return false, false, db.Classify(err)
	}
	n, _ := res.RowsAffected()
	return n > 0, false, nil
}
