// Package db opens the SQLite or PostgreSQL database, applies the embedded goose
// migrations and offers the transaction helper every service uses.
package db

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

// Dialect names the SQL flavour in use.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// ErrUnavailable marks failures to reach the database (mapped to 503).
var ErrUnavailable = errors.New("database unavailable")

//go:embed migrations
var migrationsFS embed.FS

// DB is an open database with its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
	URL     string
	// txConns maps each open PostgreSQL transaction of Tx to its connection (see WithPgx).
	txConns sync.Map
	// gate holds one token per transaction of Tx: as many as the pool's connections on
	// PostgreSQL, one on SQLite (every transaction there is a writer, see Tx).
	gate chan struct{}
	// gateWait bounds the wait at the gate (0: only the context does).
	gateWait time.Duration
	// statements counts statements run outside transactions (count.go).
	statements atomic.Int64
}

// Options tune the connection pool.
type Options struct {
	// MaxConns bounds the open connections; 0 means 20 on PostgreSQL, 8 on SQLite.
	MaxConns int
	// MustExist refuses a SQLite file that does not exist instead of creating it
	// (PostgreSQL refuses a missing database by itself).
	MustExist bool
}

// ErrNoDatabase marks a database that does not exist or holds no schema of ours.
var ErrNoDatabase = errors.New("no database")

// sqliteBusyTimeout is how long a SQLite writer waits for the write lock.
const sqliteBusyTimeout = 30 * time.Second

// Default pool sizes.
const (
	DefaultPostgresConns = 20
	DefaultSQLiteConns   = 8
)

// Open connects to DATABASE_URL (`sqlite:PATH` or `postgres://…`) with the default pool
// and checks the connection.
func Open(ctx context.Context, dsn string) (*DB, error) { return OpenWith(ctx, dsn, Options{}) }

// OpenWith is Open with pool options.
func OpenWith(ctx context.Context, dsn string, o Options) (*DB, error) {
	var (
		sqldb   *sql.DB
		dialect Dialect
		err     error
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(dsn, "sqlite:")
		q := url.Values{}
		if o.MustExist && path != ":memory:" {
			if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("%w: %s does not exist", ErrNoDatabase, absPath(path))
			}
			q.Set("mode", "rw") // and SQLite must not create it either
		} else if path != ":memory:" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, fmt.Errorf("create database directory: %w", err)
			}
		}
		// WAL lets readers run beside the single writer; immediate transactions take the
		// write lock up front so concurrent writers wait (busy_timeout) instead of failing.
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Set("_txlock", "immediate")
		q.Set("_time_format", "sqlite")
		sqldb, err = sql.Open("sqlite", "file:"+path+"?"+q.Encode())
		dialect = SQLite
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		sqldb, err = sql.Open("pgx", dsn)
		dialect = Postgres
	default:
		return nil, fmt.Errorf("unsupported DATABASE_URL scheme (want sqlite: or postgres://)")
	}
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	conns := o.MaxConns
	if dialect == Postgres {
		if conns <= 0 {
			conns = DefaultPostgresConns
		}
		// Idle connections are kept up to the open limit: under load a smaller idle pool
		// closes and reopens PostgreSQL connections (a backend process each) all the time.
		sqldb.SetMaxIdleConns(conns)
		sqldb.SetConnMaxIdleTime(5 * time.Minute)
	} else if conns <= 0 {
		conns = DefaultSQLiteConns
	}
	sqldb.SetMaxOpenConns(conns)
	// Transactions admitted at a time (Tx): one per connection; on SQLite one in all,
	// waiting as long as SQLite itself would.
	gate, gateWait := conns, time.Duration(0)
	if dialect == SQLite {
		gate, gateWait = 1, sqliteBusyTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqldb.PingContext(pctx); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("connect to database: %w: %v", ErrUnavailable, err)
	}
	return &DB{DB: sqldb, Dialect: dialect, URL: dsn, gate: make(chan struct{}, gate), gateWait: gateWait}, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// HasSchema reports whether at least one of our migrations has been applied, i.e. the
// database was made by `iotsupport migrate` or `serve` and is not just any database.
func (d *DB) HasSchema(ctx context.Context) (bool, error) {
	var exists bool
	var err error
	if d.Dialect == Postgres {
		err = d.QueryRowContext(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists)
	} else {
		var n int
		err = d.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'goose_db_version'`).Scan(&n)
		exists = n > 0
	}
	if err != nil || !exists {
		return false, Classify(err)
	}
	var n int
	if err := d.QueryRowContext(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0 AND is_applied`).Scan(&n); err != nil {
		return false, Classify(err)
	}
	return n > 0, nil
}

func (d *DB) provider() (*goose.Provider, error) {
	sub, err := fs.Sub(migrationsFS, "migrations/"+string(d.Dialect))
	if err != nil {
		return nil, err
	}
	gd := goose.DialectSQLite3
	if d.Dialect == Postgres {
		gd = goose.DialectPostgres
	}
	return goose.NewProvider(gd, d.DB, sub)
}

// MigrationStatus is one migration and whether it has been applied.
type MigrationStatus struct {
	Version int64
	Name    string
	Applied bool
}

