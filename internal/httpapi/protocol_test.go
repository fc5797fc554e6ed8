package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// headIgnored are the headers that may differ between two requests of the same
// resource; everything else of a HEAD answer must equal the GET's.
var headIgnored = map[string]bool{"Date": true, "X-Request-Id": true, "Transfer-Encoding": true}

// TestEveryGetRouteAnswersHead: esp_https_ota sends HEAD before a partial download and
// gives up on anything but 200, so every GET route of the OpenAPI document (downloads,
// device routes, the CI scripts) answers HEAD with the GET's status and headers and no body.
func TestEveryGetRouteAnswersHead(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "lamp")
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid),
			bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"enableOTA":true}`}).Map(t)
		dev := s.Basic(d["key"].(string), d["secret"].(string))
		cid := int(dev.Expect(201, "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", []byte("not really a core dump")).Map(t)["coredump_id"].(float64))
		// A real crash, decoded, makes a crash group.
		real, _, _ := caseDump(t, "esp32c3")
		rid := int64(dev.Expect(201, "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", real).Map(t)["coredump_id"].(float64))
		if err := s.App.Decoding.Decode(context.Background(), rid); err != nil {
			t.Fatal(err)
		}
		gid := int(s.Expect(200, "GET", "/api/crash-groups", nil).Map(t)["crash_groups"].([]any)[0].(map[string]any)["id"].(float64))
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware?make_current=false", mid),
			bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.1"}))
		roID := int(s.Expect(201, "POST", fmt.Sprintf("/api/device-models/%d/rollouts", mid),
			map[string]any{"version": "1.0.1", "stages": []map[string]any{{"percent": 100}}}).Map(t)["id"].(float64))
		values := map[string]string{"model_id": fmt.Sprint(mid), "device_id": fmt.Sprint(int(d["id"].(float64))),
			"coredump_id": fmt.Sprint(cid), "version": "1.0.0", "artifact": "firmware.bin", "code": "lamp", "crash_group_id": fmt.Sprint(gid),
			"rollout_id": fmt.Sprint(roID)}

		var paths []string
		for p, item := range s.App.HTTP.API().OpenAPI().Paths {
			if item.Get != nil {
				paths = append(paths, p)
			}
		}
		sort.Strings(paths)
		param := regexp.MustCompile(`\{([a-z_]+)\}`)
		for _, tmpl := range paths {
			path := param.ReplaceAllStringFunc(tmpl, func(m string) string { return values[strings.Trim(m, "{}")] })
			c := s
			switch {
			case strings.HasPrefix(path, "/api/iot/"):
				c = dev
			case strings.HasPrefix(path, "/api/pipeline/"):
				c = s.Role("pipeline")
			}
			get := c.Do("GET", path, nil)
			head := c.Do("HEAD", path, nil)
			if get.Status >= 400 {
				t.Errorf("GET %s: %d %s (the test's data should make every GET succeed)", path, get.Status, get.Body)
			}
			if head.Status != get.Status || len(head.Body) != 0 {
				t.Errorf("HEAD %s: status %d with %d body bytes, GET answered %d", path, head.Status, len(head.Body), get.Status)
				continue
			}
			for k := range mergeKeys(get.Header, head.Header) {
				if !headIgnored[k] && get.Header.Get(k) != head.Header.Get(k) {
					t.Errorf("HEAD %s: %s %q, GET has %q", path, k, head.Header.Get(k), get.Header.Get(k))
				}
			}
		}
		// The device's OTA download: a ranged HEAD too, as esp_https_ota's partial download sends.
		r := dev.Expect(206, "HEAD", "/api/iot/firmware", nil, "Range", "bytes=0-99")
		if r.Header.Get("Content-Length") != "100" || !strings.HasPrefix(r.Header.Get("Content-Range"), "bytes 0-99/") {
			t.Fatalf("ranged HEAD: %v", r.Header)
		}
	})
}

func mergeKeys(a, b http.Header) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// TestMethodNotAllowedCarriesAllow: a real 405 names the methods the path answers.
func TestMethodNotAllowedCarriesAllow(t *testing.T) {
	s := apitest.Start(t, testenv.New(t, "sqlite+local"))
	for _, tc := range []struct{ method, path, allow string }{
		{"PATCH", "/api/device-models", "GET, HEAD, POST"},
		{"POST", "/api/pipeline/upload.sh", "GET, HEAD"},
		{"HEAD", "/api/device-models/1/firmware-version", "PUT"},
		{"DELETE", "/health/healthz", "GET, HEAD"},
	} {
		r := s.Do(tc.method, tc.path, nil)
		if r.Status != 405 || r.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, r.Status, r.Header.Get("Allow"), tc.allow)
		}
		if tc.method != "HEAD" && r.Map(t)["code"] != "METHOD_NOT_ALLOWED" {
			t.Errorf("%s %s: %s", tc.method, tc.path, r.Body)
		}
	}
}

// TestListRoutesRefuseUnknownQueryParameters: a mistyped filter must not return the
// whole collection; the declared parameters keep working.
func TestListRoutesRefuseUnknownQueryParameters(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		m1, m2 := newModel(t, s, "lamp"), newModel(t, s, "fan")
		newDevice(t, s, m1)
		newDevice(t, s, m2)
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m1, "config": `{}`}).Map(t)
		did := int(d["id"].(float64))

		r := s.Expect(400, "GET", fmt.Sprintf("/api/devices?device_model_id=%d", m1), nil).Map(t)
		if r["code"] != "VALIDATION_FAILED" || !strings.Contains(r["error"].(string), `"device_model_id"`) || !strings.Contains(r["error"].(string), "model_id") {
			t.Fatalf("mistyped filter: %v", r)
		}
		if got := s.Expect(200, "GET", fmt.Sprintf("/api/devices?model_id=%d", m1), nil).Map(t)["count"]; got != 2.0 {
			t.Fatalf("model_id filter: count %v, want 2", got)
		}
		for _, p := range []string{
			"/api/device-models?cod=lamp",
			"/api/devices?model_id=1&modelid=1",
			"/api/tokens?rolee=admin",
			"/api/audit?limit=5&beforeid=3",
			fmt.Sprintf("/api/devices/%d/coredumps?limit=5&pagee=2", did),
			fmt.Sprintf("/api/device-models/%d/firmware-versions?alll=1", m1),
		} {
			u, _ := url.Parse(p)
			r := s.Expect(400, "GET", p, nil).Map(t)
			bad := ""
			for k := range u.Query() {
				if !slices.Contains([]string{"model_id", "limit"}, k) {
					bad = k
				}
			}
			if !strings.Contains(r["error"].(string), `"`+bad+`"`) {
				t.Errorf("%s: %v does not name %q", p, r, bad)
			}
		}
		s.Expect(200, "GET", "/api/audit?limit=5&before_id=3", nil)
		s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps?limit=5", did), nil)
	})
}

// TestPathIDsThatAreNotNumbersAreNotFound: like the older service (integer route
// converters), /api/device-models/abc names no resource: 404, not 400. An empty
// firmware body is refused before the model is looked up.
func TestPathIDsThatAreNotNumbersAreNotFound(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "lamp")
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)
		did := int(d["id"].(float64))
		for _, tc := range []struct{ method, path string }{
			{"GET", "/api/device-models/abc"},
			{"GET", "/api/device-models/0"},
			{"PUT", "/api/device-models/abc"},
			{"DELETE", "/api/device-models/-3"},
			{"GET", "/api/devices/abc"},
			{"GET", "/api/devices/abc/coredumps"},
			{"GET", fmt.Sprintf("/api/devices/%d/coredumps/x", did)},
			{"GET", fmt.Sprintf("/api/devices/%d/coredumps/x/download", did)},
			{"GET", "/api/devices/x/coredumps/1/download"},
			{"GET", "/api/device-models/abc/firmware"},
			{"POST", "/api/device-models/abc/firmware"},
			{"GET", "/api/device-models/abc/firmware-versions/1.0.0/firmware.bin"},
			{"DELETE", "/api/tokens/abc"},
		} {
			var body any
			if tc.method == "PUT" || tc.method == "POST" {
				body = `{"name":"x"}`
			}
			r := s.Do(tc.method, tc.path, body)
			if r.Status != 404 || r.Map(t)["code"] != "RECORD_NOT_FOUND" {
				t.Errorf("%s %s: %d %s, want 404 RECORD_NOT_FOUND", tc.method, tc.path, r.Status, r.Body)
			}
		}
		for _, id := range []int{mid, 999999} {
			r := s.Expect(400, "POST", fmt.Sprintf("/api/device-models/%d/firmware", id), []byte{}).Map(t)
			if r["error"] != "No firmware content provided" {
				t.Errorf("empty body for model %d: %v", id, r)
			}
		}
		// The pipeline route looks the model up first, as the older service did.
		s.Role("pipeline").Expect(404, "POST", "/api/pipeline/models/nope/firmware", []byte{})
		s.Role("pipeline").Expect(400, "POST", "/api/pipeline/models/lamp/firmware", []byte{})
	})
}

// TestMetricsLabelOnlyKnownMethods: made-up methods must not grow /metrics.
func TestMetricsLabelOnlyKnownMethods(t *testing.T) {
	s := apitest.Start(t, testenv.New(t, "sqlite+local"))
	for i := range 40 {
		s.Do(fmt.Sprintf("MADEUP%d", i), "/api/device-models", nil)
		s.As("").Do(fmt.Sprintf("X-%d", i), fmt.Sprintf("/nope/%d", i), nil)
	}
	s.Expect(200, "GET", "/api/device-models", nil)
	body := string(s.Expect(200, "GET", "/metrics", nil).Body)
	methods := map[string]bool{}
	for _, m := range regexp.MustCompile(`iotsupport_http_request[a-z_]*\{[^}]*method="([^"]*)"`).FindAllStringSubmatch(body, -1) {
		methods[m[1]] = true
	}
	known := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER"}
	for m := range methods {
		if !slices.Contains(known, m) {
			t.Errorf("metrics carry method label %q", m)
		}
	}
	if !methods["OTHER"] || !methods["GET"] {
		t.Fatalf("method labels %v, want GET and OTHER", methods)
	}
	if !strings.Contains(body, `iotsupport_http_requests_total{method="OTHER",route="unmatched",status="405"} 40`) {
		t.Fatalf("made-up methods not counted as OTHER:\n%s", grepLines(body, "iotsupport_http_requests_total"))
	}
	for _, l := range strings.Split(grepLines(body, "iotsupport_http_requests_total{"), "\n") {
		if strings.Contains(l, "/nope/") {
			t.Fatalf("raw path as route label: %s", l)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTokenRevokeByIDAndByNameDoNotOverlap: DELETE /api/tokens/8 revokes the token with
// id 8 only, never one named "8"; names (with "/" percent-encoded) have their own path.
func TestTokenRevokeByIDAndByNameDoNotOverlap(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		first := int(s.Expect(201, "POST", "/api/tokens", map[string]any{"name": "first", "role": "viewer"}).Map(t)["id"].(float64))
		named := int(s.Expect(201, "POST", "/api/tokens", map[string]any{"name": fmt.Sprint(first), "role": "viewer"}).Map(t)["id"].(float64))
		slash := int(s.Expect(201, "POST", "/api/tokens", map[string]any{"name": "ci/main", "role": "pipeline"}).Map(t)["id"].(float64))
		revoked := func() map[int]bool {
			out := map[int]bool{}
			for _, tk := range s.Expect(200, "GET", "/api/tokens", nil).Map(t)["tokens"].([]any) {
				m := tk.(map[string]any)
				out[int(m["id"].(float64))] = m["revoked_at"] != nil
			}
			return out
		}

		s.Expect(204, "DELETE", fmt.Sprintf("/api/tokens/%d", first), nil)
		if r := revoked(); !r[first] || r[named] {
			t.Fatalf("DELETE /api/tokens/%d: revoked %v, want only id %d", first, r, first)
		}
		s.Expect(404, "DELETE", fmt.Sprintf("/api/tokens/%d", first), nil)
		s.Expect(204, "DELETE", fmt.Sprintf("/api/tokens/by-name/%d", first), nil)
		if r := revoked(); !r[named] || r[slash] {
			t.Fatalf("by name: %v", r)
		}
		s.Expect(204, "DELETE", "/api/tokens/by-name/"+url.PathEscape("ci/main"), nil)
		if r := revoked(); !r[slash] {
			t.Fatalf("name with a slash not revoked: %v", r)
		}
		s.Expect(404, "DELETE", "/api/tokens/by-name/ci%2Fmain", nil)
		s.Expect(404, "DELETE", "/api/tokens/by-name/nobody", nil)
	})
}

