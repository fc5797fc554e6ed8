package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/auth/oidctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestOIDCKeyRotationAndCaching(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	is := oidctest.New(t)
	// Refreshes for unknown key ids are rate-limited (TestForgedKeyIDsDoNotFetchJWKS); here
	// the limit is made negligible so the rotation is followed at once.
	s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_CLIENT_ID", "iot-api",
		"OIDC_JWKS_MIN_REFRESH_INTERVAL", "1ns")
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

// TestForgedKeyIDsDoNotFetchJWKS: tokens naming a key id the issuer never published make
// the server fetch the JWKS at most once per OIDC_JWKS_MIN_REFRESH_INTERVAL.
func TestForgedKeyIDsDoNotFetchJWKS(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	is := oidctest.New(t)
	s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_CLIENT_ID", "iot-api",
		"OIDC_JWKS_MIN_REFRESH_INTERVAL", "1h", "BEARER_AUTH_FAILURES_PER_MINUTE", "1000")
	good := "Bearer " + is.Token(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"viewer"}})
	s.As(good).Expect(200, "GET", "/api/device-models", nil)
	for i := 0; i < 20; i++ {
		forged := is.Token(oidctest.Claims{Subject: "mallory", Audience: "iot-api", RealmRoles: []string{"admin"}, SignWithForeign: true})
		s.As("Bearer "+forged).Expect(401, "GET", "/api/device-models", nil)
	}
	s.As(good).Expect(200, "GET", "/api/device-models", nil)
	if is.JWKSHits != 1 {
		t.Fatalf("JWKS fetched %d times for 1 real key and 20 forged key ids, want 1", is.JWKSHits)
	}
}

// TestBearerRefusalsAreGenericAndLimited: a refused JWT's 401 does not say which issuer or
// audience was expected, and failed bearer logins are limited per source address.
func TestBearerRefusalsAreGenericAndLimited(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	is := oidctest.New(t)
	s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_CLIENT_ID", "iot-api",
		"BEARER_AUTH_FAILURES_PER_MINUTE", "3", "TRUST_PROXY_HEADERS", "true")
	const src = "X-Forwarded-For"
	bad := []oidctest.Claims{
		{Subject: "alice", Audience: "other-api", RealmRoles: []string{"viewer"}},
		{Subject: "alice", Audience: "iot-api", Issuer: "https://evil.example", RealmRoles: []string{"viewer"}},
		{Subject: "alice", Audience: "iot-api", Expiry: time.Now().Add(-time.Hour), RealmRoles: []string{"viewer"}},
	}
	var texts []string
	for _, c := range bad {
		r := s.As("Bearer "+is.Token(c)).Expect(401, "GET", "/api/device-models", nil, src, "10.1.1.1")
		b := string(r.Body)
		for _, leak := range []string{is.URL, "iot-api", "other-api", "evil.example", "issuer", "audience"} {
			if strings.Contains(b, leak) {
				t.Fatalf("401 body reveals %q: %s", leak, b)
			}
		}
		texts = append(texts, r.Map(t)["details"].(map[string]any)["message"].(string))
	}
	if texts[0] != texts[1] || texts[1] != texts[2] {
		t.Fatalf("401 texts differ by cause: %q", texts)
	}
	// Three failures from 10.1.1.1: it is now refused, even with a good token.
	good := "Bearer " + is.Token(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"viewer"}})
	r := s.As(good).Expect(429, "GET", "/api/device-models", nil, src, "10.1.1.1")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	s.As(good).Expect(200, "GET", "/api/device-models", nil, src, "10.2.2.2")
	// Unknown API tokens count the same way.
	for i := 0; i < 3; i++ {
		s.As("Bearer iots_not-a-token").Expect(401, "GET", "/api/device-models", nil, src, "10.3.3.3")
	}
	s.Role("viewer").Expect(429, "GET", "/api/device-models", nil, src, "10.3.3.3")
	s.Role("viewer").Expect(200, "GET", "/api/device-models", nil, src, "10.4.4.4")
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

		// After 3 wrong secrets (one above, two more) the key is locked for wrong secrets,
		// from any source; its device (right secret) is not locked out by whoever knows the key.
		s.Basic(key, "wrong").Expect(401, "GET", "/api/iot/config", nil)
		r := s.Basic(key, "wrong").Expect(429, "GET", "/api/iot/config", nil)
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		s.Basic(key, "wrong").Expect(429, "GET", "/api/iot/config", nil, "X-Forwarded-For", "10.9.9.9")
		s.Basic(key, newSecret).Expect(200, "GET", "/api/iot/config", nil)
		s.Basic(key, newSecret).Expect(200, "GET", "/api/iot/config", nil, "X-Forwarded-For", "10.8.8.8")
		// Admin API is unaffected.
		s.Expect(200, "GET", "/api/devices", nil)
	})
}

