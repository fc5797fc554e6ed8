package console_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/auth/oidctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// follow requests an absolute URL (the issuer's) with the client's cookies.
func (c *client) follow(u string) *page {
	c.t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	return c.do(req)
}

// ssoRound starts a sign-in and brings the issuer's answer back to the callback.
func ssoRound(t *testing.T, c *client, next string) (authURL string, callback *page) {
	t.Helper()
	p := c.get("/auth/login?next=" + url.QueryEscape(next))
	if p.Status != http.StatusFound {
		t.Fatalf("/auth/login: %d %s", p.Status, p.Body)
	}
	authURL = p.Header.Get("Location")
	back := c.follow(authURL)
	if back.Status != http.StatusFound {
		t.Fatalf("issuer: %d %s", back.Status, back.Body)
	}
	return authURL, c.follow(back.Header.Get("Location"))
}

func TestSSOSignInWithAuthorizationCodeAndPKCE(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		is := oidctest.New(t)
		s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_CLIENT_ID", "iot-console",
			"OIDC_CLIENT_SECRET", "s3cret")
		alice := &oidctest.Claims{Subject: "alice-sub", Audience: "iot-console", Email: "alice@example.com", Name: "Alice",
			RealmRoles: []string{"editor"}}
		is.SignInAs(alice, "s3cret")

		c := newClient(t, s)
		c.get("/login").must(t, 200, `id="sso"`, "Sign in with SSO")
		authURL, p := ssoRound(t, c, "/devices")
		q, _ := url.Parse(authURL)
		for _, k := range []string{"state", "nonce", "code_challenge"} {
			if q.Query().Get(k) == "" {
				t.Fatalf("authorization request lacks %s: %s", k, authURL)
			}
		}
		if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("client_id") != "iot-console" ||
			!strings.HasSuffix(q.Query().Get("redirect_uri"), "/auth/callback") {
			t.Fatalf("authorization request %s", authURL)
		}
		if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/devices" {
			t.Fatalf("callback: %d → %q %s", p.Status, p.Header.Get("Location"), p.Body)
		}
		sessionCookie(t, p)
		c.get("/devices").must(t, 200, `id="who">alice-sub<`, `id="device-create"`)
		c.get("/api/auth/self").must(t, 200, `"subject":"alice-sub"`, `"email":"alice@example.com"`, `"name":"Alice"`, `"roles":["editor"]`)

		// The answer must belong to a sign-in started in this browser.
		other := newClient(t, s)
		other.get("/auth/callback?code=x&state=y").must(t, 400, "does not belong to a sign-in started here")
		other.get("/auth/login")
		other.get("/auth/callback?code=x&state=forged").must(t, 400)

		// A tampered PKCE verifier (or a replayed code) gets no session.
		d := newClient(t, s)
		start := d.get("/auth/login")
		u, _ := url.Parse(s.URL)
		var st map[string]string
		for _, ck := range d.http.Jar.Cookies(&url.URL{Scheme: "http", Host: u.Host, Path: "/auth/"}) {
			if ck.Name == "iotsupport_sso" {
				b, _ := base64.RawURLEncoding.DecodeString(ck.Value)
				_ = json.Unmarshal(b, &st)
				st["v"] = "tampered-verifier-tampered-verifier-tampered"
				b, _ = json.Marshal(st)
				d.http.Jar.SetCookies(&url.URL{Scheme: "http", Host: u.Host, Path: "/auth/"}, []*http.Cookie{{Name: "iotsupport_sso", Value: base64.RawURLEncoding.EncodeToString(b), Path: "/auth/"}})
			}
		}
		if st == nil {
			t.Fatal("no iotsupport_sso cookie")
		}
		back := d.follow(d.follow(start.Header.Get("Location")).Header.Get("Location"))
		back.must(t, http.StatusUnauthorized, "Single sign-on failed")
		if d.get("/").Status != http.StatusSeeOther {
			t.Fatal("a failed exchange signed the browser in")
		}

		// Refused at the issuer, or without a role of ours: no session, the reason shown.
		is.SignInAs(nil, "s3cret")
		_, p = ssoRound(t, newClient(t, s), "/")
		p.must(t, http.StatusUnauthorized, "refused the sign-in (access_denied)")
		is.SignInAs(&oidctest.Claims{Subject: "bob", Audience: "iot-console", RealmRoles: []string{"pipeline"}}, "s3cret")
		_, p = ssoRound(t, newClient(t, s), "/")
		p.must(t, http.StatusForbidden, "no viewer, editor or admin role")
		// A wrong client secret fails the exchange.
		is.SignInAs(alice, "other-secret")
		_, p = ssoRound(t, newClient(t, s), "/")
		p.must(t, http.StatusUnauthorized)
	})
}
