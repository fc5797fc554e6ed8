package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func fakeCheck(name string, part map[string]any, ok bool, calls *int) Checker {
	return Checker{Name: name, Check: func(ctx context.Context) (map[string]any, bool) {
		*calls++
		if _, has := ctx.Deadline(); !has {
			return map[string]any{"error": "no deadline"}, false
		}
		return part, ok
	}}
}

func readyzOf(s *Server) (int, string) {
	rec := httptest.NewRecorder()
	s.readyz(rec, httptest.NewRequest(http.MethodGet, "/health/readyz", nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func TestReadyzAsksEveryChecker(t *testing.T) {
	var calls int
	alpha := fakeCheck("alpha", map[string]any{"ok": true, "n": 1}, true, &calls)
	silent := fakeCheck("silent", nil, true, &calls) // a nil part is left out
	beta := fakeCheck("beta", map[string]any{"ok": false, "error": "beta is down"}, false, &calls)

	s := &Server{deps: Deps{Ready: []Checker{alpha, silent}}}
	if code, body := readyzOf(s); code != 200 || body != `{"alpha":{"n":1,"ok":true},"ready":true,"status":"ready"}` || calls != 2 {
		t.Fatalf("all ok: %d %s (%d calls)", code, body, calls)
	}

	calls = 0
	s = &Server{deps: Deps{Ready: []Checker{alpha, beta, silent}}}
	code, body := readyzOf(s)
	if code != 503 || body != `{"alpha":{"n":1,"ok":true},"beta":{"error":"beta is down","ok":false},"ready":false,"status":"not ready"}` || calls != 3 {
		t.Fatalf("one failing: %d %s (%d calls)", code, body, calls)
	}

	calls = 0
	s.SetShuttingDown()
	if code, body := readyzOf(s); code != 503 || body != `{"ready":false,"status":"shutting down"}` || calls != 0 {
		t.Fatalf("shutting down: %d %s (%d calls)", code, body, calls)
	}
}

type fakeStore struct{ err error }

func (f fakeStore) Check(context.Context) error { return f.err }

func TestStorageAndOutboxChecks(t *testing.T) {
	ctx := context.Background()
	if part, ok := StorageCheck(fakeStore{}).Check(ctx); !ok || len(part) != 1 || part["ok"] != true {
		t.Errorf("store up: %v %v", part, ok)
	}
	if part, ok := StorageCheck(fakeStore{errors.New("refused")}).Check(ctx); ok || part["ok"] != false || part["error"] != "refused" {
		t.Errorf("store down: %v %v", part, ok)
	}

	backlog := func(n int, oldest *time.Time, err error) Checker {
		return OutboxCheck(func(context.Context) (int, *time.Time, error) { return n, oldest, err })
	}
	if part, ok := backlog(0, nil, nil).Check(ctx); !ok || part["backlog"] != 0 || part["degraded"] != false || part["oldest"] != nil {
		t.Errorf("empty outbox: %v %v", part, ok)
	}
	old := time.Now().Add(-11 * time.Minute)
	if part, ok := backlog(4, &old, nil).Check(ctx); !ok || part["backlog"] != 4 || part["degraded"] != true || part["oldest"] != old.Format(time.RFC3339) {
		t.Errorf("stuck outbox (never fails readiness): %v %v", part, ok)
	}
	recent := time.Now().Add(-time.Minute)
	if part, ok := backlog(1, &recent, nil).Check(ctx); !ok || part["degraded"] != false {
		t.Errorf("recent outbox: %v %v", part, ok)
	}
	if part, ok := backlog(0, nil, errors.New("db down")).Check(ctx); !ok || part != nil {
		t.Errorf("unreadable outbox: %v %v, want the part left out", part, ok)
	}
}
