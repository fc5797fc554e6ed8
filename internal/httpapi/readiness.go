package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
)

// Checker is one part of the readiness probe: /health/readyz answers 503 when
// any checker is not ok, and shows every part under its checker's name.
type Checker struct {
	// Name is the part's key in the readyz body ("database").
	Name string
	// Check returns the part's JSON object (nil leaves the part out) and whether
	// the service can take traffic as far as this part goes.
	Check func(ctx context.Context) (part map[string]any, ok bool)
}

// DatabaseCheck reports whether the database answers and has no pending migrations.
func DatabaseCheck(d *db.DB) Checker {
	return Checker{Name: "database", Check: func(ctx context.Context) (map[string]any, bool) {
		part := map[string]any{"connected": false, "migrations_pending": nil, "ok": false}
		if err := d.PingContext(ctx); err != nil {
			part["error"] = err.Error()
			return part, false
		}
		part["connected"] = true
		pending, err := d.Pending(ctx)
		if err != nil {
			part["error"] = err.Error()
			return part, false
		}
		part["migrations_pending"] = pending
		part["ok"] = pending == 0
		return part, pending == 0
	}}
}

// StorageCheck reports whether the object store answers.
func StorageCheck(store interface{ Check(context.Context) error }) Checker {
	return Checker{Name: "storage", Check: func(ctx context.Context) (map[string]any, bool) {
		if err := store.Check(ctx); err != nil {
			return map[string]any{"ok": false, "error": err.Error()}, false
		}
		return map[string]any{"ok": true}, true
	}}
}

// OutboxCheck shows the queued object deletions (backlog reports their count and
// the oldest's time). It never fails readiness: a slow store delays deletions,
// not requests. The part is left out when the backlog cannot be read (the
// database check reports that).
func OutboxCheck(backlog func(ctx context.Context) (int, *time.Time, error)) Checker {
	return Checker{Name: "outbox", Check: func(ctx context.Context) (map[string]any, bool) {
		n, oldest, err := backlog(ctx)
		if err != nil {
			return nil, true
		}
		part := map[string]any{"backlog": n, "degraded": false}
		if oldest != nil {
			part["oldest"] = oldest.Format(time.RFC3339)
			// Deletions waiting over 10 minutes mean the store refuses them: degraded, not failing.
			part["degraded"] = time.Since(*oldest) > 10*time.Minute
		}
		return part, true
	}}
}

// readyz answers 200 when every checker is ok, 503 otherwise (and while shutting down).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.shuttingDown.Load() {
		writeJSON(w, 503, map[string]any{"status": "shutting down", "ready": false})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ready := true
	body := map[string]any{}
	for _, c := range s.deps.Ready {
		part, ok := c.Check(ctx)
		ready = ready && ok
		if part != nil {
			body[c.Name] = part
		}
	}
	body["ready"], body["status"] = ready, "ready"
	status := 200
	if !ready {
		body["status"] = "not ready"
		status = 503
	}
	writeJSON(w, status, body)
}
