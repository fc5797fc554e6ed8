package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/auth/oidctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// The older service's clients read the rotation fields of every device and filter by
// rotation_state; they map onto our credential issuing.
func TestDeviceRotationFieldsAndFilter(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "rot", "name": "Rot"}).Map(t)
		mid := int(m["id"].(float64))
		a := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)
		b := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)
		aid, bid := int(a["id"].(float64)), int(b["id"].(float64))

		createdAt, _ := a["secret_created_at"].(string)
		created, err := time.Parse(time.RFC3339, createdAt)
		if err != nil || a["rotation_state"] != "OK" || a["last_rotation_attempt_at"] != nil || a["last_rotation_completed_at"] != nil ||
			a["rotation_excluded"] != false {
			t.Fatalf("new device: %v (%v)", a, err)
		}
		list := s.Expect(200, "GET", "/api/devices", nil).Map(t)
		for _, x := range list["devices"].([]any) {
			d := x.(map[string]any)
			if d["rotation_state"] != "OK" || d["secret_created_at"] == nil {
				t.Fatalf("summary lacks rotation fields: %v", d)
			}
		}

		// Issuing credentials is a rotation that completes at once.
		cred := s.Expect(200, "POST", fmt.Sprintf("/api/devices/%d/credentials", aid), nil).Map(t)
		got := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", aid), nil).Map(t)
		if got["rotation_state"] != "OK" || got["last_rotation_attempt_at"] == nil ||
			got["last_rotation_completed_at"] != got["last_rotation_attempt_at"] || got["secret_created_at"] != got["last_rotation_attempt_at"] ||
			cred["secret_created_at"] != got["secret_created_at"] {
			t.Fatalf("after issuing credentials: %v / %v", got, cred)
		}
		rotatedAt, _ := got["secret_created_at"].(string)
		if rotated, _ := time.Parse(time.RFC3339, rotatedAt); rotated.Before(created) {
			t.Fatalf("secret_created_at %v before %v", rotated, created)
		}

		// A pending rotation (as an adopted database can hold) is filterable and ends with new credentials.
		testenv.MustExec(t, env.DB, `UPDATE devices SET rotation_state = 'PENDING' WHERE id = $1`, bid)
		pending := s.Expect(200, "GET", "/api/devices?rotation_state=PENDING", nil).Map(t)
		ds := pending["devices"].([]any)
		if pending["count"].(float64) != 1 || int(ds[0].(map[string]any)["id"].(float64)) != bid || ds[0].(map[string]any)["rotation_state"] != "PENDING" {
			t.Fatalf("?rotation_state=PENDING: %v", pending)
		}
		ok := s.Expect(200, "GET", fmt.Sprintf("/api/devices?rotation_state=OK&model_id=%d", mid), nil).Map(t)
		if ok["count"].(float64) != 1 || int(ok["devices"].([]any)[0].(map[string]any)["id"].(float64)) != aid {
			t.Fatalf("?rotation_state=OK: %v", ok)
		}
		bad := s.Expect(400, "GET", "/api/devices?rotation_state=done", nil).Map(t)
		if !strings.Contains(fmt.Sprint(bad), "rotation_state") {
			t.Fatalf("bad filter: %v", bad)
		}
		s.Expect(200, "POST", fmt.Sprintf("/api/devices/%d/credentials", bid), nil)
		if n := s.Expect(200, "GET", "/api/devices?rotation_state=PENDING", nil).Map(t)["count"].(float64); n != 0 {
			t.Fatalf("pending after issuing credentials: %v", n)
		}
	})
}

