package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// This file holds every SQL difference between the dialects that domain packages meet:
// row locks, per-dialect statements, catalog lookups and the pipelined statement batch.
// Domain packages call these and never compare the dialect themselves.

// LockMode is a row lock taken for the rest of a transaction.
type LockMode string

const (
	// ForShare blocks writers and exclusive lockers of the row, not other sharers.
	ForShare LockMode = "FOR SHARE"
	// ForUpdate blocks every other locker and writer of the row.
	ForUpdate LockMode = "FOR UPDATE"
	// ForUpdateSkipLocked takes the rows no other transaction holds and skips the rest
	// (work queues).
	ForUpdateSkipLocked LockMode = "FOR UPDATE SKIP LOCKED"
)

// Lock is the clause a SELECT appends to lock the rows it reads (with a leading space).
// On SQLite it is empty: a transaction there holds the database's write lock from BEGIN
// (see Tx), so no other transaction can change what it read.
func (d *DB) Lock(m LockMode) string {
	if d.Dialect == SQLite {
		return ""
	}
	return " " + string(m)
}

// LockOf is Lock restricted to the rows of one table of a join, e.g.
// LockOf(ForUpdate, "d") + LockOf(ForShare, "m").
func (d *DB) LockOf(m LockMode, alias string) string {
	if d.Dialect == SQLite {
		return ""
	}
	return " " + string(m) + " OF " + alias
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// LockRow locks the rows of table whose column equals value for the rest of tx (no-op on
// SQLite, see Lock). A missing row is no error: callers that need the row read it after.
func (d *DB) LockRow(ctx context.Context, tx *sql.Tx, m LockMode, table, column string, value any) error {
	if !identifier.MatchString(table) || !identifier.MatchString(column) {
		return fmt.Errorf("db: LockRow: bad identifier %q.%q", table, column)
	}
	if d.Dialect == SQLite {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT 1 FROM `+table+` WHERE `+column+` = $1 `+string(m), value)
	if err != nil {
		return fmt.Errorf("lock %s: %w", table, err)
	}
	return rows.Close()
}

// Stmt is a statement whose SQL truly differs between the dialects.
type Stmt struct {
	Postgres string
	SQLite   string
}

// SQL returns the statement's text for this database.
func (d *DB) SQL(s Stmt) string {
	if d.Dialect == SQLite {
		return s.SQLite
	}
	return s.Postgres
}

// SingleWriter reports whether one transaction writes at a time (SQLite: Tx admits one),
// for callers that size their batches and timeouts by how long they hold the writer.
func (d *DB) SingleWriter() bool { return d.Dialect == SQLite }

// Server reports whether the database is a server shared by replicas (PostgreSQL), not
// an embedded file.
func (d *DB) Server() bool { return d.Dialect == Postgres }

// Querier is what reads and writes need: a *DB, *sql.DB or *sql.Tx.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// TableExists reports whether the current schema has the table.
func (d *DB) TableExists(ctx context.Context, q Querier, name string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, d.SQL(Stmt{
		Postgres: `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`,
		SQLite:   `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`,
	}), name).Scan(&n)
	return n > 0, err
}

// ColumnExists reports whether the table of the current schema has the column.
func (d *DB) ColumnExists(ctx context.Context, q Querier, table, column string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, d.SQL(Stmt{
		Postgres: `SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`,
		SQLite:   `SELECT count(*) FROM pragma_table_info($1) WHERE name = $2`,
	}), table, column).Scan(&n)
	return n > 0, err
}

// Row is one result row of a batched query.
type Row interface {
	Scan(dest ...any) error
}

// Query is one statement of a Batch. Scan, when set, reads the statement's single result
// row (sql.ErrNoRows when there is none); without it the statement is executed.
type Query struct {
	SQL  string
	Args []any
	Scan func(Row) error
}

// Batch runs the statements in tx, in order, stopping at the first error. On PostgreSQL
// they go to the server in one round trip (a pgx pipeline on tx's connection, see
// WithPgx); the statements still run, and take their snapshots, one after another. On
// SQLite, in-process, they simply run one by one.
func (d *DB) Batch(ctx context.Context, tx *sql.Tx, qs ...Query) error {
	if d.Dialect == Postgres {
		err := d.WithPgx(tx, func(c *pgx.Conn) error {
			var b pgx.Batch
			for _, q := range qs {
				b.Queue(q.SQL, q.Args...)
			}
			br := c.SendBatch(ctx, &b)
			var err error
			for _, q := range qs {
				if q.Scan != nil {
					err = q.Scan(br.QueryRow())
				} else {
					_, err = br.Exec()
				}
				if err != nil {
					break
				}
			}
			if cerr := br.Close(); err == nil {
				err = cerr
			}
			return err
		})
		if !errors.Is(err, ErrNoPgx) {
			return err
		}
	}
	for _, q := range qs {
		var err error
		if q.Scan != nil {
			err = q.Scan(tx.QueryRowContext(ctx, q.SQL, q.Args...))
		} else {
			_, err = tx.ExecContext(ctx, q.SQL, q.Args...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
