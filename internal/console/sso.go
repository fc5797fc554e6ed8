package console

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
)

// ssoCookie keeps a sign-in's state, PKCE verifier and nonce between /auth/login and
// /auth/callback; only those paths see it, for ten minutes.
const ssoCookie = "iotsupport_sso"

// ssoStart sends the browser to the issuer (authorization code with PKCE).
func (c *Console) ssoStart(w http.ResponseWriter, r *http.Request) {
	redirect, err := c.callbackURL(r)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	u, st := c.d.SSO.Start(redirect, localPath(r.URL.Query().Get("next")))
	b, _ := json.Marshal(st)
	http.SetCookie(w, &http.Cookie{Name: ssoCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/auth/", MaxAge: 600,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: c.secure(r)})
	http.Redirect(w, r, u, http.StatusFound)
}

// ssoCallback finishes the sign-in: the state must match the cookie's, the code is
// exchanged with the verifier, and a session starts like a token sign-in's.
func (c *Console) ssoCallback(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: ssoCookie, Value: "", Path: "/auth/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: c.secure(r)})
	var st auth.SSOState
	ck, err := r.Cookie(ssoCookie)
	if err == nil {
		var b []byte
		if b, err = base64.RawURLEncoding.DecodeString(ck.Value); err == nil {
			err = json.Unmarshal(b, &st)
		}
	}
	q := r.URL.Query()
	if err != nil || st.State == "" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		c.render(w, r, http.StatusBadRequest, "login", "Sign in", loginData{Next: "/", SSO: true,
			Error: "The single sign-on answer does not belong to a sign-in started here; try again."})
		return
	}
	if e := q.Get("error"); e != "" || q.Get("code") == "" {
		c.render(w, r, http.StatusUnauthorized, "login", "Sign in", loginData{Next: st.Next, SSO: true,
			Error: "The identity provider refused the sign-in (" + e + ")."})
		return
	}
	redirect, err := c.callbackURL(r)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	id, err := c.d.SSO.Finish(r.Context(), redirect, q.Get("code"), st)
	if err != nil {
		status, msg := http.StatusUnauthorized, "Single sign-on failed; try again."
		if ae, ok := err.(*apperr.Error); ok && ae.Kind == apperr.Forbidden {
			status, msg = http.StatusForbidden, ae.Msg
		} else {
			// Why (code, token, nonce) goes to the log only, as for refused JWTs.
			c.d.Log.Info("SSO sign-in refused", "error", err)
		}
		c.render(w, r, status, "login", "Sign in", loginData{Next: st.Next, SSO: true, Error: msg})
		return
	}
	c.startSession(w, r, id, localPath(st.Next))
}

func (c *Console) callbackURL(r *http.Request) (string, error) {
	base, err := c.d.PublicURL.BaseURL(r)
	if err != nil {
		return "", err
	}
	return base + "/auth/callback", nil
}