// GET /api/auth/self answers for every kind of authenticated caller.
func TestAuthSelfForEveryIdentity(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		is := oidctest.New(t)
		s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_AUDIENCE", "iot-api")
		self := func(c *apitest.Server) map[string]any {
			t.Helper()
			return c.Expect(200, "GET", "/api/auth/self", nil).Map(t)
		}
		want := func(got map[string]any, subject string, email, name any, roles ...string) {
			t.Helper()
			if got["subject"] != subject || got["email"] != email || got["name"] != name || fmt.Sprint(got["roles"]) != fmt.Sprint(roles) || len(got) != 4 {
				t.Fatalf("self = %v, want %s %v %v %v", got, subject, email, name, roles)
			}
		}
		want(self(s.Role("admin")), "test-admin", nil, nil, "admin")
		want(self(s.Role("pipeline")), "test-pipeline", nil, nil, "pipeline")
		jwt := is.Token(oidctest.Claims{Subject: "alice-sub", Audience: "iot-api", Email: "alice@example.com", Name: "Alice",
			RealmRoles: []string{"editor", "unrelated"}})
		want(self(s.As("Bearer "+jwt)), "alice-sub", "alice@example.com", "Alice", "editor")
		noRoles := is.Token(oidctest.Claims{Subject: "bob", Audience: "iot-api"})
		want(self(s.As("Bearer "+noRoles)), "bob", nil, nil)

		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "selfm", "name": "M"}).Map(t)
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m["id"], "config": `{}`}).Map(t)
		key := d["key"].(string)
		want(self(s.Basic(key, d["secret"].(string))), key, nil, nil)
		devJWT := is.Token(oidctest.Claims{Subject: "svc", Audience: "iot-api", Azp: "iotdevice-selfm-" + key})
		want(self(s.As("Bearer "+devJWT)), key, nil, nil)

		s.As("").Expect(401, "GET", "/api/auth/self", nil)
		s.Basic(key, "wrong").Expect(401, "GET", "/api/auth/self", nil)
		s.As("Bearer iots_nonsense").Expect(401, "GET", "/api/auth/self", nil)
	})
}

func TestAuthSelfInInsecureDevMode(t *testing.T) {
	s := apitest.Start(t, testenv.New(t, "sqlite+local"), "AUTH_MODE", "insecure-dev")
	got := s.As("").Expect(200, "GET", "/api/auth/self", nil).Map(t)
	if got["subject"] != "local-user" || got["email"] != "admin@local" || got["name"] != "Local Admin" || fmt.Sprint(got["roles"]) != "[admin]" {
		t.Fatalf("self: %v", got)
	}
}

// The older service's end-to-end tests log in through /api/testing/auth/session.
func TestTestingSessions(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing")
		anon := s.As("")
		r := anon.Expect(201, "POST", "/api/testing/auth/session", map[string]any{"subject": "pw-user", "name": "Playwright", "email": "pw@example.com", "roles": []string{"editor"}})
		if body := r.Map(t); body["subject"] != "pw-user" || body["name"] != "Playwright" || body["email"] != "pw@example.com" || fmt.Sprint(body["roles"]) != "[editor]" {
			t.Fatalf("session echo: %v", body)
		}
		var cookie *http.Cookie
		for _, c := range (&http.Response{Header: r.Header}).Cookies() {
			if c.Name == "access_token" {
				cookie = c
			}
		}
		if cookie == nil || !strings.HasPrefix(cookie.Value, "test-session-") || cookie.MaxAge != 3600 || !cookie.HttpOnly {
			t.Fatalf("Set-Cookie: %v", r.Header.Values("Set-Cookie"))
		}
		c := s.As("")
		c.Header.Set("Cookie", "access_token="+cookie.Value)
		got := c.Expect(200, "GET", "/api/auth/self", nil).Map(t)
		if got["subject"] != "pw-user" || got["email"] != "pw@example.com" || got["name"] != "Playwright" || fmt.Sprint(got["roles"]) != "[editor]" {
			t.Fatalf("self with the session: %v", got)
		}
		// Role checks apply: an editor writes (same origin, as a browser would), but cannot manage tokens.
		host := strings.TrimPrefix(s.URL, "http://")
		c.Expect(201, "POST", "/api/device-models", map[string]any{"code": "sess", "name": "S"}, "Origin", "http://"+host)
		c.Expect(403, "GET", "/api/tokens", nil)

		// force-error: the next /api/auth/self answers that status once.
		anon.Expect(204, "POST", "/api/testing/auth/force-error?status=503", nil)
		c.Expect(503, "GET", "/api/auth/self", nil)
		c.Expect(200, "GET", "/api/auth/self", nil)
		for _, bad := range []string{"", "?status=200", "?status=abc", "?status=600"} {
			anon.Expect(400, "POST", "/api/testing/auth/force-error"+bad, nil)
		}
		c.Expect(200, "GET", "/api/auth/self", nil)

		// Bad session bodies are refused and start nothing.
		for _, body := range []map[string]any{{"roles": []string{"viewer"}}, {"subject": " ", "roles": []string{}}, {"subject": "x", "roles": []string{"root"}}} {
			if r := anon.Expect(400, "POST", "/api/testing/auth/session", body); len(r.Header.Values("Set-Cookie")) != 0 {
				t.Fatalf("refused session set a cookie: %v", r.Header)
			}
		}

		// clear ends the session and clears the cookie.
		cl := c.Expect(204, "POST", "/api/testing/auth/clear", nil)
		if sc := cl.Header.Get("Set-Cookie"); !strings.HasPrefix(sc, "access_token=;") || !strings.Contains(sc, "Max-Age=0") {
			t.Fatalf("clear Set-Cookie: %q", sc)
		}
		c.Expect(401, "GET", "/api/auth/self", nil)
		c.Expect(401, "GET", "/api/device-models", nil)
		anon.Expect(204, "POST", "/api/testing/auth/clear", nil)
	})
}

