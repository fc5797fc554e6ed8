package httpapi

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
)

// headAsGet routes a HEAD request to the GET handler of its path when no HEAD route
// exists: every GET route answers HEAD with the same status and headers (net/http
// drops the body). esp_https_ota sends HEAD before a partial download and gives up on
// anything but 200. Download handlers see the HEAD and never fetch the object.
func headAsGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			rctx := chi.RouteContext(r.Context())
			if path := routePath(r); !rctx.Routes.Match(chi.NewRouteContext(), http.MethodHead, path) {
				rctx.RouteMethod = http.MethodGet
				rctx.RoutePath = path
			}
		}
		next.ServeHTTP(w, r)
	})
}

func routePath(r *http.Request) string {
	if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePath != "" {
		return rctx.RoutePath
	}
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// routableMethods are the methods a route can be registered for, in Allow order.
var routableMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// allowedMethods lists the methods some route of r's path answers.
func allowedMethods(r *http.Request) []string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return nil
	}
	path := routePath(r)
	var allowed []string
	for _, m := range routableMethods {
		probe := m
		if m == http.MethodHead {
			probe = http.MethodGet // see headAsGet
		}
		if rctx.Routes.Match(chi.NewRouteContext(), probe, path) {
			allowed = append(allowed, m)
		}
	}
	return allowed
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeEnvelope(w, newEnvelope(r.Context(), http.StatusNotFound, "RECORD_NOT_FOUND", "Resource not found"))
}

// methodNotAllowed answers 405 with the Allow header RFC 9110 requires.
func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	allowed := allowedMethods(r)
	if len(allowed) == 0 {
		notFound(w, r)
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeEnvelope(w, newEnvelope(r.Context(), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED",
		"Method "+r.Method+" is not allowed for "+r.URL.Path+"; allowed: "+strings.Join(allowed, ", ")))
}
