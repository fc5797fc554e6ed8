package db_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func bothDialects(t *testing.T, f func(t *testing.T, d *db.DB)) {
	for _, c := range []struct{ name, url string }{{"sqlite", testenv.SQLiteURL(t)}, {"postgres", testenv.PostgresURL(t)}} {
		t.Run(c.name, func(t *testing.T) {
			d, err := db.Open(context.Background(), c.url)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			f(t, d)
		})
	}
}

// A batch runs its statements in order in the transaction, on both dialects (pipelined on
// PostgreSQL), scans each row, and a failing statement fails the batch and the
// transaction.
func TestBatch(t *testing.T) {
	bothDialects(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		testenv.MustExec(t, d, `CREATE TABLE batch_t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`)
		var n, id int
		var v string
		err := d.Tx(ctx, func(tx *sql.Tx) error {
			return d.Batch(ctx, tx,
				db.Query{SQL: `INSERT INTO batch_t (id, v) VALUES ($1, $2)`, Args: []any{1, "a"}},
				db.Query{SQL: `SELECT count(*) FROM batch_t`, Scan: func(r db.Row) error { return r.Scan(&n) }},
				db.Query{SQL: `INSERT INTO batch_t (id, v) VALUES ($1, $2) RETURNING id, v`, Args: []any{2, "b"},
					Scan: func(r db.Row) error { return r.Scan(&id, &v) }},
			)
		})
		if err != nil || n != 1 || id != 2 || v != "b" {
			t.Fatalf("batch: err %v, count %d (want 1: the insert before it), returned %d %q", err, n, id, v)
		}
		err = d.Tx(ctx, func(tx *sql.Tx) error {
			return d.Batch(ctx, tx,
				db.Query{SQL: `INSERT INTO batch_t (id, v) VALUES ($1, $2)`, Args: []any{3, "c"}},
				db.Query{SQL: `INSERT INTO batch_t (id, v) VALUES ($1, $2)`, Args: []any{1, "dup"}})
		})
		if !db.IsUniqueViolation(err) {
			t.Fatalf("duplicate key in a batch: %v, want a unique violation", err)
		}
		if got := testenv.Count(t, d, "batch_t"); got != 2 {
			t.Fatalf("rows after the failed batch: %d, want 2 (its first insert rolled back)", got)
		}
		err = d.Tx(ctx, func(tx *sql.Tx) error {
			return d.Batch(ctx, tx, db.Query{SQL: `SELECT id FROM batch_t WHERE id = 99`, Scan: func(r db.Row) error { return r.Scan(&id) }})
		})
		if !errors.Is(err, sql.ErrNoRows) {
			t.Fatalf("no row: %v, want sql.ErrNoRows", err)
		}
	})
}

// LockRow holds a row against a concurrent locker until the transaction ends
// (PostgreSQL); on SQLite, where Tx admits one writer, it is a no-op.
func TestLockRow(t *testing.T) {
	bothDialects(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		testenv.MustExec(t, d, `CREATE TABLE lock_t (id INTEGER PRIMARY KEY)`)
		testenv.MustExec(t, d, `INSERT INTO lock_t (id) VALUES (1)`)
		if err := d.Tx(ctx, func(tx *sql.Tx) error { return d.LockRow(ctx, tx, db.ForUpdate, "lock_t", "id; DROP", 1) }); err == nil {
			t.Fatal("LockRow took a bad identifier")
		}
		if d.SingleWriter() {
			if d.Lock(db.ForUpdate) != "" || d.LockOf(db.ForShare, "m") != "" {
				t.Fatal("SQLite lock clauses must be empty")
			}
			if err := d.Tx(ctx, func(tx *sql.Tx) error { return d.LockRow(ctx, tx, db.ForUpdate, "lock_t", "id", 1) }); err != nil {
				t.Fatal(err)
			}
			return
		}
		held, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- d.Tx(ctx, func(tx *sql.Tx) error {
				if err := d.LockRow(ctx, tx, db.ForUpdate, "lock_t", "id", 1); err != nil {
					return err
				}
				close(held)
				<-release
				return nil
			})
		}()
		<-held
		// A second exclusive lock on the row waits: give it a deadline and see it expire.
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := d.Tx(wctx, func(tx *sql.Tx) error {
			return d.LockRow(wctx, tx, db.ForShare, "lock_t", "id", 1)
		})
		cancel()
		if err == nil {
			t.Fatal("a share lock was granted while another transaction held the row for update")
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := d.Tx(ctx, func(tx *sql.Tx) error {
			var id int
			return tx.QueryRowContext(ctx, `SELECT id FROM lock_t WHERE id = 1`+d.Lock(db.ForShare)).Scan(&id)
		}); err != nil {
			t.Fatalf("lock after release: %v", err)
		}
	})
}

func TestCatalog(t *testing.T) {
	bothDialects(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		testenv.MustExec(t, d, `CREATE TABLE cat_t (a INTEGER)`)
		for _, c := range []struct {
			table, col string
			want       bool
		}{{"cat_t", "", true}, {"cat_nope", "", false}, {"cat_t", "a", true}, {"cat_t", "b", false}} {
			var got bool
			var err error
			if c.col == "" {
				got, err = d.TableExists(ctx, d, c.table)
			} else {
				got, err = d.ColumnExists(ctx, d, c.table, c.col)
			}
			if err != nil || got != c.want {
				t.Errorf("%s.%s exists = %v, %v; want %v", c.table, c.col, got, err, c.want)
			}
		}
	})
}
