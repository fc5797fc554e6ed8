package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/iotsupport/iotsupport/internal/auth"
)

// authenticate enforces auth.Policy on every request before routing, so no route can
// be reached without the identity its path requires, and records writes in the audit log.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := auth.Policy(r.Method, r.URL.Path)
		if s.deps.InsecureDev {
			loggerFrom(r.Context()).Warn("AUTH_MODE=insecure-dev: authentication is disabled; never expose this server")
		}
		switch need {
		case auth.Public:
			next.ServeHTTP(w, r)
			return
		case auth.TestingOnly:
			if s.deps.AppEnv != "testing" {
				writeEnvelope(w, newEnvelope(r.Context(), 400, "ROUTE_NOT_AVAILABLE",
					"This endpoint is only available when the server is running in testing mode"))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		id, err := s.deps.Auth.Authenticate(r, need)
		if err == nil {
			err = s.deps.Auth.Authorize(r, id, need)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		r = r.WithContext(auth.WithIdentity(r.Context(), id))
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions || s.deps.Audit == nil {
			next.ServeHTTP(w, r)
			return
		}
		route := func() string {
			if rc := chi.RouteContext(r.Context()); rc != nil {
				return rc.RoutePattern()
			}
			return ""
		}
		pending := &auth.Pending{Entry: auth.AuditEntry{ActorKind: string(id.Kind), Actor: id.Name, Method: r.Method,
			Path: r.URL.Path, RequestID: requestID(r.Context())}, Route: route}
		r = r.WithContext(auth.WithPending(r.Context(), pending))
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		if pending.RecordedInTx() && status < 400 {
			return // written with the request's own transaction, which committed
		}
		e := pending.Entry
		e.Route, e.Status = route(), status
		if err := s.deps.Audit.Record(r.Context(), e); err != nil {
			loggerFrom(r.Context()).Error("audit log write failed", "error", err)
		}
	})
}