// TestDeviceLoginFailuresDoNotLockOutASite: devices of one site share an address (NAT).
// One misconfigured device failing over and over is limited by its key; the others keep
// checking in and uploading. Unknown keys are limited per address, at a far higher bound,
// and even then a correct login from that address goes through.
func TestDeviceLoginFailuresDoNotLockOutASite(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "DEVICE_AUTH_FAILURES_PER_MINUTE", "3", "DEVICE_AUTH_UNKNOWN_KEY_FAILURES_PER_MINUTE", "20")
		bad := newCoredumpDevice(t, s, "site")
		good := newCoredumpDevice(t, s, "site")
		for i := 0; i < 12; i++ {
			want := 401
			if i >= 2 {
				want = 429
			}
			s.Basic(bad.key, "stale-secret").Expect(want, "GET", "/api/iot/config", nil)
		}
		s.Basic(good.key, good.secret).Expect(200, "GET", "/api/iot/config", nil)
		s.Basic(good.key, good.secret).Expect(200, "GET", "/api/iot/firmware-version", nil)
		if r := good.upload(s, "esp32", "1.0", []byte("dump")); r.Status != 201 {
			t.Fatalf("upload of a good device behind the failing one: %d %s", r.Status, r.Body)
		}
		// The failing device itself is let in as soon as it has its right secret.
		s.Basic(bad.key, bad.secret).Expect(200, "GET", "/api/iot/config", nil)

		// Unknown keys from this address: 19 answered 401, the 20th and later 429 -- for
		// known keys with a wrong secret too, so the answer does not tell which keys exist.
		for i := 0; i < 19; i++ {
			s.Basic(fmt.Sprintf("zz%06d", i), "x").Expect(401, "GET", "/api/iot/config", nil)
		}
		s.Basic("zzzzzzzz", "x").Expect(429, "GET", "/api/iot/config", nil)
		s.Basic(good.key, "wrong").Expect(429, "GET", "/api/iot/config", nil)
		s.Basic(good.key, good.secret).Expect(200, "GET", "/api/iot/config", nil)
		if r := good.upload(s, "esp32", "1.1", []byte("dump")); r.Status != 201 {
			t.Fatalf("upload after key guessing from the same address: %d %s", r.Status, r.Body)
		}
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
// upload's transaction, exactly once. Refused device requests (429 from a crash loop, a
// bad upload, a junk path) and writes that reach no route change nothing: they are
// counted in iotsupport_refused_writes_total, not stored.
func TestAuditLogRecordsDeviceUploadsOnce(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "COREDUMP_UPLOADS_PER_HOUR", "1")
		dev := newCoredumpDevice(t, s, "audited")
		count := func() int {
			return int(s.Expect(200, "GET", "/api/audit?limit=1", nil).Map(t)["count"].(float64))
		}
		before := count()
		if r := dev.upload(s, "esp32", "1.0", []byte("dump")); r.Status != 201 {
			t.Fatalf("upload: %d %s", r.Status, r.Body)
		}
		if n := count(); n != before+1 {
			t.Fatalf("after a stored upload: %d audit entries, want %d", n, before+1)
		}
		e := s.Expect(200, "GET", "/api/audit?limit=1", nil).Map(t)["entries"].([]any)[0].(map[string]any)
		if e["actor_kind"] != "device" || e["actor"] != dev.key || e["method"] != "POST" || e["path"] != "/api/iot/coredump" ||
			e["route"] != "/api/iot/coredump" || int(e["status"].(float64)) != 201 || e["request_id"] == "" {
			t.Fatalf("entry for the upload: %v", e)
		}
		for i := 0; i < 5; i++ {
			if r := dev.upload(s, "esp32", "1.0", []byte("dump")); r.Status != 429 {
				t.Fatalf("upload over the limit: %d %s", r.Status, r.Body)
			}
		}
		if r := dev.upload(s, "pic16", "1.0", []byte("dump")); r.Status != 400 {
			t.Fatalf("upload with a bad chip: %d %s", r.Status, r.Body)
		}
		s.Basic(dev.key, dev.secret).Expect(404, "POST", "/api/iot/no-such-thing", map[string]any{"x": 1})
		s.Expect(404, "POST", "/api/no-such-thing", map[string]any{"x": 1})
		if n := count(); n != before+1 {
			t.Fatalf("refused requests wrote audit rows: %d entries, want %d", n, before+1)
		}
		got := map[string]float64{}
		for _, m := range gather(t, s, "iotsupport_refused_writes_total") {
			got[m.labels["kind"]+" "+m.labels["route"]+" "+m.labels["status"]] += m.value
		}
		want := map[string]float64{"device /api/iot/coredump 429": 5, "device /api/iot/coredump 400": 1,
			"device unmatched 404": 1, "token unmatched 404": 1}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("refused writes counted %v, want %v", got, want)
			}
		}
	})
}

// sample is one series of a gathered metric: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// gather returns the series of the named counter in the server's registry.
func gather(t *testing.T, s *apitest.Server, name string) []sample {
	t.Helper()
	fams, err := s.App.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out = append(out, sample{labels: l, value: m.GetCounter().GetValue()})
		}
	}
	return out
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
