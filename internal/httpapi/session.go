package httpapi

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/testsession"
)

// SelfBody is the caller as the older service's /api/auth/self described it.
type SelfBody struct {
	Subject string   `json:"subject" doc:"Token name, OIDC subject, device key or test-session subject"`
	Email   *string  `json:"email"`
	Name    *string  `json:"name"`
	Roles   []string `json:"roles" doc:"Our roles (viewer, editor, admin, pipeline); empty for devices"`
}

// roleOrder lists roles in a stable order for SelfBody.
var roleOrder = []auth.Role{auth.Viewer, auth.Editor, auth.Admin, auth.Pipeline}

func selfBody(id *auth.Identity) *SelfBody {
	if id.Kind == auth.KindInsecure {
		// The older service's fixed user when authentication is off.
		email, name := "admin@local", "Local Admin"
		return &SelfBody{Subject: "local-user", Email: &email, Name: &name, Roles: []string{string(auth.Admin)}}
	}
	b := &SelfBody{Subject: id.Name, Roles: []string{}}
	if id.Email != "" {
		b.Email = &id.Email
	}
	if id.FullName != "" {
		b.Name = &id.FullName
	}
	for _, r := range roleOrder {
		if id.Roles[r] {
			b.Roles = append(b.Roles, string(r))
		}
	}
	return b
}

func (s *Server) registerSession() {
	huma.Register(s.api, huma.Operation{OperationID: "get-auth-self", Method: http.MethodGet, Path: "/api/auth/self",
		Summary: "Who the caller is (any API token, OIDC user, device or test session)", Tags: []string{"Auth"}},
		func(ctx context.Context, _ *struct{}) (*struct{ Body *SelfBody }, error) {
			if s.deps.TestSessions != nil {
				if status := s.deps.TestSessions.TakeForcedError(); status != 0 {
					return nil, newEnvelope(ctx, status, "", "Error forced by /api/testing/auth/force-error")
				}
			}
			return &struct{ Body *SelfBody }{Body: selfBody(auth.FromContext(ctx))}, nil
		})

	tags := []string{"Testing"}
	huma.Register(s.api, huma.Operation{OperationID: "testing-create-session", Method: http.MethodPost, Path: "/api/testing/auth/session",
		Summary: "Start a browser session with the given roles; sets the session cookie (APP_ENV=testing only)", Tags: tags, DefaultStatus: 201},
		func(ctx context.Context, in *struct {
			Body testsession.Session
		}) (*struct {
			SetCookie http.Cookie `header:"Set-Cookie"`
			Body      testsession.Session
		}, error) {
			st, err := s.testSessions()
			if err != nil {
				return nil, err
			}
			token, expires, err := st.Create(in.Body)
			if err != nil {
				return nil, err
			}
			out := &struct {
				SetCookie http.Cookie `header:"Set-Cookie"`
				Body      testsession.Session
			}{Body: in.Body}
			if out.Body.Roles == nil {
				out.Body.Roles = []string{}
			}
			out.SetCookie = http.Cookie{Name: s.cookieName(), Value: token, Path: "/", Expires: expires,
				MaxAge: int(testsession.TTL.Seconds()), HttpOnly: true, SameSite: http.SameSiteLaxMode}
			return out, nil
		})
	// A plain handler: the session cookie's name is a setting, which huma's cookie tags cannot be.
	s.router.Post("/api/testing/auth/clear", s.clearTestSession)
	s.api.OpenAPI().AddOperation(&huma.Operation{OperationID: "testing-clear-session", Method: http.MethodPost, Path: "/api/testing/auth/clear",
		Summary: "End the caller's test session and clear its cookie (APP_ENV=testing only)", Tags: tags,
		Responses: map[string]*huma.Response{"204": {Description: "Session ended (also when there was none)"}}})
	huma.Register(s.api, huma.Operation{OperationID: "testing-force-auth-error", Method: http.MethodPost, Path: "/api/testing/auth/force-error",
		Summary: "Make the next GET /api/auth/self answer this status once (APP_ENV=testing only)", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *struct {
			Status int `query:"status" required:"true" minimum:"400" maximum:"599" doc:"HTTP error status"`
		}) (*struct{}, error) {
			st, err := s.testSessions()
			if err != nil {
				return nil, err
			}
			return nil, st.ForceError(in.Status)
		})
}

func (s *Server) clearTestSession(w http.ResponseWriter, r *http.Request) {
	st, err := s.testSessions()
	if err != nil {
		writeError(w, r, err)
		return
	}
	if c, err := r.Cookie(s.cookieName()); err == nil {
		st.Delete(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	w.WriteHeader(http.StatusNoContent)
}

// testSessions is the session store; it exists only with APP_ENV=testing, where the
// middleware lets /api/testing/* through.
func (s *Server) testSessions() (*testsession.Store, error) {
	if s.deps.TestSessions == nil {
		return nil, huma.NewError(http.StatusBadRequest, "This endpoint is only available when the server is running in testing mode")
	}
	return s.deps.TestSessions, nil
}

func (s *Server) cookieName() string {
	if s.deps.CookieName == "" {
		return "access_token"
	}
	return s.deps.CookieName
}

// drain takes this replica out of load balancing before it is stopped: readiness answers
// 503 from then on, while requests are still served until SIGTERM. It needs
// `Authorization: Bearer DRAIN_AUTH_KEY`; with no key set it always refuses.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if s.deps.DrainKey == "" || !ok || subtle.ConstantTimeCompare([]byte(given), []byte(s.deps.DrainKey)) != 1 {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"status": "unauthorized", "ready": false})
		return
	}
	s.SetShuttingDown()
	loggerFrom(r.Context()).Info("drained: readiness now fails until the process stops")
	writeJSON(w, http.StatusOK, map[string]any{"status": "draining", "ready": false})
}
