package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// flaky fails every Delete while down is set.
type flaky struct {
	blob.Store
	down bool
}

func (f *flaky) Delete(ctx context.Context, key string) error {
	if f.down {
		return blob.ErrUnavailable
	}
	return f.Store.Delete(ctx, key)
}

func putObj(t *testing.T, s blob.Store, key string) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader([]byte(key)), int64(len(key)), ""); err != nil {
		t.Fatal(err)
	}
}

func TestOutboxDeletesOnlyAfterCommitAndRetries(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		st := &flaky{Store: env.Store}
		for _, k := range []string{"coredumps/aaaaaaaa/1.dmp", "coredumps/aaaaaaaa/2.dmp", "firmware/m/1.0/firmware.bin", "keep/me"} {
			putObj(t, st, k)
		}
		// A rolled-back transaction queues nothing.
		_ = env.DB.Tx(ctx, func(tx *sql.Tx) error {
			if err := outbox.Enqueue(ctx, tx, "keep/me"); err != nil {
				t.Fatal(err)
			}
			return errors.New("roll back")
		})
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			if err := outbox.EnqueuePrefix(ctx, tx, "coredumps/aaaaaaaa/"); err != nil {
				return err
			}
			return outbox.Enqueue(ctx, tx, "firmware/m/1.0/firmware.bin")
		}); err != nil {
			t.Fatal(err)
		}
		w := outbox.NewWorker(env.DB, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		st.down = true
		done, failed, err := w.Drain(ctx)
		if err != nil || done != 0 || failed != 2 {
			t.Fatalf("drain while down: done=%d failed=%d err=%v", done, failed, err)
		}
		if n, _, _ := outbox.Backlog(ctx, env.DB); n != 2 {
			t.Fatalf("backlog %d", n)
		}
		// Failed entries wait for their backoff; make them due now.
		testenv.MustExec(t, env.DB, `UPDATE blob_deletions SET next_attempt_at = created_at`)
		var attempts int
		_ = env.DB.QueryRowContext(ctx, `SELECT MIN(attempts) FROM blob_deletions`).Scan(&attempts)
		if attempts != 1 {
			t.Fatalf("attempts %d", attempts)
		}
		st.down = false
		done, failed, err = w.Drain(ctx)
		if err != nil || done != 2 || failed != 0 {
			t.Fatalf("drain: done=%d failed=%d err=%v", done, failed, err)
		}
		items, _, _ := env.Store.List(ctx, "", "", 100)
		if len(items) != 1 || items[0].Key != "keep/me" {
			t.Fatalf("objects left: %+v", items)
		}
		if n, _, _ := outbox.Backlog(ctx, env.DB); n != 0 {
			t.Fatalf("backlog %d after drain", n)
		}
	})
}

func TestSettleRunsOverlappingDeletionsBeforeNewWrites(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		putObj(t, env.Store, "firmware/lamp/1.0/firmware.bin")
		putObj(t, env.Store, "firmware/lamp/2.0/firmware.bin")
		putObj(t, env.Store, "firmware/lamp_x/1.0/firmware.bin")
		// The model was deleted (whole prefix queued) and is re-created before the worker ran.
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error { return outbox.EnqueuePrefix(ctx, tx, "firmware/lamp/") }); err != nil {
			t.Fatal(err)
		}
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			if err := outbox.Settle(ctx, tx, env.Store, "firmware/lamp/1.0/"); err != nil {
				return err
			}
			putObj(t, env.Store, "firmware/lamp/1.0/firmware.bin")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		w := outbox.NewWorker(env.DB, env.Store, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if _, _, err := w.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		var keys []string
		_ = blob.Walk(ctx, env.Store, "", func(i blob.Info) error { keys = append(keys, i.Key); return nil })
		want := []string{"firmware/lamp/1.0/firmware.bin", "firmware/lamp_x/1.0/firmware.bin"}
		if len(keys) != 2 || keys[0] != want[0] || keys[1] != want[1] {
			t.Fatalf("objects %v, want %v (new upload kept, old version deleted, similar prefix untouched)", keys, want)
		}
	})
}

// countingFlaky counts Delete calls and fails them while down.
type countingFlaky struct {
	flaky
	calls atomic.Int32
}

func (c *countingFlaky) Delete(ctx context.Context, key string) error {
	c.calls.Add(1) // the worker deletes several at a time
	return c.flaky.Delete(ctx, key)
}

