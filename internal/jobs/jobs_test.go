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

	"github.com/riverqueue/river"

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
		// Committed → runs; rolled back → never exists.
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			_, err := c.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: 1}, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		_ = env.DB.Tx(ctx, func(tx *sql.Tx) error {
			if _, err := c.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: 2}, nil); err != nil {
				t.Fatal(err)
			}
			return errors.New("roll back")
		})
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Stop(ctx)
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			w.mu.Lock()
			n := w.seen[1]
			w.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(700 * time.Millisecond)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.seen[1] != 1 || w.seen[2] != 0 {
			t.Fatalf("runs: %v", w.seen)
		}
	})
}
