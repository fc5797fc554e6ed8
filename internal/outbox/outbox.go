// Package outbox deletes objects only after the transaction that removed their rows
// has committed (docs/ARCHITECTURE.md, consistency rule 2). Deletions are queued in the
// blob_deletions table inside that transaction; a worker drains it with backoff.
package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
)

// Enqueue records exact object keys for deletion, inside tx.
func Enqueue(ctx context.Context, tx *sql.Tx, keys ...string) error {
	return enqueue(ctx, tx, false, keys)
}

// EnqueueSelected is the statement that queues, in the caller's transaction, the deletion
// of every object key that keys (a SELECT of one text column named key) returns, due at once; at is
// the placeholder of the current time. For owners that remove many rows in one statement
// and queue their objects in the same round trip.
func EnqueueSelected(keys, at string) string {
	return `INSERT INTO blob_deletions (key, is_prefix, created_at, next_attempt_at) SELECT k.key, false, ` + at + `, ` + at +
		` FROM (` + keys + `) AS k`
}

// EnqueuePrefix records that every object under prefix (which must end in "/") is to be deleted.
func EnqueuePrefix(ctx context.Context, tx *sql.Tx, prefix string) error {
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("outbox: prefix %q must end with /", prefix)
	}
	return enqueue(ctx, tx, true, []string{prefix})
}

func enqueue(ctx context.Context, tx *sql.Tx, prefix bool, keys []string) error {
	now := db.Now()
	for _, k := range keys {
		if err := blob.ValidKey(strings.TrimSuffix(k, "/")); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO blob_deletions (key, is_prefix, created_at, next_attempt_at) VALUES ($1, $2, $3, $3)`,
			k, prefix, now); err != nil {
			return fmt.Errorf("queue deletion of %s: %w", k, err)
		}
	}
	return nil
}

// Settle runs, inside tx and before new objects are written under prefix, every queued
// deletion that overlaps it, so a late worker can never delete objects that a new row
// owns (e.g. a model deleted and re-created with the same code before the queue drained).
func Settle(ctx context.Context, tx *sql.Tx, store blob.Store, prefix string) error {
	// substr comparisons instead of LIKE: keys contain '_' and SQLite's LIKE ignores case.
	rows, err := tx.QueryContext(ctx, `SELECT id, key, is_prefix FROM blob_deletions
		WHERE substr(key, 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT)
		   OR (is_prefix AND substr(CAST($1 AS TEXT), 1, length(key)) = key)`, prefix)
	if err != nil {
		return fmt.Errorf("settle deletions under %s: %w", prefix, err)
	}
	var es []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.id, &e.key, &e.prefix); err != nil {
			rows.Close()
			return err
		}
		es = append(es, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, e := range es {
		if err := deleteObjects(ctx, store, e.key, e.prefix); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM blob_deletions WHERE id = $1`, e.id); err != nil {
			return err
		}
	}
	return nil
}

func deleteObjects(ctx context.Context, store blob.Store, key string, prefix bool) error {
	if prefix {
		_, err := blob.DeletePrefix(ctx, store, key)
		return err
	}
	return store.Delete(ctx, key)
}

// Worker drains the outbox.
type Worker struct {
	db       *db.DB
	store    blob.Store
	log      *slog.Logger
	Interval time.Duration
	MaxDelay time.Duration

	backlog  prometheus.GaugeFunc
	deleted  prometheus.Counter
	failures prometheus.Counter
}

// NewWorker returns a worker; reg may be nil.
func NewWorker(d *db.DB, store blob.Store, log *slog.Logger, reg prometheus.Registerer) *Worker {
	w := &Worker{db: d, store: store, log: log, Interval: 2 * time.Second, MaxDelay: 5 * time.Minute,
		deleted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_outbox_deleted_total", Help: "Queued object deletions completed."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_outbox_failures_total", Help: "Failed attempts at queued object deletions."}),
	}
	if reg != nil {
		w.backlog = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotsupport_outbox_backlog", Help: "Object deletions waiting in the outbox."},
			func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				n, _, _ := Backlog(ctx, d)
				return float64(n)
			})
		reg.MustRegister(w.backlog, w.deleted, w.failures)
	}
	return w
}

