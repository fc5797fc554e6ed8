// Package httpapi holds the HTTP handlers: they decode input, call one service method
// and map errors to statuses. No SQL and no storage calls live here.
package httpapi

import (
	"embed"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/provisioning"
	"github.com/iotsupport/iotsupport/internal/publicurl"
	"github.com/iotsupport/iotsupport/internal/rollouts"
	"github.com/iotsupport/iotsupport/internal/testsession"
)

// Version is reported in the OpenAPI document; set by the binary.
var Version = "dev"

// Deps are the services the API calls.
type Deps struct {
	Log     *slog.Logger
	Devices *devices.Service
	Metrics *prometheus.Registry
	AppEnv  string
	Auth    *auth.Authenticator
	Tokens  *auth.Tokens
	Audit   *auth.Audit
	// AuditWriteTimeout bounds an audit entry's write after its request (default 10 s).
	AuditWriteTimeout time.Duration
	// Firmware serves bundles and downloads.
	Firmware *firmware.Service
	// Fleet records device telemetry and answers the fleet view.
	Fleet *fleet.Service
	// Rollouts runs staged rollouts and device pins.
	Rollouts *rollouts.Service
	// Coredumps stores and serves core dumps.
	Coredumps *coredumps.Service
	// CrashGroups serves crash groups.
	CrashGroups *crashgroups.Service
	// Provisioning issues devices' provisioning records (NVS images).
	Provisioning *provisioning.Service
	// InsecureDev logs a warning on every request.
	InsecureDev bool
	// TestSessions holds /api/testing/auth sessions; set only with APP_ENV=testing.
	TestSessions *testsession.Store
	// CookieName is the browser session cookie (OIDC_COOKIE_NAME).
	CookieName string
	// DrainKey is the bearer secret of /health/drain (DRAIN_AUTH_KEY); empty refuses every drain.
	DrainKey string
	// PublicURL gives the service's own URL for the CI scripts.
	PublicURL publicurl.Resolver
	// Ready are the readiness probe's checks (/health/readyz), in body order.
	Ready []Checker
	// Console adds the web console's pages outside /api; nil serves the API alone.
	Console Routes
}

// Routes registers a set of routes on the server's router (the web console).
type Routes interface {
	Register(r chi.Router)
}

// Server is the HTTP API.
type Server struct {
	deps         Deps
	router       chi.Router
	api          huma.API
	shuttingDown atomic.Bool
	refusals     *prometheus.CounterVec
}

//go:embed docsui
var docsFS embed.FS

// New builds the router with every route.
func New(deps Deps) *Server {
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	s := &Server{deps: deps}
	r := chi.NewRouter()
	m := newHTTPMetrics(deps.Metrics)
	s.refusals = newRefusals(deps.Metrics)
	r.Use(securityHeaders, withRequestID(deps.Log), m.observe, headAsGet, s.authenticate)
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)

	cfg := huma.DefaultConfig("IoT Support API", Version)
	cfg.CreateHooks = nil // no $schema links: responses carry exactly the documented fields
	cfg.DocsPath = ""     // our own offline docs page below
	cfg.OpenAPIPath = "/api/docs/openapi"
	cfg.SchemasPath = ""
	cfg.Info.Description = "Firmware and core dump service for ESP32 fleets.\n\n" +
		"Every GET operation also answers HEAD with the same status and headers and no body (downloads fetch nothing). " +
		"Non-numeric ids in paths answer 404; list operations refuse query parameters they do not declare with 400."
	s.api = humachi.New(r, cfg)
	s.router = r

	r.Get("/health/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"status": "alive", "ready": true})
	})
	r.Get("/health/readyz", s.readyz)
	r.Get("/health/drain", s.drain)
	r.Handle("/metrics", promhttp.HandlerFor(deps.Metrics, promhttp.HandlerOpts{Registry: deps.Metrics}))
	s.registerDocs(r)
	s.registerModels()
	s.registerDevices()
	s.registerFleet()
	s.registerTokens()
	s.registerIoT()
	s.registerCoredumps()
	s.registerFirmware()
	s.registerDecoding()
	s.registerCrashGroups()
	s.registerRollouts()
	s.registerSession()
	s.registerProvisioning()
	if deps.Console != nil {
		deps.Console.Register(r)
	}
	declareSecurity(s.api.OpenAPI())
	return s
}

// Security scheme names in the OpenAPI document.
const (
	schemeBearer = "bearerAuth"
	schemeDevice = "deviceBasic"
)

// declareSecurity adds the security schemes and gives every operation the ones its
// route accepts (auth.Policy, the same table the middleware enforces), so the docs
// page's "Authorize" sends credentials.
func declareSecurity(oapi *huma.OpenAPI) {
	if oapi.Components == nil {
		oapi.Components = &huma.Components{}
	}
	oapi.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		schemeBearer: {Type: "http", Scheme: "bearer",
			Description: "An API token (`iots_…`, roles viewer, editor, admin or pipeline) or, with OIDC, a JWT; devices may also send their OIDC JWT."},
		schemeDevice: {Type: "http", Scheme: "basic", Description: "A device: its key as user name and its secret as password."},
	}
	for path, item := range oapi.Paths {
		for method, op := range map[string]*huma.Operation{http.MethodGet: item.Get, http.MethodHead: item.Head, http.MethodPost: item.Post,
			http.MethodPut: item.Put, http.MethodPatch: item.Patch, http.MethodDelete: item.Delete} {
			if op == nil {
				continue
			}
			switch auth.Policy(method, path) {
			case auth.Public, auth.TestingOnly:
				op.Security = []map[string][]string{}
			case auth.DeviceOnly, auth.Authenticated:
				op.Security = []map[string][]string{{schemeDevice: {}}, {schemeBearer: {}}}
			default:
				op.Security = []map[string][]string{{schemeBearer: {}}}
			}
		}
	}
}

// RegisterCollectors adds the Go runtime and process collectors to reg.
func RegisterCollectors(reg *prometheus.Registry) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// API exposes the huma API (for the OpenAPI document).
func (s *Server) API() huma.API { return s.api }

// SetShuttingDown makes readiness fail so load balancers stop sending traffic.
func (s *Server) SetShuttingDown() { s.shuttingDown.Store(true) }

// docsCSP is the policy of the docs page and its assets: only our own vendored files.
const docsCSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"

func (s *Server) registerDocs(r chi.Router) {
	sub, _ := fs.Sub(docsFS, "docsui")
	r.Get("/api/docs", func(w http.ResponseWriter, r *http.Request) {
		b, _ := fs.ReadFile(sub, "index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", docsCSP)
		_, _ = w.Write(b)
	})
	r.Get("/api/docs/assets/*", func(w http.ResponseWriter, r *http.Request) {
		// Only plain files, and our envelope for anything else: http.FileServer would list
		// directories and answer its own text/plain 404s and index.html redirects.
		f, err := sub.Open(chi.URLParam(r, "*"))
		if err != nil {
			notFound(w, r)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		rs, seekable := f.(io.ReadSeeker)
		if err != nil || st.IsDir() || !seekable {
			notFound(w, r)
			return
		}
		w.Header().Set("Content-Security-Policy", docsCSP)
		http.ServeContent(w, r, st.Name(), st.ModTime(), rs)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
