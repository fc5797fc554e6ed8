package auth_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func insertAudit(t *testing.T, d *db.DB, at time.Time, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := d.ExecContext(context.Background(), `INSERT INTO audit_log (at, actor_kind, actor, method, path, route, status, request_id)
			VALUES ($1, 'token', 'test', 'POST', '/api/x', '/api/x', 201, 'r')`, at); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditPruneDeletesOnlyOldEntriesInBatches: entries older than the cut-off go, in
// batches until none is left; newer ones stay.
func TestAuditPruneDeletesOnlyOldEntriesInBatches(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		a := auth.NewAudit(env.DB)
		now := db.Now()
		insertAudit(t, env.DB, now.Add(-400*24*time.Hour), 25)
		insertAudit(t, env.DB, now.Add(-300*24*time.Hour), 3)
		insertAudit(t, env.DB, now, 2)
		n, err := a.Prune(context.Background(), now.Add(-365*24*time.Hour), 10)
		if err != nil {
			t.Fatal(err)
		}
		if n != 25 {
			t.Fatalf("pruned %d entries, want 25", n)
		}
		if left := testenv.Count(t, env.DB, "audit_log"); left != 5 {
			t.Fatalf("%d entries left, want 5", left)
		}
	})
}

// TestAuditPrunerRuns: the background pruner applies the retention without being asked.
func TestAuditPrunerRuns(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		insertAudit(t, env.DB, db.Now().Add(-40*24*time.Hour), 3)
		insertAudit(t, env.DB, db.Now(), 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			auth.NewAudit(env.DB).RunPruner(ctx, 30*24*time.Hour, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
			close(done)
		}()
		deadline := time.Now().Add(time.Minute)
		for testenv.Count(t, env.DB, "audit_log") != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("pruner left %d entries, want 1", testenv.Count(t, env.DB, "audit_log"))
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
	})
}