func TestTestingSessionsOnlyInTestingMode(t *testing.T) {
	s := apitest.Start(t, testenv.New(t, "sqlite+local"))
	for _, p := range []string{"/api/testing/auth/session", "/api/testing/auth/clear", "/api/testing/auth/force-error?status=500"} {
		r := s.As("").Expect(400, "POST", p, map[string]any{"subject": "x", "roles": []string{"admin"}}).Map(t)
		if r["code"] != "ROUTE_NOT_AVAILABLE" {
			t.Fatalf("%s: %v", p, r)
		}
	}
	// A forged session cookie means nothing outside testing mode.
	c := s.As("")
	c.Header.Set("Cookie", "access_token=test-session-forged")
	c.Expect(401, "GET", "/api/auth/self", nil)
}

// GET /health/drain needs the DRAIN_AUTH_KEY bearer; afterwards readiness fails.
func TestDrain(t *testing.T) {
	get := func(t *testing.T, url, path, authz string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	drain := func(t *testing.T, url, authz string) (int, map[string]any) {
		t.Helper()
		return get(t, url, "/health/drain", authz)
	}
	unauthorized := map[string]any{"status": "unauthorized", "ready": false}

	// No key configured: every drain is refused.
	s := apitest.Start(t, testenv.New(t, "sqlite+local"))
	for _, authz := range []string{"", "Bearer ", "Bearer anything"} {
		if st, body := drain(t, s.URL, authz); st != 401 || fmt.Sprint(body) != fmt.Sprint(unauthorized) {
			t.Fatalf("drain without a key (%q): %d %v", authz, st, body)
		}
	}
	s.Expect(200, "GET", "/health/readyz", nil)

	key := "drain-secret-0123456789"
	s = apitest.Start(t, testenv.New(t, "sqlite+local"), "DRAIN_AUTH_KEY", key)
	for _, authz := range []string{"", "Bearer wrong", "Basic " + key, key, "Bearer " + key + "x"} {
		if st, body := drain(t, s.URL, authz); st != 401 || fmt.Sprint(body) != fmt.Sprint(unauthorized) {
			t.Fatalf("drain with %q: %d %v", authz, st, body)
		}
	}
	s.Expect(200, "GET", "/health/readyz", nil)
	if st, body := drain(t, s.URL, "Bearer "+key); st != 200 || body["ready"] != false {
		t.Fatalf("drain: %d %v", st, body)
	}
	if st, body := get(t, s.URL, "/health/readyz", ""); st != 503 || body["ready"] != false {
		t.Fatalf("readyz after drain: %d %v", st, body)
	}
	s.Expect(200, "GET", "/api/device-models", nil) // still serving until stopped
}
