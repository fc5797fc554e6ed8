package console

import (
	"context"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/iotsupport/iotsupport/internal/auth"
)

// audit records every write made through the console in the audit log, like the API's.
func (c *Console) audit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || c.d.Audit == nil {
			next.ServeHTTP(w, r)
			return
		}
		// A write that has arrived runs to its end even if the browser goes away.
		r = r.WithContext(context.WithoutCancel(r.Context()))
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		id := auth.FromContext(r.Context())
		if id == nil {
			if s := session(r); s != nil {
				id = s.Identity
			}
		}
		if id == nil {
			return
		}
		route := ""
		if rc := chi.RouteContext(r.Context()); rc != nil {
			route = rc.RoutePattern()
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := c.d.Audit.Record(ctx, auth.AuditEntry{ActorKind: string(id.Kind), Actor: id.Name, Method: r.Method,
			Path: r.URL.Path, Route: route, Status: status, RequestID: w.Header().Get("X-Request-ID")}); err != nil {
			c.d.Log.Error("audit log write failed", "error", err)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
