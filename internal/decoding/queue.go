package decoding

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/jobs"
)

// Queue inserts decode jobs; it needs only an insert-capable River client.
type Queue struct {
	db       *db.DB
	inserter *jobs.Inserter
}

// NewQueue returns a queue over client.
func NewQueue(d *db.DB, client *jobs.Client, log *slog.Logger) (*Queue, error) {
	in, err := jobs.NewInserter(d, client, log)
	if err != nil {
		return nil, err
	}
	return &Queue{db: d, inserter: in}, nil
}

// EnqueueTx queues a decode inside tx (the transaction that inserted or reset the row).
func (q *Queue) EnqueueTx(ctx context.Context, tx *sql.Tx, coredumpID int64) error {
	if err := q.inserter.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: coredumpID}, nil); err != nil {
		return fmt.Errorf("queue decode of core dump %d: %w", coredumpID, err)
	}
	return nil
}

// Worker runs decode jobs.
type Worker struct {
	river.WorkerDefaults[jobs.DecodeArgs]
	svc *Service
}

// NewWorker returns the River worker for svc.
func NewWorker(svc *Service) *Worker { return &Worker{svc: svc} }

// Work decodes; on the last attempt a transient failure becomes a permanent ERROR so
// no dump stays PENDING forever.
func (w *Worker) Work(ctx context.Context, job *river.Job[jobs.DecodeArgs]) error {
	err := w.svc.Decode(ctx, job.Args.CoredumpID)
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		// Shutdown cut the decode off (the job's own DECODE_TIMEOUT is DeadlineExceeded):
		// not this dump's fault, so it goes back to the queue without using an attempt,
		// even on its last one, and runs as soon as a worker is up again.
		w.svc.log.Info("decode interrupted by shutdown; back to the queue", "coredump_id", job.Args.CoredumpID)
		return river.JobSnooze(0)
	}
	if job.Attempt >= job.MaxAttempts {
		kind := KindDecoderFailed
		if ctx.Err() != nil { // the job's own DECODE_TIMEOUT, not a sidecar request timing out
			kind = KindTimeout
		}
		if ferr := w.svc.Fail(context.WithoutCancel(ctx), job.Args.CoredumpID, kind,
			fmt.Sprintf("gave up after %d attempts: %v", job.Attempt, err)); ferr != nil {
			return ferr
		}
		return nil
	}
	w.svc.log.Warn("decode failed; will retry", "coredump_id", job.Args.CoredumpID, "attempt", job.Attempt, "error", err)
	return err
}

// Workers registers the decode worker.
func Workers(svc *Service) *river.Workers {
	ws := river.NewWorkers()
	river.AddWorker(ws, NewWorker(svc))
	return ws
}