// TestDrainBatchesAndStopsWhenStoreIsDown: more entries than one batch drain in one round
// while the store is up; while it is down, a round ends after one wholly failed batch
// instead of trying (and timing out on) every entry, and that batch stops sending
// requests after the first failure.
func TestDrainBatchesAndStopsWhenStoreIsDown(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		st := &countingFlaky{flaky: flaky{Store: env.Store}}
		const n = 150 // more than a batch on either dialect (64, 8)
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			for i := 0; i < n; i++ {
				key := fmt.Sprintf("coredumps/bbbbbbbb/%d.dmp", i)
				putObj(t, env.Store, key)
				if err := outbox.Enqueue(ctx, tx, key); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		w := outbox.NewWorker(env.DB, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		st.down = true
		done, failed, err := w.Drain(ctx)
		if err != nil || done != 0 || failed == 0 || failed >= n {
			t.Fatalf("drain while down: done=%d failed=%d err=%v (want one failed batch)", done, failed, err)
		}
		// Within the batch, no new request starts after one failed: at most the 8 in flight.
		if calls := st.calls.Load(); calls < 1 || calls > 8 {
			t.Fatalf("%d deletes attempted for %d failures", calls, failed)
		}
		testenv.MustExec(t, env.DB, `UPDATE blob_deletions SET next_attempt_at = created_at`)
		st.down = false
		done, failed, err = w.Drain(ctx)
		if err != nil || done != n || failed != 0 {
			t.Fatalf("drain: done=%d failed=%d err=%v, want %d done", done, failed, err, n)
		}
		if items, _, _ := env.Store.List(ctx, "coredumps/", "", 1000); len(items) != 0 {
			t.Fatalf("%d objects left", len(items))
		}
	})
}

// batching records DeleteMany calls and fails the keys in fail; single Deletes are counted.
type batching struct {
	blob.Store
	fail    map[string]bool
	batches atomic.Int32
	singles atomic.Int32
}

func (b *batching) Delete(ctx context.Context, key string) error {
	b.singles.Add(1)
	return b.Store.Delete(ctx, key)
}

func (b *batching) DeleteMany(ctx context.Context, keys []string) []error {
	b.batches.Add(1)
	errs := make([]error, len(keys))
	for i, k := range keys {
		if b.fail[k] {
			errs[i] = fmt.Errorf("delete %s: %w", k, blob.ErrUnavailable)
		} else {
			errs[i] = b.Store.Delete(ctx, k)
		}
	}
	return errs
}

// TestDrainDeletesKeysInBatches: a store that deletes many objects per request gets the
// batch's single keys in one call, not a request each; a key that failed in it is retried
// alone, the others are done.
func TestDrainDeletesKeysInBatches(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		const n = 40
		st := &batching{Store: env.Store, fail: map[string]bool{"coredumps/cccccccc/3.dmp": true, "coredumps/cccccccc/30.dmp": true}}
		putObj(t, env.Store, "coredumps/dddddddd/1.dmp")
		putObj(t, env.Store, "coredumps/dddddddd/2.dmp")
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			for i := range n {
				key := fmt.Sprintf("coredumps/cccccccc/%d.dmp", i)
				putObj(t, env.Store, key)
				if err := outbox.Enqueue(ctx, tx, key); err != nil {
					return err
				}
			}
			return outbox.EnqueuePrefix(ctx, tx, "coredumps/dddddddd/")
		}); err != nil {
			t.Fatal(err)
		}
		w := outbox.NewWorker(env.DB, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		done, failed, err := w.Drain(ctx)
		if err != nil || done != n-1 || failed != 2 {
			t.Fatalf("drain: done=%d failed=%d err=%v, want %d done and 2 failed", done, failed, err, n-1)
		}
		batch := 64
		if env.DB.Dialect != db.Postgres {
			batch = 8
		}
		// One call per batch of entries, plus one for the prefix's listed objects.
		if got, most := int(st.batches.Load()), (n+1+batch-1)/batch+1; got > most || st.singles.Load() != 0 {
			t.Fatalf("%d DeleteMany calls (at most %d) and %d single deletes (want none)", got, most, st.singles.Load())
		}
		items, _, _ := env.Store.List(ctx, "coredumps/", "", 1000)
		var left []string
		for _, it := range items {
			left = append(left, it.Key)
		}
		if !slices.Equal(left, []string{"coredumps/cccccccc/3.dmp", "coredumps/cccccccc/30.dmp"}) {
			t.Fatalf("objects left: %v", left)
		}
		var retried int
		_ = env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_deletions WHERE attempts = 1 AND last_error IS NOT NULL`).Scan(&retried)
		if n, _, _ := outbox.Backlog(ctx, env.DB); n != 2 || retried != 2 {
			t.Fatalf("backlog %d, %d marked for retry; want the 2 failed keys", n, retried)
		}
	})
}
