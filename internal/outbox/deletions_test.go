package outbox_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/outbox"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// Deletions lists what is queued, with the time it was queued, and Covers applies the
// queue's rule: an exact key, or any key under a prefix.
func TestDeletionsListsTheQueueAndCovers(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		if ds, err := outbox.Deletions(ctx, env.DB); err != nil || len(ds) != 0 {
			t.Fatalf("empty queue: %+v %v", ds, err)
		}
		before := time.Now().UTC().Add(-time.Second)
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error {
			if err := outbox.Enqueue(ctx, tx, "firmware/m/1.0/firmware.bin"); err != nil {
				return err
			}
			return outbox.EnqueuePrefix(ctx, tx, "coredumps/aaaaaaaa/")
		}); err != nil {
			t.Fatal(err)
		}
		ds, err := outbox.Deletions(ctx, env.DB)
		if err != nil || len(ds) != 2 {
			t.Fatalf("queue: %+v %v", ds, err)
		}
		if ds[0].Key != "firmware/m/1.0/firmware.bin" || ds[0].Prefix || ds[1].Key != "coredumps/aaaaaaaa/" || !ds[1].Prefix {
			t.Fatalf("queue entries: %+v", ds)
		}
		for _, d := range ds {
			if d.QueuedAt.Before(before) || d.QueuedAt.After(time.Now().UTC().Add(time.Second)) || d.QueuedAt.Location() != time.UTC {
				t.Fatalf("queued at %v (now %v)", d.QueuedAt, time.Now().UTC())
			}
		}
		for key, want := range map[string][2]bool{
			"firmware/m/1.0/firmware.bin": {true, false},
			"firmware/m/1.0/firmware.elf": {false, false},
			"coredumps/aaaaaaaa/7.dmp":    {false, true},
			"coredumps/aaaaaaaa":          {false, false},
			"coredumps/bbbbbbbb/7.dmp":    {false, false},
		} {
			if got := [2]bool{ds[0].Covers(key), ds[1].Covers(key)}; got != want {
				t.Errorf("Covers(%q) = %v, want %v", key, got, want)
			}
		}
		// Drained entries are no longer listed.
		w := outbox.NewWorker(env.DB, env.Store, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if _, _, err := w.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if ds, err := outbox.Deletions(ctx, env.DB); err != nil || len(ds) != 0 {
			t.Fatalf("after drain: %+v %v", ds, err)
		}
	})
}