// Backlog returns how many deletions are queued and when the oldest was queued.
func Backlog(ctx context.Context, d *db.DB) (int, *time.Time, error) {
	var n int
	if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_deletions`).Scan(&n); err != nil || n == 0 {
		return 0, nil, err
	}
	// Selected as a plain column (not MIN) so SQLite's driver still parses it as a time.
	var oldest time.Time
	if err := d.QueryRowContext(ctx, `SELECT created_at FROM blob_deletions ORDER BY created_at LIMIT 1`).Scan(&oldest); err != nil {
		return n, nil, err
	}
	oldest = oldest.UTC()
	return n, &oldest, nil
}

// Run drains until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		if _, _, err := w.Drain(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("outbox drain", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Drain processes every due entry once and reports how many succeeded and failed.
func (w *Worker) Drain(ctx context.Context) (done, failed int, err error) {
	for ctx.Err() == nil {
		ok, bad, err := w.batch(ctx)
		done += ok
		failed += bad
		if err != nil {
			return done, failed, err
		}
		if ok+bad == 0 {
			return done, failed, nil
		}
		if ok == 0 {
			// A whole batch failed: the store is most likely down. The failed entries wait
			// out their backoff; the rest waits for the next round instead of each taking
			// its own timeout now.
			return done, failed, nil
		}
	}
	return done, failed, ctx.Err()
}

// batchSize bounds the entries one transaction claims: on PostgreSQL their rows stay
// locked while the objects are deleted; on SQLite the write lock is held meanwhile, so
// fewer there.
func (w *Worker) batchSize() int {
	if w.db.SingleWriter() {
		return 8
	}
	return 64
}

// deleteTimeout bounds one deletion. SQLite holds its write lock meanwhile, so a hanging
// store must not stall every writer for long there.
func (w *Worker) deleteTimeout() time.Duration {
	if w.db.SingleWriter() {
		return 5 * time.Second
	}
	return time.Minute
}

type entry struct {
	id       int64
	key      string
	prefix   bool
	attempts int
	err      error
}

// batch handles the oldest due entries in one transaction, holding their rows while the
// objects are deleted (deleteAll) so Settle in a concurrent upload waits for them.
// One commit per batch rather than per entry: under retention churn (every core dump
// upload past MAX_COREDUMPS queues one deletion) per-entry commits were a large share of
// the database's work.
func (w *Worker) batch(ctx context.Context) (done, failed int, err error) {
	lock := w.db.Lock(db.ForUpdateSkipLocked)
	err = w.db.Tx(ctx, func(tx *sql.Tx) error {
		done, failed = 0, 0
		rows, err := tx.QueryContext(ctx, `SELECT id, key, is_prefix, attempts FROM blob_deletions WHERE next_attempt_at <= $1
			ORDER BY next_attempt_at, id LIMIT $2`+lock, db.Now(), w.batchSize())
		if err != nil {
			return err
		}
		var es []*entry
		for rows.Next() {
			e := &entry{}
			if err := rows.Scan(&e.id, &e.key, &e.prefix, &e.attempts); err != nil {
				rows.Close()
				return err
			}
			es = append(es, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(es) == 0 {
			return err
		}
		w.deleteAll(ctx, es)
		var ok []any
		for _, e := range es {
			if e.err == nil {
				ok = append(ok, e.id)
				continue
			}
			delay := time.Second << min(e.attempts, 16)
			if delay > w.MaxDelay {
				delay = w.MaxDelay
			}
			msg := e.err.Error()
			if len(msg) > 1000 {
				msg = msg[:1000]
			}
			w.log.Warn("queued object deletion failed; will retry", "key", e.key, "attempt", e.attempts+1, "retry_in", delay.String(), "error", msg)
			if _, err := tx.ExecContext(ctx, `UPDATE blob_deletions SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3`,
				db.Now().Add(delay), msg, e.id); err != nil {
				return err
			}
		}
		if len(ok) > 0 {
			marks := make([]string, len(ok))
			for i := range ok {
				marks[i] = fmt.Sprintf("$%d", i+1)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM blob_deletions WHERE id IN (`+strings.Join(marks, ", ")+`)`, ok...); err != nil {
				return err
			}
		}
		done, failed = len(ok), len(es)-len(ok)
		return nil
	})
	if err != nil {
		return 0, 0, db.Classify(err)
	}
	w.deleted.Add(float64(done))
	w.failures.Add(float64(failed))
	// Failed entries are rescheduled into the future, so the loop moves on to others.
	return done, failed, nil
}