// Status lists every embedded migration.
func (d *DB) Status(ctx context.Context) ([]MigrationStatus, error) {
	p, err := d.provider()
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		out = append(out, MigrationStatus{Version: s.Source.Version, Name: filepath.Base(s.Source.Path), Applied: s.State == goose.StateApplied})
	}
	return out, nil
}

// Pending counts migrations not yet applied.
func (d *DB) Pending(ctx context.Context) (int, error) {
	st, err := d.Status(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range st {
		if !s.Applied {
			n++
		}
	}
	return n, nil
}

// Migrate applies every pending migration, each in its own transaction, and returns how many ran.
func (d *DB) Migrate(ctx context.Context) (int, error) {
	p, err := d.provider()
	if err != nil {
		return 0, err
	}
	res, err := p.Up(ctx)
	if err != nil {
		return len(res), fmt.Errorf("apply migrations: %w", err)
	}
	return len(res), nil
}

// Tx runs fn in a transaction; it commits only when fn returns nil.
//
// Transactions start in the order they asked, once there is room: when all the pool's
// connections are busy, database/sql hands a freed one to a random waiter, so under load a
// request could lose the draw again and again (upload p99 ~15 % higher in the bench). On
// SQLite every transaction takes the write lock at BEGIN, and a writer that finds it taken
// polls for it with sleeps of up to 100 ms (busy_timeout): there the gate lets one
// transaction in at a time. A channel's blocked senders are woken first come, first served.
func (d *DB) Tx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	var expired <-chan time.Time
	if d.gateWait > 0 {
		t := time.NewTimer(d.gateWait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case d.gate <- struct{}{}:
	case <-ctx.Done():
		return Classify(fmt.Errorf("begin transaction: %w", ctx.Err()))
	case <-expired:
		return fmt.Errorf("%w: begin transaction: the database stayed locked for %s", ErrUnavailable, d.gateWait)
	}
	defer func() { <-d.gate }()
	var tx *sql.Tx
	if d.Dialect == Postgres {
		// On its own connection, so WithPgx can reach the pgx connection under tx.
		conn, err := d.Conn(ctx)
		if err != nil {
			return Classify(fmt.Errorf("begin transaction: %w", err))
		}
		defer conn.Close()
		if tx, err = conn.BeginTx(ctx, nil); err != nil {
			return Classify(fmt.Errorf("begin transaction: %w", err))
		}
		d.txConns.Store(tx, conn)
		defer d.txConns.Delete(tx)
	} else if tx, err = d.BeginTx(ctx, nil); err != nil {
		return Classify(fmt.Errorf("begin transaction: %w", err))
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return Classify(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// ErrNoPgx is returned by WithPgx for transactions it cannot reach through pgx.
var ErrNoPgx = errors.New("db: not a PostgreSQL transaction of DB.Tx")

// WithPgx runs f with the pgx connection that tx, a PostgreSQL transaction opened by Tx,
// runs on: what f executes there is part of tx. It exists for libraries that take pgx
// transactions (River's riverpgxv5 driver inserts jobs with native pgx encoding, several
// times cheaper than through database/sql). f must not begin, commit or roll back.
func (d *DB) WithPgx(tx *sql.Tx, f func(c *pgx.Conn) error) error {
	v, ok := d.txConns.Load(tx)
	if !ok {
		return ErrNoPgx
	}
	return v.(*sql.Conn).Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return ErrNoPgx
		}
		return f(sc.Conn())
	})
}

// IsUniqueViolation reports whether err is a unique-constraint failure on either dialect.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// IsDeadlock reports whether err is a transaction PostgreSQL aborted to break a deadlock
// (or a serialization failure): running the transaction again is the remedy.
func IsDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// Classify wraps connection-level failures with ErrUnavailable so callers can answer 503.
func Classify(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 = connection exception, 57P = operator intervention (shutdown), 53 = resources.
		if strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || strings.HasPrefix(pgErr.Code, "53") {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		if c := sqErr.Code() & 0xff; c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED || c == sqlite3.SQLITE_IOERR || c == sqlite3.SQLITE_FULL {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) || isNetErr(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func isNetErr(err error) bool {
	var pgc *pgconn.ConnectError
	if errors.As(err, &pgc) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "broken pipe") ||
		strings.Contains(s, "connection reset") || strings.Contains(s, "unexpected EOF") || strings.Contains(s, "driver: bad connection") ||
		// pgconn's error for a pooled connection whose socket was closed under it (an outage
		// that starts between two requests); database/sql hands such a connection to BeginTx.
		strings.Contains(s, "conn closed")
}

// Now is the database timestamp for "now": UTC, microsecond precision (what PostgreSQL keeps).
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Err is how services report a failed database operation: typed errors pass through,
// an outage becomes a 503 (apperr Unavailable), anything else is wrapped with op.
func Err(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *apperr.Error
	if errors.As(err, &ae) {
		return err
	}
	err = Classify(err)
	if errors.Is(err, ErrUnavailable) {
		return apperr.UnavailableErr("database", fmt.Errorf("%s: %w", op, err))
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Queryer is what Int64s needs: a *sql.DB, *sql.Tx or *DB.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Int64s runs a query of one integer column (usually ids) and returns its values.
func Int64s(ctx context.Context, q Queryer, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