// TestSecurityHeadersEverywhere: nosniff and frame-ancestors 'none' on every response,
// errors and docs assets included; the docs file server answers with the envelope.
func TestSecurityHeadersEverywhere(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "lamp")
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid),
			bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		key, secret := newDevice(t, s, mid)
		docs := "default-src 'self'"
		for _, tc := range []struct {
			c              *apitest.Server
			method, path   string
			status         int
			csp            string // a part the Content-Security-Policy must contain besides frame-ancestors
			wantJSONErrors bool
		}{
			{s, "GET", "/api/device-models", 200, "", false},
			{s.As(""), "GET", "/api/device-models", 401, "", true},
			{s.Role("viewer"), "POST", "/api/device-models", 403, "", true},
			{s, "GET", "/api/nope", 404, "", true},
			{s, "PATCH", "/api/device-models", 405, "", true},
			{s.Basic(key, secret), "GET", "/api/iot/firmware", 200, "", false},
			{s, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions/1.0.0/firmware.elf", mid), 200, "", false},
			{s, "GET", "/metrics", 200, "", false},
			{s, "GET", "/health/readyz", 200, "", false},
			{s, "GET", "/api/docs/openapi.json", 200, "", false},
			{s, "GET", "/api/docs", 200, docs, false},
			{s, "GET", "/api/docs/assets/swagger-ui-bundle.js", 200, docs, false},
			{s, "GET", "/api/docs/assets/swagger-ui.css", 200, docs, false},
			{s, "HEAD", "/api/docs/assets/init.js", 200, docs, false},
			{s, "GET", "/api/docs/assets/nope.js", 404, "", true},
			{s, "GET", "/api/docs/assets/", 404, "", true},
			{s, "GET", "/api/docs/assets/index.html", 200, docs, false},
			{s, "GET", "/api/pipeline/upload.sh", 200, "", false},
		} {
			r := tc.c.Do(tc.method, tc.path, nil) // Do checks the envelope of every error body
			if r.Status != tc.status {
				t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.path, r.Status, tc.status, r.Body)
				continue
			}
			csp := r.Header.Get("Content-Security-Policy")
			if r.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, tc.csp) {
				t.Errorf("%s %s: X-Content-Type-Options %q, CSP %q", tc.method, tc.path, r.Header.Get("X-Content-Type-Options"), csp)
			}
			if tc.wantJSONErrors && r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: error as %q", tc.method, tc.path, r.Header.Get("Content-Type"))
			}
		}
	})
}
