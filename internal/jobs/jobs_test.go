package jobs_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/jobs"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

type recordWorker struct {
	river.WorkerDefaults[jobs.DecodeArgs]
	mu   sync.Mutex
	seen map[int64]int
}

func (w *recordWorker) Work(ctx context.Context, j *river.Job[jobs.DecodeArgs]) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen[j.Args.CoredumpID]++
	return nil
}

func TestJobsInsertedInTransactionRunOnce(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		if err := jobs.Migrate(ctx, env.DB); err != nil {
			t.Fatal(err)
		}
		if p, err := jobs.Pending(ctx, env.DB); err != nil || p {
			t.Fatalf("pending after migrate: %v %v", p, err)
		}
		w := &recordWorker{seen: map[int64]int{}}
		workers := river.NewWorkers()
		river.AddWorker(workers, w)
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		c, err := jobs.New(env.DB, workers, jobs.Config{Workers: 2, Timeout: 10 * time.Second}, log)
		if err != nil {
			t.Fatal(err)
		}
		in, err := jobs.NewInserter(env.DB, c, log)
		if err != nil {
			t.Fatal(err)
		}
		// Committed → runs; rolled back → never exists. On PostgreSQL the Inserter writes
		// through the pgx connection under the database/sql transaction.
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			pgxErr := env.DB.WithPgx(tx, func(*pgx.Conn) error { return nil })
			if (env.DB.Dialect == db.Postgres) != (pgxErr == nil) {
				t.Errorf("WithPgx inside Tx on %s: %v", env.DB.Dialect, pgxErr)
			}
			return in.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: 1}, nil)
		}); err != nil {
			t.Fatal(err)
		}
		_ = env.DB.Tx(ctx, func(tx *sql.Tx) error {
			if err := in.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: 2}, nil); err != nil {
				t.Fatal(err)
			}
			return errors.New("roll back")
		})
		// A transaction not opened by Tx falls back to the database/sql client.
		tx, err := env.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.DB.WithPgx(tx, func(*pgx.Conn) error { return nil }); !errors.Is(err, db.ErrNoPgx) {
			t.Errorf("WithPgx outside Tx: %v", err)
		}
		if err := in.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: 3}, nil); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		// Both paths keep the job's insert options.
		var n int
		if err := env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM river_job WHERE kind = 'decode_coredump' AND max_attempts = 8`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("queued jobs with max_attempts 8: %d %v", n, err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Stop(ctx)
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			w.mu.Lock()
			n := w.seen[1] * w.seen[3]
			w.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(700 * time.Millisecond)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.seen[1] != 1 || w.seen[2] != 0 || w.seen[3] != 1 {
			t.Fatalf("runs: %v", w.seen)
		}
	})
}
