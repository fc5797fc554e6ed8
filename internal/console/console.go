// Package console is the web console served at `/`: server-rendered pages (html/template,
// embedded) with htmx for partial updates, one stylesheet and one small script of ours,
// all embedded. Pages are thin: each reads its input, calls the same services as the API
// handlers and renders one template. Sign-in makes a server-side session (sessions.Store);
// every state change carries the session's CSRF token and cross-site posts are refused.
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/publicurl"
	"github.com/iotsupport/iotsupport/internal/sessions"
	"github.com/iotsupport/iotsupport/internal/ttlcache"
)

//go:embed templates
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Deps are the services the console's pages call.
type Deps struct {
	Log       *slog.Logger
	Devices   *devices.Service
	Firmware  *firmware.Service
	Coredumps *coredumps.Service
	// CrashGroups lists, shows and edits crash groups; Fleet gives the overview's versions.
	CrashGroups *crashgroups.Service
	Fleet       *fleet.Service
	Tokens      *auth.Tokens
	Audit       *auth.Audit
	Auth        *auth.Authenticator
	Sessions    *sessions.Store
	// TrustProxy marks the cookie Secure when X-Forwarded-Proto says https (TRUST_PROXY_HEADERS).
	TrustProxy bool
	// PageSize is the rows per page of the lists (CONSOLE_PAGE_SIZE).
	PageSize int
	// OverviewTTL keeps the overview's fleet counts and top groups this long (CONSOLE_OVERVIEW_CACHE_TTL; 0: none).
	OverviewTTL time.Duration
	// SSO runs "Sign in with SSO" (OIDC authorization code with PKCE); nil when OIDC is off.
	SSO *auth.SSO
	// PublicURL gives the service's own URL, for the SSO callback.
	PublicURL publicurl.Resolver
}

// Console serves the pages.
type Console struct {
	d       Deps
	pages   map[string]*template.Template
	csp     *http.CrossOriginProtection
	summary *ttlcache.Cache[struct{}, fleetSummary]
}

// New parses every template (a broken one fails at start, not on first view).
func New(d Deps) (*Console, error) {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.PageSize <= 0 {
		d.PageSize = 50
	}
	c := &Console{d: d, pages: map[string]*template.Template{}, csp: http.NewCrossOriginProtection(),
		summary: ttlcache.New[struct{}, fleetSummary](d.OverviewTTL, 1)}
	c.csp.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusForbidden, "Cross-site request refused.")
	}))
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" || base == "partials" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, err
		}
		c.pages[base] = t
	}
	return c, nil
}

// Register adds the console's routes to the service's router (the JSON API keeps /api).
func (c *Console) Register(r chi.Router) {
	static, _ := fs.Sub(staticFS, "static")
	r.Group(func(r chi.Router) {
		r.Use(securityHeaders)
		r.Handle("/static/*", http.StripPrefix("/static/", staticFiles(static)))
		r.Group(func(r chi.Router) {
			r.Use(c.csp.Handler, c.loadSession)
			r.Get("/login", c.loginShow)
			r.Post("/login", c.loginCheck)
			r.Post("/logout", c.logout)
			if c.d.SSO != nil {
				r.Get("/auth/login", c.ssoStart)
				r.Get("/auth/callback", c.ssoCallback)
			}
			r.Group(func(r chi.Router) {
				r.Use(c.requireRole(auth.Viewer), c.checkCSRF, c.audit)
				r.Get("/", c.overview)
				r.Get("/models", c.modelList)
				r.Get("/models/{id}", c.modelShow)
				r.Get("/devices", c.deviceList)
				r.Get("/devices/{id}", c.deviceShow)
				r.Get("/devices/{id}/coredumps/{cid}", c.coredumpShow)
				r.Get("/crash-groups", c.crashGroupList)
				r.Get("/crash-groups/{id}", c.crashGroupShow)
				r.Group(func(r chi.Router) {
					r.Use(c.requireRole(auth.Editor))
					r.Post("/models", c.modelCreate)
					r.Post("/models/{id}", c.modelUpdate)
					r.Post("/models/{id}/delete", c.modelDelete)
					r.Post("/models/{id}/firmware", c.firmwareUpload)
					r.Post("/models/{id}/firmware/{version}/current", c.firmwareCurrent)
					r.Post("/models/{id}/firmware/{version}/delete", c.firmwareDelete)
					r.Post("/devices", c.deviceCreate)
					r.Post("/devices/{id}", c.deviceUpdate)
					r.Post("/devices/{id}/secret", c.deviceSecret)
					r.Post("/devices/{id}/delete", c.deviceDelete)
					r.Post("/devices/{id}/coredumps/{cid}/reparse", c.coredumpReparse)
					r.Post("/crash-groups/{id}/status", c.crashGroupStatus)
					r.Post("/crash-groups/{id}/merge", c.crashGroupMerge)
				})
				r.Group(func(r chi.Router) {
					r.Use(c.requireRole(auth.Admin))
					r.Get("/tokens", c.tokenList)
					r.Post("/tokens", c.tokenCreate)
					r.Post("/tokens/{id}/revoke", c.tokenRevoke)
					r.Get("/audit", c.auditList)
				})
			})
		})
	})
}

