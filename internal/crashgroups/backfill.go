package crashgroups

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

// Dumps is what the backfill needs of the core dump owner (coredumps.Service): decoded
// dumps by id, locked in the caller's transaction so a decode recording the same dump waits.
type Dumps interface {
	DecodedAfter(ctx context.Context, q db.Querier, afterID int64, limit int) ([]coredumps.Decoded, error)
}

// backfillArgs is the one-off job grouping every dump decoded before grouping existed, or
// under an older GroupingVersion.
type backfillArgs struct {
	GroupingVersion int `json:"grouping_version"`
}

func (backfillArgs) Kind() string { return "crash_group_backfill" }

// EnsureBackfill queues the backfill of this GroupingVersion unless it was queued before
// (by this process or another replica): its row and its job are inserted together.
func (s *Service) EnsureBackfill(ctx context.Context) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO crash_group_backfill (grouping_version, after_id, started_at) VALUES ($1, 0, $2)
			ON CONFLICT (grouping_version) DO NOTHING`, GroupingVersion, s.now())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return s.jobs.InsertTx(ctx, tx, backfillArgs{GroupingVersion: GroupingVersion}, &river.InsertOpts{MaxAttempts: 25})
	})
	return db.Err("queue crash group backfill", err)
}

// BackfillStep groups the next batch of decoded dumps after the stored cursor and moves
// the cursor in the same transaction, so an interrupted backfill resumes where it stopped.
// It reports whether the backfill is finished and how many dumps it looked at.
func (s *Service) BackfillStep(ctx context.Context) (done bool, n int, err error) {
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var after int64
		var doneAt sql.NullTime
		err := tx.QueryRowContext(ctx, `SELECT after_id, done_at FROM crash_group_backfill WHERE grouping_version = $1`+s.db.Lock(db.ForUpdate),
			GroupingVersion).Scan(&after, &doneAt)
		if err == sql.ErrNoRows || (err == nil && doneAt.Valid) {
			done = true
			return nil
		}
		if err != nil {
			return err
		}
		batch, err := s.dumps.DecodedAfter(ctx, tx, after, s.opts.BackfillBatch)
		if err != nil {
			return err
		}
		for _, d := range batch {
			var rep *espcore.Report
			if json.Unmarshal(d.Report, &rep) != nil {
				rep = nil // no report to group by
			}
			// No events: these crashes are history, not news.
			if _, err := s.assign(ctx, tx, Dump{ID: d.ID, DeviceID: d.DeviceID, ModelID: d.ModelID, ModelCode: d.ModelCode,
				Version: d.Version, UploadedAt: d.UploadedAt}, rep, false); err != nil {
				return fmt.Errorf("core dump %d: %w", d.ID, err)
			}
			after = d.ID
		}
		n = len(batch)
		done = n < s.opts.BackfillBatch
		var finished any
		if done {
			finished = s.now()
		}
		_, err = tx.ExecContext(ctx, `UPDATE crash_group_backfill SET after_id = $2, done_at = $3 WHERE grouping_version = $1`,
			GroupingVersion, after, finished)
		return err
	})
	if err != nil {
		return false, 0, db.Err("crash group backfill", err)
	}
	return done, n, nil
}

type backfillWorker struct {
	river.WorkerDefaults[backfillArgs]
	s *Service
}

// backfillSlice is how long one run of the job works before it lets itself be run again:
// shorter than any job timeout, so progress is never lost to one.
const backfillSlice = 20 * time.Second

// Timeout lets a run use its whole slice whatever DECODE_TIMEOUT (every job's default) is.
func (w *backfillWorker) Timeout(*river.Job[backfillArgs]) time.Duration {
	return backfillSlice + time.Minute
}

func (w *backfillWorker) Work(ctx context.Context, job *river.Job[backfillArgs]) error {
	if job.Args.GroupingVersion != GroupingVersion {
		return nil // queued by an older release; this one queues its own
	}
	start := time.Now()
	total := 0
	for time.Since(start) < backfillSlice {
		done, n, err := w.s.BackfillStep(ctx)
		if err != nil {
			return err
		}
		total += n
		if done {
			w.s.log.Info("crash group backfill finished", "grouping_version", GroupingVersion, "dumps", total)
			return nil
		}
	}
	w.s.log.Info("crash group backfill continues", "grouping_version", GroupingVersion, "dumps", total)
	return river.JobSnooze(0)
}
