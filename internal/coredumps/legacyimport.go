package coredumps

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/db"
)

// This file holds what `iotsupport migrate-to-s3` and `migrate --finalize-legacy` change
// in coredumps: the older service's filename column, which names a file on its disk
// instead of an object under Key.

// HasLegacyFilename reports whether coredumps still has the older service's filename
// column (an adopted database before finalizing).
func HasLegacyFilename(ctx context.Context, d *db.DB, q db.Querier) (bool, error) {
	return d.ColumnExists(ctx, q, "coredumps", "filename")
}

// LegacyFile is a core dump row that still names a file of the older service.
type LegacyFile struct {
	ID        int64
	DeviceID  int64
	DeviceKey string
	Filename  string
	Size      int64
}

// LegacyFiles lists the rows that still name a file, by device key and file name. Call
// it only while HasLegacyFilename.
func LegacyFiles(ctx context.Context, q db.Querier) ([]LegacyFile, error) {
	rows, err := q.QueryContext(ctx, `SELECT c.id, c.device_id, d.key, c.filename, c.size FROM coredumps c JOIN devices d ON d.id = c.device_id
		WHERE c.filename IS NOT NULL ORDER BY d.key, c.filename`)
	if err != nil {
		return nil, db.Classify(fmt.Errorf("list legacy core dumps: %w", err))
	}
	defer rows.Close()
	var out []LegacyFile
	for rows.Next() {
		var f LegacyFile
		if err := rows.Scan(&f.ID, &f.DeviceID, &f.DeviceKey, &f.Filename, &f.Size); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, db.Classify(rows.Err())
}

// LegacyFileMovedTx records, in tx, that the row's file is now its object under Key: the
// row no longer names the file. It fails if the row changed since LegacyFiles listed it.
func LegacyFileMovedTx(ctx context.Context, tx *sql.Tx, id int64, filename string) error {
	res, err := tx.ExecContext(ctx, `UPDATE coredumps SET filename = NULL WHERE id = $1 AND filename = $2`, id, filename)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("core dump %d changed during the migration", id)
	}
	return nil
}

// LockLegacyFilesTx holds off every other writer of coredumps for the rest of tx (on
// SQLite the transaction already excludes them) and counts the rows that still name a
// file, so that the count stays true until DropLegacyFilenameTx.
func LockLegacyFilesTx(ctx context.Context, d *db.DB, tx *sql.Tx) (int, error) {
	if lock := d.SQL(db.Stmt{Postgres: `LOCK TABLE coredumps IN EXCLUSIVE MODE`}); lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return 0, err
		}
	}
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM coredumps WHERE filename IS NOT NULL`).Scan(&n)
	return n, err
}

// DropLegacyFilenameTx deletes the rows that still name a file (their files could not be
// moved; they have no object) and drops the filename column, in tx. It returns how many
// rows it deleted.
func DropLegacyFilenameTx(ctx context.Context, tx *sql.Tx) (int, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM coredumps WHERE filename IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	if _, err := tx.ExecContext(ctx, `ALTER TABLE coredumps DROP COLUMN filename`); err != nil {
		return 0, err
	}
	return int(n), nil
}
