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

	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
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

// Detect looks for the older service's bookkeeping.
func Detect(ctx context.Context, d *db.DB) (*State, error) {
	st := &State{}
	ok, err := d.TableExists(ctx, d, "alembic_version")
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
	if ok, err := d.TableExists(ctx, d, "legacy_adoption"); err != nil {
		return nil, db.Classify(err)
	} else if ok {
		var n int
		if err := d.QueryRowContext(ctx, `SELECT count(*) FROM legacy_adoption`).Scan(&n); err != nil {
			return nil, db.Classify(err)
		}
		st.Adopted = n > 0
	}
	if st.HasFilename, err = coredumps.HasLegacyFilename(ctx, d, d); err != nil {
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
	if !d.Server() {
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
		ok, err := d.TableExists(ctx, d, tbl)
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
		// Devices the older service left out of rotation stay able to authenticate.
		return devices.AdoptLegacyActiveTx(ctx, d, tx)
	})
	if err != nil {
		return st, false, fmt.Errorf("record adoption baseline: %w", err)
	}
	st.Adopted = true
	return st, true, nil
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
		n, err := coredumps.LockLegacyFilesTx(ctx, d, tx)
		if err != nil {
			return err
		}
		if n > 0 && !discard {
			return fmt.Errorf("%w: %d core dump row(s) still have a legacy filename; run `iotsupport migrate-to-s3` first, "+
				"or, if their files are gone, add --discard-unmigrated to delete those rows", ErrUnmigrated, n)
		}
		if discarded, err = coredumps.DropLegacyFilenameTx(ctx, tx); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE legacy_adoption SET finalized_at = $1 WHERE finalized_at IS NULL`, db.Now())
		return err
	})
	if err != nil {
		return 0, err
	}
	return discarded, nil
}
