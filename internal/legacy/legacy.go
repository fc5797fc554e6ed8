// Package legacy adopts an installation of the older Python service: it recognises its
// PostgreSQL database (Alembic revisions 005–008), records the baseline so our migrations
// run over it in place, moves its firmware ZIPs and core dump files into object storage
// (migrate-to-s3) and finally drops the legacy coredumps.filename column.
package legacy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/db"
)

// Revisions of the older service that can be adopted.
var Revisions = []string{"005", "006", "007", "008"}

// ErrNotAdopted: the database belongs to the older service and `iotsupport migrate` has not
// adopted it yet.
var ErrNotAdopted = errors.New("this database is managed by the older service (alembic_version); run `iotsupport migrate` to adopt it")

// State is what Detect found.
type State struct {
	Legacy      bool   // an alembic_version table exists
	Revision    string // its version_num
	Adopted     bool   // legacy_adoption has the baseline
	Finalized   bool   // coredumps.filename is gone
	HasFilename bool   // coredumps.filename exists
}

func tableExists(ctx context.Context, q querier, d *db.DB, name string) (bool, error) {
	var n int
	var err error
	if d.Dialect == db.Postgres {
		err = q.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`, name).Scan(&n)
	} else {
		err = q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`, name).Scan(&n)
	}
	return n > 0, err
}

func columnExists(ctx context.Context, q querier, d *db.DB, table, column string) (bool, error) {
	if d.Dialect != db.Postgres {
		var n int
		err := q.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info($1) WHERE name = $2`, table, column).Scan(&n)
		return n > 0, err
	}
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`,
		table, column).Scan(&n)
	return n > 0, err
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// Detect looks for the older service's bookkeeping.
func Detect(ctx context.Context, d *db.DB) (*State, error) {
	st := &State{}
	ok, err := tableExists(ctx, d, d, "alembic_version")
	if err != nil {
		return nil, db.Classify(fmt.Errorf("detect older schema: %w", err))
	}
	if !ok {
		return st, nil
	}
	st.Legacy = true
	if err := d.QueryRowContext(ctx, `SELECT version_num FROM alembic_version`).Scan(&st.Revision); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, db.Classify(fmt.Errorf("read alembic_version: %w", err))
	}
	if ok, err := tableExists(ctx, d, d, "legacy_adoption"); err != nil {
		return nil, db.Classify(err)
	} else if ok {
		var n int
		if err := d.QueryRowContext(ctx, `SELECT count(*) FROM legacy_adoption`).Scan(&n); err != nil {
			return nil, db.Classify(err)
		}
		st.Adopted = n > 0
	}
	if st.HasFilename, err = columnExists(ctx, d, d, "coredumps", "filename"); err != nil {
		return nil, db.Classify(err)
	}
	st.Finalized = !st.HasFilename
	return st, nil
}

// CheckAdopted refuses an older service's database that has not been adopted, so that
// `serve` never adopts silently.
func CheckAdopted(ctx context.Context, d *db.DB) error {
	st, err := Detect(ctx, d)
	if err != nil {
		return err
	}
	if st.Legacy && !st.Adopted {
		return fmt.Errorf("%w (found revision %q)", ErrNotAdopted, st.Revision)
	}
	return nil
}

// Adopt records the older service's revision as our baseline. It returns the state and
// whether it adopted now; a database that is not legacy, or already adopted, is left alone.
// Unsupported revisions are refused: nothing is changed.
func Adopt(ctx context.Context, d *db.DB) (*State, bool, error) {
	st, err := Detect(ctx, d)
	if err != nil || !st.Legacy || st.Adopted {
		return st, false, err
	}
	if d.Dialect != db.Postgres {
		return st, false, fmt.Errorf("an alembic_version table in a SQLite database: the older service is adopted on PostgreSQL only")
	}
	supported := false
	for _, r := range Revisions {
		supported = supported || r == st.Revision
	}
	if !supported {
		return st, false, fmt.Errorf("the older service's database is at revision %q; adopt from 005, 006, 007 or 008 (upgrade the older service first)", st.Revision)
	}
	need := []string{"device_models", "devices", "coredumps"}
	if st.Revision != "005" {
		need = append(need, "firmware_versions")
	}
	for _, tbl := range need {
		ok, err := tableExists(ctx, d, d, tbl)
		if err != nil {
			return st, false, db.Classify(err)
		}
		if !ok {
			return st, false, fmt.Errorf("revision %s should have table %s, but it is missing; is this the older service's database?", st.Revision, tbl)
		}
	}
	err = d.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS legacy_adoption (revision VARCHAR(32) NOT NULL, adopted_at TIMESTAMP NOT NULL, finalized_at TIMESTAMP)`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO legacy_adoption (revision, adopted_at) VALUES ($1, $2)`, st.Revision, db.Now()); err != nil {
			return err
		}
		return keepRotationFlag(ctx, tx, d)
	})
	if err != nil {
		return st, false, fmt.Errorf("record adoption baseline: %w", err)
	}
	st.Adopted = true
	return st, true, nil
}

// keepRotationFlag moves the older devices.active (revision 008: false meant only "left out
// of credential rotation") into rotation_excluded and makes every device active, since our
// active decides whether a device may authenticate at all. It runs once, with the baseline,
// so a device deactivated later through our API is never re-activated.
func keepRotationFlag(ctx context.Context, tx *sql.Tx, d *db.DB) error {
	has, err := columnExists(ctx, tx, d, "devices", "active")
	if err != nil || !has {
		return err
	}
	// The same column as migration 00008 creates; added here because adoption runs first.
	if _, err := tx.ExecContext(ctx, `ALTER TABLE devices ADD COLUMN IF NOT EXISTS rotation_excluded BOOLEAN NOT NULL DEFAULT false`); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE devices SET rotation_excluded = NOT active, active = true`)
	return err
}

// ErrUnmigrated: finalizing would lose core dumps that are still only on disk.
var ErrUnmigrated = errors.New("core dumps not yet migrated")

// Finalize drops coredumps.filename (the older service's migration 007). It refuses while a
// row still has a filename, unless discard is set: then those rows (whose files migrate-to-s3
// could not find) are deleted in the same transaction. It returns how many were discarded.
func Finalize(ctx context.Context, d *db.DB, discard bool) (int, error) {
	st, err := Detect(ctx, d)
	if err != nil {
		return 0, err
	}
	if !st.HasFilename {
		if !st.Legacy {
			return 0, nil
		}
		_, err := d.ExecContext(ctx, `UPDATE legacy_adoption SET finalized_at = $1 WHERE finalized_at IS NULL`, db.Now())
		return 0, db.Classify(err)
	}
	discarded := 0
	err = d.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `LOCK TABLE coredumps IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM coredumps WHERE filename IS NOT NULL`).Scan(&n); err != nil {
			return err
		}
		if n > 0 && !discard {
			return fmt.Errorf("%w: %d core dump row(s) still have a legacy filename; run `iotsupport migrate-to-s3` first, "+
				"or, if their files are gone, add --discard-unmigrated to delete those rows", ErrUnmigrated, n)
		}
		if n > 0 {
			res, err := tx.ExecContext(ctx, `DELETE FROM coredumps WHERE filename IS NOT NULL`)
			if err != nil {
				return err
			}
			c, _ := res.RowsAffected()
			discarded = int(c)
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE coredumps DROP COLUMN filename`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE legacy_adoption SET finalized_at = $1 WHERE finalized_at IS NULL`, db.Now())
		return err
	})
	if err != nil {
		return 0, err
	}
	return discarded, nil
}
