package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/sessions"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func sessionCookie(t *testing.T, p *page) *http.Cookie {
	t.Helper()
	for _, ck := range (&http.Response{Header: p.Header}).Cookies() {
		if ck.Name == sessions.CookieName {
			return ck
		}
	}
	t.Fatalf("no %s cookie set; headers %v", sessions.CookieName, p.Header)
	return nil
}

func TestSignInMakesAServerSideSessionAndLogoutEndsIt(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		c := newClient(t, s)

		p := c.get("/devices?model=1")
		if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/login?next="+url.QueryEscape("/devices?model=1") {
			t.Fatalf("unauthenticated page: %d → %q", p.Status, p.Header.Get("Location"))
		}
		c.get("/login").must(t, 200, `name="token"`, `<label for="token">`)

		c.post("/login", url.Values{"token": {"iots_not-a-token"}}).must(t, http.StatusUnauthorized, "Invalid or revoked API token")
		c.post("/login", url.Values{"token": {""}}).must(t, http.StatusBadRequest, "Paste an API token")
		c.post("/login", url.Values{"token": {s.Tokens["pipeline"]}}).must(t, http.StatusForbidden, "no viewer, editor or admin role")

		p = c.post("/login", url.Values{"token": {s.Tokens["editor"]}, "next": {"/devices?model=1"}})
		if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/devices?model=1" {
			t.Fatalf("sign in: %d → %q", p.Status, p.Header.Get("Location"))
		}
		ck := sessionCookie(t, p)
		if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Secure || ck.Path != "/" {
			t.Fatalf("cookie attributes: %+v", ck)
		}
		if strings.Contains(ck.Value, s.Tokens["editor"]) {
			t.Fatal("the cookie carries the API token")
		}

		c.get("/").must(t, 200, "Fleet overview", `id="who">test-editor<`)
		// The API answers the signed-in browser too.
		self := c.get("/api/auth/self").must(t, 200, `"subject":"test-editor"`, `"roles":["editor"]`)
		_ = self

		// Logout needs the session's CSRF token.
		c.post("/logout", url.Values{"csrf": {"forged"}}).must(t, http.StatusForbidden)
		c.get("/").must(t, 200)
		p = c.post("/logout", url.Values{})
		if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/login" {
			t.Fatalf("logout: %d %q", p.Status, p.Header.Get("Location"))
		}
		// The old cookie value no longer opens anything: the session ended server-side.
		replay := newClient(t, s)
		u, _ := url.Parse(s.URL)
		replay.http.Jar.SetCookies(u, []*http.Cookie{{Name: sessions.CookieName, Value: ck.Value, Path: "/"}})
		if p := replay.get("/"); p.Status != http.StatusSeeOther {
			t.Fatalf("replayed cookie after logout: %d", p.Status)
		}
		replay.get("/api/auth/self").must(t, http.StatusUnauthorized)
	})
}

func TestSecureCookieBehindTLSProxy(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	for _, trust := range []string{"true", "false"} {
		s := apitest.Start(t, env, "TRUST_PROXY_HEADERS", trust)
		c := newClient(t, s)
		p := c.post("/login", url.Values{"token": {s.Tokens["viewer"]}}, "X-Forwarded-Proto", "https")
		if ck := sessionCookie(t, p); ck.Secure != (trust == "true") {
			t.Fatalf("TRUST_PROXY_HEADERS=%s: Secure=%v", trust, ck.Secure)
		}
	}
}

func TestNextRedirectStaysOnThisSite(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	for next, want := range map[string]string{
		"/devices/3":             "/devices/3",
		"/models?x=1":            "/models?x=1",
		"//evil.example/":        "/",
		"/\\evil.example":        "/",
		"https://evil.example/":  "/",
		"javascript:alert(1)":    "/",
		"evil.example":           "/",
		"/ok\r\nSet-Cookie: x=1": "/",
	} {
		c := newClient(t, s)
		p := c.post("/login", url.Values{"token": {s.Tokens["viewer"]}, "next": {next}})
		if got := p.Header.Get("Location"); p.Status != http.StatusSeeOther || got != want {
			t.Errorf("next=%q: %d → %q, want %q", next, p.Status, got, want)
		}
		// The form carries it through too, sanitised.
		if p := newClient(t, s).get("/login?next=" + url.QueryEscape(next)); !strings.Contains(p.Body, `name="next" value="`+strings.ReplaceAll(want, "?", "?")) {
			t.Errorf("login form for next=%q does not carry %q", next, want)
		}
	}
}

