package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

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
		case auth.TestingOnly, auth.TestingAdmin:
			if s.deps.AppEnv != "testing" {
				writeEnvelope(w, newEnvelope(r.Context(), 400, "ROUTE_NOT_AVAILABLE",
					"This endpoint is only available when the server is running in testing mode"))
				return
			}
			if need == auth.TestingOnly {
				next.ServeHTTP(w, r)
				return
			}
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
		if id.IsDevice() {
			// Every authenticated device request says it is alive (and, in its headers,
			// what it runs and why it booted): coalesced in memory, not a write.
			s.deps.Fleet.Observe(r.Context(), id.DeviceID, id.ModelID, r.Header)
		}
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
		// A write whose request has arrived runs to its end even if the client hangs up:
		// cancelled halfway, its change could commit while its answer and audit entry
		// record a failure. Body reads are still bounded by REQUEST_BODY_TIMEOUT.
		r = r.WithContext(auth.WithPending(context.WithoutCancel(r.Context()), pending))
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
		// A request that reached no route changed nothing; a device's refused request
		// (429 from a crash loop, a bad upload) neither. Any device, or a script with a
		// token, could send these without end, so they are counted, not stored.
		if e.Route == "" || id.IsDevice() && status >= 400 {
			s.refusals.WithLabelValues(string(id.Kind), refusalRoute(e.Route), strconv.Itoa(status)).Inc()
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.auditTimeout())
		defer cancel()
		if err := s.deps.Audit.Record(ctx, e); err != nil {
			loggerFrom(r.Context()).Error("audit log write failed", "error", err)
		}
	})
}

func (s *Server) auditTimeout() time.Duration {
	if s.deps.AuditWriteTimeout > 0 {
		return s.deps.AuditWriteTimeout
	}
	return 10 * time.Second
}

func refusalRoute(route string) string {
	if route == "" {
		return "unmatched"
	}
	return route
}

// newRefusals counts the refused writes not kept in the audit log.
func newRefusals(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotsupport_refused_writes_total",
		Help: "Refused writes not recorded in the audit log (device refusals, writes to no route), by caller kind, route pattern and status."},
		[]string{"kind", "route", "status"})
	reg.MustRegister(c)
	return c
}
