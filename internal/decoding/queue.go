package decoding

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/apperr"
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

// requeue resets the selected rows to PENDING and queues their decodes, in one transaction.
func (q *Queue) requeue(ctx context.Context, where string, args ...any) (int, error) {
	var n int
	err := q.db.Tx(ctx, func(tx *sql.Tx) error {
		ids, err := db.Int64s(ctx, tx, `SELECT c.id FROM coredumps c JOIN devices d ON d.id = c.device_id WHERE `+where, args...)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE coredumps SET parse_status = 'PENDING', parse_error = NULL, updated_at = $1 WHERE id = $2`, db.Now(), id); err != nil {
				return err
			}
			if err := q.EnqueueTx(ctx, tx, id); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, db.Err("re-queue decodes", err)
	}
	return n, nil
}

// Reparse queues one core dump of a device again (404 when it is not that device's).
func (q *Queue) Reparse(ctx context.Context, deviceID, id int64) error {
	n, err := q.requeue(ctx, `c.id = $1 AND c.device_id = $2`, id, deviceID)
	if err == nil && n == 0 {
		return apperr.NotFoundf("Coredump %d was not found", id)
	}
	return err
}

// ReparseWhere queues every core dump with the given status ("" for any) of the given
// model code ("" for all) and reports how many.
func (q *Queue) ReparseWhere(ctx context.Context, status, modelCode string) (int, error) {
	where := []string{"1 = 1"}
	var args []any
	if status != "" {
		args = append(args, strings.ToUpper(status))
		where = append(where, fmt.Sprintf("c.parse_status = $%d", len(args)))
	}
	if modelCode != "" {
		args = append(args, modelCode)
		where = append(where, fmt.Sprintf("d.device_model_id = (SELECT id FROM device_models WHERE code = $%d)", len(args)))
	}
	return q.requeue(ctx, strings.Join(where, " AND "), args...)
}

// FirmwareArrived re-queues dumps of a model that failed for want of this firmware:
// those whose SHA prefix matches the new ELF, or that reported this version.
func (q *Queue) FirmwareArrived(ctx context.Context, modelID int64, version, elfSHA string) (int, error) {
	return q.requeue(ctx, `d.device_model_id = $1 AND c.parse_status = 'ERROR' AND c.parse_error IN ('no_firmware', 'elf_mismatch')
		AND ((c.app_elf_sha_prefix IS NOT NULL AND c.app_elf_sha_prefix <> '' AND substr(CAST($2 AS TEXT), 1, length(c.app_elf_sha_prefix)) = lower(c.app_elf_sha_prefix))
		     OR ((c.app_elf_sha_prefix IS NULL OR c.app_elf_sha_prefix = '') AND c.firmware_version = $3))`, modelID, strings.ToLower(elfSHA), version)
}

// NeededVersions are the firmware versions of a model that PENDING core dumps of its
// devices still need (by reported version or ELF SHA prefix); retention keeps them.
// A dump stops needing its firmware once decoded (PARSED or ERROR), as in the older service.
func NeededVersions(ctx context.Context, tx *sql.Tx, modelID int64) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT fv.version FROM firmware_versions fv WHERE fv.device_model_id = $1 AND EXISTS (
		SELECT 1 FROM coredumps c JOIN devices d ON d.id = c.device_id
		WHERE d.device_model_id = $1 AND c.parse_status = 'PENDING' AND (c.firmware_version = fv.version OR
			(c.app_elf_sha_prefix IS NOT NULL AND c.app_elf_sha_prefix <> '' AND fv.elf_sha256 IS NOT NULL
			 AND substr(fv.elf_sha256, 1, length(c.app_elf_sha_prefix)) = lower(c.app_elf_sha_prefix))))`, modelID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out[v] = true
	}
	return out, rows.Err()
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

// SweepStale re-queues dumps that have been PENDING longer than age with no decode
// recorded: their job may have been discarded (a process dying in its last attempts, a
// failure to record the outcome). A duplicate job for a dump still being retried is
// harmless; re-queued rows get a fresh updated_at, so each is swept at most once per age.
func (q *Queue) SweepStale(ctx context.Context, age time.Duration) (int, error) {
	return q.requeue(ctx, `c.parse_status = 'PENDING' AND c.updated_at < $1`, db.Now().Add(-age))
}

// RunSweeper calls SweepStale every interval until ctx ends.
func (q *Queue) RunSweeper(ctx context.Context, interval, age time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := q.SweepStale(ctx, age); err != nil && ctx.Err() == nil {
			log.Warn("sweep of stale PENDING core dumps", "error", err)
		} else if n > 0 {
			log.Warn("re-queued core dumps left PENDING without a decode", "count", n)
		}
	}
}
