// Package jobs runs the durable background work (core dump decoding) on River, with
// the job tables in the service's own database. Jobs are inserted in the same
// transaction as the rows they concern, so a committed row always has its job.
//
// Both dialects run River through database/sql (riversqlite, riverdatabasesql) so
// services can insert jobs with the *sql.Tx they already hold; on PostgreSQL the client
// polls instead of using LISTEN/NOTIFY, and inserts go through riverpgxv5 on the
// transaction's connection (Inserter).
package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/iotsupport/iotsupport/internal/db"
)

// Client is a River client over database/sql.
type Client = river.Client[*sql.Tx]

// DecodeArgs asks for one core dump to be decoded.
type DecodeArgs struct {
	CoredumpID int64 `json:"coredump_id"`
}

// Kind names the job type in the queue.
func (DecodeArgs) Kind() string { return "decode_coredump" }

// InsertOpts: no uniqueness. A job that just finished can still count as running for
// a moment, and a re-queue skipped as its duplicate would leave the dump PENDING for
// good; decoding twice is harmless (the last result wins).
func (DecodeArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 8}
}

func driver(d *db.DB) riverdriver.Driver[*sql.Tx] {
	if d.Dialect == db.SQLite {
		return riversqlite.New(d.DB)
	}
	return riverdatabasesql.New(d.DB)
}

// Migrate creates or upgrades River's tables.
func Migrate(ctx context.Context, d *db.DB) error {
	m, err := rivermigrate.New(driver(d), nil)
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	return nil
}

// Pending reports whether River's tables need migrating.
func Pending(ctx context.Context, d *db.DB) (bool, error) {
	m, err := rivermigrate.New(driver(d), nil)
	if err != nil {
		return false, err
	}
	res, err := m.Migrate(ctx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{DryRun: true})
	if err != nil {
		return false, err
	}
	return len(res.Versions) > 0, nil
}

// Config sizes the workers.
type Config struct {
	Workers int           // concurrent decodes; 0 makes an insert-only client
	Timeout time.Duration // per job
	// Queues are further queues by name and their concurrency (when Workers > 0).
	Queues map[string]int
}

// New returns a client; workers may be nil for an insert-only client.
func New(d *db.DB, workers *river.Workers, cfg Config, log *slog.Logger) (*Client, error) {
	rc := &river.Config{
		Logger:               log,
		JobTimeout:           cfg.Timeout,
		FetchPollInterval:    500 * time.Millisecond,
		FetchCooldown:        50 * time.Millisecond,
		RescueStuckJobsAfter: cfg.Timeout + 15*time.Second, // a job running past its timeout belongs to a dead process
		PollOnly:             true,
		RetryPolicy:          &backoff{},
	}
	if workers != nil && cfg.Workers > 0 {
		rc.Workers = workers
		rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}}
		for name, n := range cfg.Queues {
			rc.Queues[name] = river.QueueConfig{MaxWorkers: n}
		}
	}
	c, err := river.NewClient(driver(d), rc)
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}

// backoff retries quickly at first (a sidecar restarting, a short store outage) and
// then exponentially up to ten minutes.
type backoff struct{}

func (backoff) NextRetry(job *rivertype.JobRow) time.Time {
	d := time.Second << min(job.Attempt, 10)
	if d > 10*time.Minute {
		d = 10 * time.Minute
	}
	return time.Now().Add(d)
}

// Inserter inserts jobs inside the caller's database/sql transaction. On PostgreSQL it
// goes through River's riverpgxv5 driver on the transaction's own pgx connection
// (db.WithPgx): riverdatabasesql passes its batch-insert arrays as lib/pq values, which
// pgx encodes through a slow fallback, and that insert was the largest single cost of a
// core dump upload. SQLite, and transactions not opened by db.Tx, use the database/sql client.
type Inserter struct {
	db     *db.DB
	client *Client
	pgx    *river.Client[pgx.Tx]
}

// NewInserter returns an Inserter over client.
func NewInserter(d *db.DB, client *Client, log *slog.Logger) (*Inserter, error) {
	in := &Inserter{db: d, client: client}
	if d.Dialect == db.Postgres {
		// Insert-only: no pool, never started; River's own work stays with client.
		c, err := river.NewClient(riverpgxv5.New(nil), &river.Config{Logger: log, PollOnly: true})
		if err != nil {
			return nil, fmt.Errorf("river insert client: %w", err)
		}
		in.pgx = c
	}
	return in, nil
}

// InsertTx inserts one job in tx. opts, when not nil, overrides the args' own insert
// options field by field, as River's InsertTx does.
func (in *Inserter) InsertTx(ctx context.Context, tx *sql.Tx, args river.JobArgs, opts *river.InsertOpts) error {
	if in.pgx != nil {
		err := in.db.WithPgx(tx, func(c *pgx.Conn) error {
			_, err := in.pgx.InsertTx(ctx, connTx{c}, args, opts)
			return err
		})
		if !errors.Is(err, db.ErrNoPgx) {
			return err
		}
	}
	_, err := in.client.InsertTx(ctx, tx, args, opts)
	return err
}

// connTx presents the connection of an open transaction as a pgx.Tx; the transaction
// belongs to database/sql, so it cannot be ended or nested here.
type connTx struct{ c *pgx.Conn }

var errConnTx = errors.New("jobs: the transaction belongs to database/sql")

func (t connTx) Begin(context.Context) (pgx.Tx, error) { return nil, errConnTx }
func (t connTx) Commit(context.Context) error          { return errConnTx }
func (t connTx) Rollback(context.Context) error        { return errConnTx }
func (t connTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	return t.c.CopyFrom(ctx, table, cols, src)
}
func (t connTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.c.SendBatch(ctx, b)
}
func (t connTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} } // unused by River
func (t connTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.c.Prepare(ctx, name, sql)
}
func (t connTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.c.Exec(ctx, sql, args...)
}
func (t connTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.c.Query(ctx, sql, args...)
}
func (t connTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.c.QueryRow(ctx, sql, args...)
}
func (t connTx) Conn() *pgx.Conn { return t.c }
