package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/auth/oidctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestOIDCKeyRotationAndCaching(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	is := oidctest.New(t)
	s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_CLIENT_ID", "iot-api")
	tok := func() string {
		return "Bearer " + is.Token(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"viewer"}})
	}
	first := tok()
	for i := 0; i < 5; i++ {
		s.As(first).Expect(200, "GET", "/api/device-models", nil)
	}
	if is.JWKSHits != 1 {
		t.Fatalf("JWKS fetched %d times for one key, want 1 (cached)", is.JWKSHits)
	}
	is.Rotate()
	s.As(tok()).Expect(200, "GET", "/api/device-models", nil)
	if is.JWKSHits != 2 {
		t.Fatalf("JWKS fetches after rotation = %d, want 2", is.JWKSHits)
	}
	// A token signed with the retired key no longer verifies.
	s.As(first).Expect(401, "GET", "/api/device-models", nil)
}

func TestCookieSessionsNeedSameOriginForWrites(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	is := oidctest.New(t)
	s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_AUDIENCE", "iot-api")
	jwt := is.Token(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"editor"}})
	c := s.As("")
	c.Header.Set("Cookie", "access_token="+jwt)
	c.Expect(200, "GET", "/api/device-models", nil)
	body := map[string]any{"code": "csrf", "name": "x"}
	r := c.Expect(403, "POST", "/api/device-models", body)
	if !strings.Contains(string(r.Body), "Cross-site") {
		t.Fatalf("%s", r.Body)
	}
	c.Expect(403, "POST", "/api/device-models", body, "Origin", "https://evil.example")
	host := strings.TrimPrefix(s.URL, "http://")
	c.Expect(201, "POST", "/api/device-models", body, "Origin", "http://"+host)
	if n := testenv.Count(t, env.DB, "device_models"); n != 1 {
		t.Fatalf("models = %d", n)
	}
}

func TestDeviceCredentialsRotationAndRateLimit(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "DEVICE_AUTH_FAILURES_PER_MINUTE", "3", "TRUST_PROXY_HEADERS", "true")
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m["id"], "config": `{"a":1}`}).Map(t)
		key, secret := d["key"].(string), d["secret"].(string)
		if len(secret) < 40 {
			t.Fatalf("weak secret %q", secret)
		}
		// The secret is never shown again.
		if got := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", int(d["id"].(float64))), nil).Map(t); got["secret"] != nil {
			t.Fatalf("secret leaked in GET: %v", got)
		}
		s.Basic(key, secret).Expect(200, "GET", "/api/iot/config", nil)
		cred := s.Expect(200, "POST", fmt.Sprintf("/api/devices/%d/credentials", int(d["id"].(float64))), nil).Map(t)
		newSecret := cred["secret"].(string)
		if cred["device_key"] != key || newSecret == secret {
			t.Fatalf("rotation: %v", cred)
		}
		s.Basic(key, secret).Expect(401, "GET", "/api/iot/config", nil)
		s.Basic(key, newSecret).Expect(200, "GET", "/api/iot/config", nil)

		// After 3 failures (one above, two more) from one source, that source is locked out,
		// even with the right secret.
		s.Basic(key, "wrong").Expect(401, "GET", "/api/iot/config", nil)
		s.Basic(key, "wrong").Expect(429, "GET", "/api/iot/config", nil)
		r := s.Basic(key, newSecret).Expect(429, "GET", "/api/iot/config", nil)
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		// Wrong secrets for this key from another source are refused with 429 too, but the
		// device itself (right secret) is not locked out by someone who knows its key.
		s.Basic(key, "wrong").Expect(429, "GET", "/api/iot/config", nil, "X-Forwarded-For", "10.9.9.9")
		s.Basic(key, newSecret).Expect(200, "GET", "/api/iot/config", nil, "X-Forwarded-For", "10.8.8.8")
		// Admin API is unaffected.
		s.Expect(200, "GET", "/api/devices", nil)
		// Unknown keys also count against the source address (which is locked now).
		s.Basic("zzzzzzzz", "x").Expect(429, "GET", "/api/iot/config", nil)
	})
}

func TestInsecureDevMode(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env, "AUTH_MODE", "insecure-dev")
	open := s.As("")
	m := open.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
	d := open.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m["id"], "config": `{"k":"v"}`}).Map(t)
	r := open.Expect(200, "GET", "/api/iot/config?device_key="+d["key"].(string), nil)
	if string(r.Body) != `{"k":"v"}` {
		t.Fatalf("%s", r.Body)
	}
	open.Expect(401, "GET", "/api/iot/config", nil)
	open.Expect(404, "GET", "/api/iot/config?device_key=abcdefgh", nil)
}

