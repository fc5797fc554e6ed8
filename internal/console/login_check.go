package console

import (
	"net/http"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/sessions"
)

// loginForm is the sign-in form.
type loginForm struct {
	Token string
	Next  string
}

func (f *loginForm) Validate() error {
	if f.Token == "" {
		return apperr.Validationf("Paste an API token.")
	}
	if len(f.Token) > 8192 {
		return apperr.Validationf("That is not an API token.")
	}
	return nil
}

// loginCheck signs in with a pasted API token: a new server-side session and its cookie.
func (c *Console) loginCheck(w http.ResponseWriter, r *http.Request) {
	f := loginForm{Token: r.PostFormValue("token"), Next: localPath(r.PostFormValue("next"))}
	err := f.Validate()
	var id *auth.Identity
	if err == nil {
		id, err = c.d.Auth.Login(r, f.Token)
	}
	if err != nil {
		status := http.StatusBadRequest
		msg := "Sign-in failed."
		if ae, ok := err.(*apperr.Error); ok {
			msg = ae.Msg
			switch ae.Kind {
			case apperr.Unauthenticated:
				status = http.StatusUnauthorized
			case apperr.Forbidden:
				status = http.StatusForbidden
			case apperr.RateLimited:
				status = http.StatusTooManyRequests
			case apperr.Validation:
			default:
				c.serviceError(w, r, err)
				return
			}
		} else {
			c.serviceError(w, r, err)
			return
		}
		c.render(w, r, status, "login", "Sign in", loginData{Next: f.Next, SSO: c.d.SSO != nil, Error: msg})
		return
	}
	c.startSession(w, r, id, f.Next)
}

func (c *Console) startSession(w http.ResponseWriter, r *http.Request, id *auth.Identity, next string) {
	raw, s, err := c.d.Sessions.Create(r.Context(), id)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessions.CookieName, Value: raw, Path: "/", Expires: s.Expires,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: c.secure(r)})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// secure marks cookies Secure when the browser reached us over TLS, directly or (with
// TRUST_PROXY_HEADERS) through the proxy in front.
func (c *Console) secure(r *http.Request) bool {
	return r.TLS != nil || c.d.TrustProxy && r.Header.Get("X-Forwarded-Proto") == "https"
}