// deleteAll deletes the entries' objects and sets each entry's err: the single keys in
// one batch (one S3 request per 1000 keys instead of one per object: under retention
// churn that request overhead was most of the store's and the worker's work), each prefix
// by listing it, a few prefixes at a time.
func (w *Worker) deleteAll(ctx context.Context, es []*entry) {
	var keys []string
	var single []*entry
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, e := range es {
		if !e.prefix {
			keys, single = append(keys, e.key), append(single, e)
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, w.deleteTimeout())
			defer cancel()
			_, e.err = blob.DeletePrefix(dctx, w.store, e.key)
		}()
	}
	if len(keys) > 0 {
		dctx, cancel := context.WithTimeout(ctx, w.deleteTimeout())
		for i, err := range blob.DeleteMany(dctx, w.store, keys) {
			single[i].err = err
		}
		cancel()
	}
	wg.Wait()
}

// Cleanup removes objects written by a transaction that rolled back. It runs in a
// transaction in which owned (which should take the same lock as the writers) says
// whether a committed row now owns these keys — then they are left alone. What cannot be
// deleted now (the store being down is the usual reason the write failed) is queued
// in the same transaction, so the worker removes it once the store is back.
func Cleanup(ctx context.Context, d *db.DB, store blob.Store, log *slog.Logger, owned func(ctx context.Context, tx *sql.Tx) (bool, error), keys ...string) {
	if len(keys) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	err := d.Tx(ctx, func(tx *sql.Tx) error {
		if owned != nil {
			yes, err := owned(ctx, tx)
			if err != nil || yes {
				return err
			}
		}
		var left []string
		for _, k := range keys {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := store.Delete(dctx, k); err != nil {
				left = append(left, k)
			}
			cancel()
		}
		if len(left) > 0 {
			log.Info("queued objects of a rolled-back write for deletion", "keys", left)
			return Enqueue(ctx, tx, left...)
		}
		return nil
	})
	if err != nil {
		log.Warn("could not remove or queue objects of a rolled-back write; fsck will report them", "keys", keys, "error", err)
	}
}

// ParentPrefixes returns the prefixes a queued prefix deletion covering key could have:
// "a/" and "a/b/" for "a/b/c".
func ParentPrefixes(key string) []string {
	var out []string
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			out = append(out, key[:i+1])
		}
	}
	return out
}

// Covering returns an SQL condition on blob_deletions, aliased b, that holds for the
// queued deletions covering an object: its exact key, which keyExpr computes in SQL, or a
// prefix above it. parentsOf is that key, or any key with the same parents (the prefixes
// do not depend on the last segment); they become placeholders numbered from first, and
// their values are returned in that order.
func Covering(keyExpr, parentsOf string, first int) (string, []any) {
	parents := ParentPrefixes(parentsOf)
	cond := `b.key = ` + keyExpr
	if len(parents) == 0 {
		return cond, nil
	}
	args := make([]any, len(parents))
	in := make([]string, len(parents))
	for i, p := range parents {
		args[i] = p
		in[i] = fmt.Sprintf("$%d", first+i)
	}
	return cond + ` OR (b.is_prefix AND b.key IN (` + strings.Join(in, ", ") + `))`, args
}

// Queued reports whether a deletion covering the object key is queued (the key itself or
// a prefix above it): the cheap check before Settle, on the key index.
func Queued(ctx context.Context, tx *sql.Tx, key string) (bool, error) {
	cond, args := Covering("$1", key, 2)
	var queued bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM blob_deletions b WHERE `+cond+`)`,
		append([]any{key}, args...)...).Scan(&queued)
	if err != nil {
		return false, fmt.Errorf("check deletions of %s: %w", key, err)
	}
	return queued, nil
}