func TestTestingRoutesOnlyInTestingMode(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	r := s.As("").Expect(400, "POST", "/api/testing/coredumps", map[string]any{"device_id": 1}).Map(t)
	if r["code"] != "ROUTE_NOT_AVAILABLE" {
		t.Fatalf("%v", r)
	}
}

func TestAuditLogRecordsWrites(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		s.Role("editor").Expect(201, "POST", "/api/device-models", map[string]any{"code": "a1", "name": "A"})
		s.Role("viewer").Expect(200, "GET", "/api/device-models", nil)
		s.Role("viewer").Expect(403, "POST", "/api/device-models", map[string]any{"code": "a2", "name": "A"})
		s.Role("editor").Expect(409, "POST", "/api/device-models", map[string]any{"code": "a1", "name": "A"})
		a := s.Expect(200, "GET", "/api/audit?limit=1", nil).Map(t)
		if a["count"].(float64) != 2 {
			t.Fatalf("audit count: %v", a)
		}
		e := a["entries"].([]any)[0].(map[string]any)
		if e["actor"] != "test-editor" || e["method"] != "POST" || e["route"] != "/api/device-models" || e["status"].(float64) != 409 {
			t.Fatalf("latest entry: %v", e)
		}
		older := s.Expect(200, "GET", fmt.Sprintf("/api/audit?before_id=%d", int(e["id"].(float64))), nil).Map(t)
		if es := older["entries"].([]any); len(es) != 1 || es[0].(map[string]any)["status"].(float64) != 201 {
			t.Fatalf("paging: %v", older)
		}
		_ = http.MethodGet
	})
}

// TestAuditLogRecordsDeviceUploadsOnce: a device's core dump upload is audited inside the
// upload's transaction; every upload request still leaves exactly one entry, with the
// status it answered, whether it was stored or turned away.
func TestAuditLogRecordsDeviceUploadsOnce(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "COREDUMP_UPLOADS_PER_HOUR", "1")
		dev := newCoredumpDevice(t, s, "audited")
		count := func() int {
			return int(s.Expect(200, "GET", "/api/audit?limit=1", nil).Map(t)["count"].(float64))
		}
		latest := func() map[string]any {
			return s.Expect(200, "GET", "/api/audit?limit=1", nil).Map(t)["entries"].([]any)[0].(map[string]any)
		}
		before := count()
		for _, want := range []int{201, 429, 400} {
			chip := "esp32"
			if want == 400 {
				chip = "pic16"
			}
			if r := dev.upload(s, chip, "1.0", []byte("dump")); r.Status != want {
				t.Fatalf("upload: %d %s, want %d", r.Status, r.Body, want)
			}
			before++
			if n := count(); n != before {
				t.Fatalf("after a %d upload: %d audit entries, want %d", want, n, before)
			}
			e := latest()
			if e["actor_kind"] != "device" || e["actor"] != dev.key || e["method"] != "POST" || e["path"] != "/api/iot/coredump" ||
				e["route"] != "/api/iot/coredump" || int(e["status"].(float64)) != want || e["request_id"] == "" {
				t.Fatalf("entry for the %d upload: %v", want, e)
			}
		}
	})
}

// A role refusal says which role the route needs.
func TestRoleRefusalNamesTheRoleNeeded(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	for _, tc := range []struct{ role, method, path, want string }{
		{"viewer", "POST", "/api/device-models", "it needs the editor role (or admin)"},
		{"editor", "GET", "/api/tokens", "it needs the admin role"},
		{"pipeline", "GET", "/api/device-models", "it needs the viewer role (or editor, admin)"},
		{"admin", "GET", "/api/pipeline/models/x/firmware-version", "it needs the pipeline role"},
	} {
		var body any
		if tc.method == "POST" {
			body = map[string]any{"code": "a2", "name": "A"}
		}
		r := s.Role(tc.role).Expect(403, tc.method, tc.path, body).Map(t)
		if msg, _ := r["error"].(string); r["code"] != "AUTHORIZATION_FAILED" || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s %s as %s: %v, want %q", tc.role, tc.method, tc.path, tc.role, r, tc.want)
		}
	}
}