func TestStateChangesNeedCSRFAndSameOrigin(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		c := signIn(t, s, "editor")
		count := func() int {
			return int(s.Expect(200, "GET", "/api/device-models", nil).Map(t)["count"].(float64))
		}
		form := func(code string) url.Values { return url.Values{"code": {code}, "name": {"N"}} }

		missing := form("no_token")
		missing["csrf"] = []string{""}
		c.post("/models", missing).must(t, http.StatusForbidden, "did not come from this console")
		c.post("/models", url.Values{"code": {"forged"}, "name": {"N"}, "csrf": {"forged"}}).must(t, http.StatusForbidden)
		// A cross-site form post with the cookie (and even the right token) is refused.
		c.post("/models", form("cross_site"), "Sec-Fetch-Site", "cross-site").must(t, http.StatusForbidden, "Cross-site request refused")
		c.post("/models", form("cross_origin"), "Sec-Fetch-Site", "", "Origin", "https://evil.example").must(t, http.StatusForbidden)
		// The API's writes with the session cookie need the same origin as well.
		req, _ := http.NewRequest("POST", s.URL+"/api/device-models", strings.NewReader(`{"code":"api_x","name":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", "https://evil.example")
		if p := c.do(req); p.Status != http.StatusForbidden {
			t.Fatalf("cross-site API write with the session cookie: %d %s", p.Status, p.Body)
		}
		if n := count(); n != 0 {
			t.Fatalf("%d models created by refused requests", n)
		}
		c.post("/models", form("fine")).must(t, http.StatusSeeOther)
		if n := count(); n != 1 {
			t.Fatalf("%d models after the good post", n)
		}
	})
}

func TestPagesCarryStrictSecurityHeaders(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	c := signIn(t, s, "admin")
	for _, path := range []string{"/", "/models", "/devices", "/tokens", "/audit", "/static/console.css", "/static/vendor/htmx.min.js", "/nope-page"} {
		p := c.get(path)
		csp := p.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") || p.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: CSP %q, nosniff %q", path, csp, p.Header.Get("X-Content-Type-Options"))
		}
		if strings.HasPrefix(path, "/nope") {
			continue
		}
		if p.Status != 200 {
			t.Errorf("%s: %d", path, p.Status)
		}
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP %q allows more than our own scripts", path, csp)
		}
		if p.Header.Get("Referrer-Policy") == "" {
			t.Errorf("%s: no Referrer-Policy", path)
		}
		// No inline script anywhere: every <script> has a src.
		if strings.Contains(p.Body, "<script>") || strings.Contains(p.Body, " onclick=") || strings.Contains(p.Body, "style=\"") {
			t.Errorf("%s: inline script or style", path)
		}
	}
	if p := newClient(t, s).get("/login"); p.Status != 200 || !strings.Contains(p.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("/login: %d, CSP %q", p.Status, p.Header.Get("Content-Security-Policy"))
	}
	if p := c.get("/static/"); p.Status != 404 {
		t.Errorf("static directory listing: %d", p.Status)
	}
}

func TestFailedSignInsAreLimitedPerAddress(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env, "BEARER_AUTH_FAILURES_PER_MINUTE", "2")
	c := newClient(t, s)
	for i := 0; i < 2; i++ {
		c.post("/login", url.Values{"token": {"iots_wrong"}}).must(t, http.StatusUnauthorized)
	}
	c.post("/login", url.Values{"token": {"iots_wrong"}}).must(t, http.StatusTooManyRequests, "Too many failed logins")
	// Past the limit even the right token waits: guessing gets no answer either way.
	c.post("/login", url.Values{"token": {s.Tokens["admin"]}}).must(t, http.StatusTooManyRequests)
}