// CSP allows only our own files: no inline script or style, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

// staticFiles serves the embedded files, never a directory listing.
func staticFiles(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

type ctxKey struct{}

// loadSession puts the request's session (or nil) in the context.
func (c *Console) loadSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sess *sessions.Session
		if ck, err := r.Cookie(sessions.CookieName); err == nil {
			s, err := c.d.Sessions.Get(r.Context(), ck.Value)
			if err != nil {
				c.serviceError(w, r, err)
				return
			}
			sess = s
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess)))
	})
}

func session(r *http.Request) *sessions.Session {
	s, _ := r.Context().Value(ctxKey{}).(*sessions.Session)
	return s
}

// requireRole sends a visitor without a session to the sign-in page (pages) and refuses
// a role too low (403) whatever the page showed.
func (c *Console) requireRole(role auth.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := session(r)
			if s == nil {
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				c.fail(w, r, http.StatusUnauthorized, "Your session has ended; sign in again.")
				return
			}
			if !s.Identity.Has(role) {
				c.fail(w, r, http.StatusForbidden, "Your role does not allow this; it needs "+string(role)+".")
				return
			}
			next.ServeHTTP(w, r.WithContext(auth.WithIdentity(r.Context(), s.Identity)))
		})
	}
}

// serviceError maps a service's error to a page with its message.
func (c *Console) serviceError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	msg := "Internal server error."
	var ae *apperr.Error
	if errors.As(err, &ae) {
		msg = ae.Msg
		switch ae.Kind {
		case apperr.NotFound:
			status = http.StatusNotFound
		case apperr.Exists, apperr.InvalidOperation:
			status = http.StatusConflict
		case apperr.Validation:
			status = http.StatusBadRequest
		case apperr.TooLarge:
			status = http.StatusRequestEntityTooLarge
		case apperr.RateLimited:
			status = http.StatusTooManyRequests
		case apperr.Unauthenticated:
			status = http.StatusUnauthorized
		case apperr.Forbidden:
			status = http.StatusForbidden
		case apperr.Unavailable:
			status = http.StatusServiceUnavailable
		default:
			msg = "Internal server error."
		}
	}
	if status >= 500 {
		c.d.Log.Error("console request failed", "path", r.URL.Path, "error", err)
	}
	c.fail(w, r, status, msg)
}

// fail renders the error page (htmx requests get just the message).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", "Error", map[string]any{"Status": status, "Message": msg})
}

// view is what every template gets: the page's own data and who is looking.
type view struct {
	Title string
	Data  any
	ID    *auth.Identity
	CSRF  string
	Path  string
	Now   time.Time
}

// Can reports whether the viewer holds role: templates show write controls only then.
func (v view) Can(role string) bool { return v.ID != nil && v.ID.Has(auth.Role(role)) }

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page, title string, data any) {
	t := c.pages[page]
	v := view{Title: title, Data: data, Path: r.URL.Path, Now: time.Now().UTC()}
	if s := session(r); s != nil {
		v.ID, v.CSRF = s.Identity, s.CSRF
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	name := "layout.html"
	if r.Header.Get("HX-Request") == "true" && r.Header.Get("HX-Boosted") != "true" {
		name = "content"
	}
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, name, v); err != nil {
		c.d.Log.Error("render page", "page", page, "error", err)
		http.Error(w, "Internal server error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}
