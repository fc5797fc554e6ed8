package httpapi_test

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/auth/oidctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// routeNeeds is the authorization table: every route of the OpenAPI document must be
// listed with what it requires and the status an authorised probe gets (the probe uses
// ids that do not exist and an empty JSON body, so it changes nothing).
var routeNeeds = map[string]struct {
	need string // device, pipeline, viewer, editor, admin, public, testing, any (authenticated)
	ok   int
}{
	"GET /api/device-models":                    {"viewer", 200},
	"POST /api/device-models":                   {"editor", 400},
	"GET /api/device-models/{model_id}":         {"viewer", 404},
	"PUT /api/device-models/{model_id}":         {"editor", 404},
	"DELETE /api/device-models/{model_id}":      {"editor", 404},
	"GET /api/devices":                          {"viewer", 200},
	"POST /api/devices":                         {"editor", 400},
	"GET /api/devices/{device_id}":              {"viewer", 404},
	"PUT /api/devices/{device_id}":              {"editor", 400},
	"DELETE /api/devices/{device_id}":           {"editor", 404},
	"POST /api/devices/{device_id}/credentials": {"editor", 404},
	"GET /api/tokens":                           {"admin", 200},
	"POST /api/tokens":                          {"admin", 400},
	"DELETE /api/tokens/{token_id}":             {"admin", 404},
	"DELETE /api/tokens/by-name/{name}":         {"admin", 404},
	"GET /api/audit":                            {"admin", 200},
	"GET /api/iot/config":                       {"device", 200},
	"GET /api/auth/self":                        {"any", 200},
	"POST /api/testing/auth/session":            {"testing", 400},
	"POST /api/testing/auth/clear":              {"testing", 400},
	"POST /api/testing/auth/force-error":        {"testing", 400},

	// Core dumps (testing routes answer 400 ROUTE_NOT_AVAILABLE to everyone outside APP_ENV=testing).
	"POST /api/iot/coredump":                                        {"device", 400},
	"GET /api/devices/{device_id}/coredumps":                        {"viewer", 404},
	"DELETE /api/devices/{device_id}/coredumps":                     {"editor", 404},
	"GET /api/devices/{device_id}/coredumps/{coredump_id}":          {"viewer", 404},
	"DELETE /api/devices/{device_id}/coredumps/{coredump_id}":       {"editor", 404},
	"GET /api/devices/{device_id}/coredumps/{coredump_id}/download": {"viewer", 404},
	"POST /api/testing/coredumps":                                   {"testing", 400},
	"POST /api/devices/{device_id}/coredumps/{coredump_id}/reparse": {"editor", 404},
	"GET /api/crash-groups":                                         {"viewer", 200},
	"GET /api/crash-groups/{crash_group_id}":                        {"viewer", 404},
	"GET /api/crash-groups/{crash_group_id}/devices":                {"viewer", 404},
	"PUT /api/crash-groups/{crash_group_id}":                        {"editor", 400},
	"POST /api/crash-groups/{crash_group_id}/merge":                 {"editor", 400},

	// Firmware.
	"GET /api/iot/firmware":                                                    {"device", 404},
	"GET /api/iot/firmware-version":                                            {"device", 200},
	"POST /api/device-models/{model_id}/firmware":                              {"editor", 404},
	"GET /api/device-models/{model_id}/firmware":                               {"viewer", 404},
	"GET /api/device-models/{model_id}/fleet":                                  {"viewer", 404},
	"GET /api/device-models/{model_id}/firmware-versions":                      {"viewer", 404},
	"PUT /api/device-models/{model_id}/firmware-version":                       {"editor", 400},
	"GET /api/device-models/{model_id}/firmware-versions/{version}/{artifact}": {"viewer", 404},
	"DELETE /api/device-models/{model_id}/firmware-versions/{version}":         {"editor", 404},
	"POST /api/pipeline/models/{code}/firmware":                                {"pipeline", 404},
	"GET /api/pipeline/models/{code}/firmware-version":                         {"pipeline", 404},
	"GET /api/pipeline/upload.sh":                                              {"public", 200},
	"GET /api/pipeline/upload.ps1":                                             {"public", 200},

	// Rollouts and pins.
	"POST /api/device-models/{model_id}/rollouts":                       {"editor", 400},
	"GET /api/device-models/{model_id}/rollouts":                        {"viewer", 404},
	"GET /api/device-models/{model_id}/rollouts/{rollout_id}":           {"viewer", 404},
	"POST /api/device-models/{model_id}/rollouts/{rollout_id}/advance":  {"editor", 404},
	"POST /api/device-models/{model_id}/rollouts/{rollout_id}/pause":    {"editor", 404},
	"POST /api/device-models/{model_id}/rollouts/{rollout_id}/resume":   {"editor", 404},
	"POST /api/device-models/{model_id}/rollouts/{rollout_id}/abort":    {"editor", 404},
	"POST /api/device-models/{model_id}/rollouts/{rollout_id}/complete": {"editor", 404},
	"GET /api/devices/{device_id}/firmware-version":                     {"viewer", 404},
	"PUT /api/devices/{device_id}/firmware-version":                     {"editor", 400},

	// Provisioning.
	"POST /api/devices/{device_id}/provisioning":            {"editor", 404},
	"POST /api/device-models/{model_id}/provisioning-batch": {"editor", 400},
	"GET /api/iot/provisioning":                             {"device", 200},
}

var pathParam = regexp.MustCompile(`\{[a-z_]+\}`)

func TestEveryRouteAgainstEveryIdentity(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	is := oidctest.New(t)
	// The wrong-secret and bad-token identities fail on every route; keep the lockouts out
	// of this test's way.
	s := apitest.Start(t, env, "OIDC_ENABLED", "true", "OIDC_ISSUER_URL", is.URL, "OIDC_AUDIENCE", "iot-api",
		"DEVICE_AUTH_FAILURES_PER_MINUTE", "100000", "DEVICE_AUTH_UNKNOWN_KEY_FAILURES_PER_MINUTE", "1000000",
		"BEARER_AUTH_FAILURES_PER_MINUTE", "1000000")

	m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
	mid := int(m["id"].(float64))
	devA := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"who":"A"}`}).Map(t)
	devB := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"who":"B"}`}).Map(t)
	devOff := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"who":"off"}`}).Map(t)
	s.Expect(200, "PUT", fmt.Sprintf("/api/devices/%d", int(devOff["id"].(float64))), map[string]any{"config": `{"who":"off"}`, "active": false})
	revoked := s.Expect(201, "POST", "/api/tokens", map[string]any{"name": "old", "role": "admin"}).Map(t)["token"].(string)
	s.Expect(204, "DELETE", "/api/tokens/by-name/old", nil)

	jwt := func(c oidctest.Claims) string { return "Bearer " + is.Token(c) }
	ids := []struct {
		name string
		auth string
		kind string // what the identity is: none, viewer, editor, admin, pipeline, device, inactive, invalid
	}{
		{"none", "", "none"},
		{"viewer", "Bearer " + s.Tokens["viewer"], "viewer"},
		{"editor", "Bearer " + s.Tokens["editor"], "editor"},
		{"admin", "Bearer " + s.Tokens["admin"], "admin"},
		{"pipeline", "Bearer " + s.Tokens["pipeline"], "pipeline"},
		{"oidc-editor", jwt(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"editor"}}), "editor"},
		{"oidc-client-role-admin", jwt(oidctest.Claims{Subject: "root", Audience: "iot-api", ClientRoles: map[string][]string{"iot-api": {"admin"}}}), "admin"},
		{"oidc-no-role", jwt(oidctest.Claims{Subject: "bob", Audience: "iot-api", RealmRoles: []string{"offline_access"}}), "norole"},
		{"deviceA-basic", basic(devA["key"].(string), devA["secret"].(string)), "device"},
		{"deviceB-basic", basic(devB["key"].(string), devB["secret"].(string)), "device"},
		{"deviceA-jwt", jwt(oidctest.Claims{Subject: "svc", Audience: "iot-api", Azp: "iotdevice-lamp-" + devA["key"].(string)}), "device"},
		{"inactive-device", basic(devOff["key"].(string), devOff["secret"].(string)), "inactive"},
		{"device-wrong-secret", basic(devA["key"].(string), "nope"), "invalid"},
		{"expired-jwt", jwt(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"admin"}, Expiry: time.Now().Add(-time.Hour)}), "invalid"},
		{"wrong-audience-jwt", jwt(oidctest.Claims{Subject: "alice", Audience: "other", RealmRoles: []string{"admin"}}), "invalid"},
		{"unknown-key-jwt", jwt(oidctest.Claims{Subject: "alice", Audience: "iot-api", RealmRoles: []string{"admin"}, SignWithForeign: true}), "invalid"},
		{"revoked-token", "Bearer " + revoked, "invalid"},
		{"device-jwt-wrong-model", jwt(oidctest.Claims{Subject: "svc", Audience: "iot-api", Azp: "iotdevice-other-" + devA["key"].(string)}), "invalid"},
	}

	// Enumerate every operation from the OpenAPI document.
	var routes []string
	for path, item := range s.App.HTTP.API().OpenAPI().Paths {
		for method, op := range map[string]any{"GET": item.Get, "POST": item.Post, "PUT": item.Put, "DELETE": item.Delete, "PATCH": item.Patch} {
			if op != nil && fmt.Sprint(op) != "<nil>" {
				routes = append(routes, method+" "+path)
			}
		}
	}
	sort.Strings(routes)
	for _, r := range routes {
		if _, ok := routeNeeds[r]; !ok {
			t.Errorf("route %s is missing from the authorization table", r)
		}
	}
	if len(routes) < len(routeNeeds) {
		t.Errorf("table lists %d routes but the API has %d", len(routeNeeds), len(routes))
	}

	for _, r := range routes {
		spec, ok := routeNeeds[r]
		if !ok {
			continue
		}
		method, tmpl, _ := strings.Cut(r, " ")
		path := pathParam.ReplaceAllString(tmpl, "999999")
		for _, id := range ids {
			want := expected(spec.need, spec.ok, id.kind)
			var body any
			if method == "POST" || method == "PUT" {
				body = "{}"
			}
			got := s.As(id.auth).Do(method, path, body)
			if got.Status != want {
				t.Errorf("%s as %s: status %d, want %d (%s)", r, id.name, got.Status, want, got.Body)
			}
			if got.Status == 401 && got.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s as %s: 401 without WWW-Authenticate", r, id.name)
			}
		}
	}

	// Each device sees only its own config.
	for _, d := range []map[string]any{devA, devB} {
		r := s.Basic(d["key"].(string), d["secret"].(string)).Expect(200, "GET", "/api/iot/config", nil)
		if string(r.Body) != d["config"] || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("config for %s: %q %v", d["key"], r.Body, r.Header)
		}
	}
}

func basic(key, secret string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(key, secret)
	return req.Header.Get("Authorization")
}

// expected is the status an identity kind gets on a route with the given need.
func expected(need string, ok int, kind string) int {
	if need == "testing" || need == "public" {
		return ok // public routes ignore credentials; testing routes refuse before authentication
	}
	switch kind {
	case "none", "invalid":
		return 401
	case "inactive", "norole":
		if need == "any" { // who-am-I answers every authenticated caller
			return ok
		}
		return 403
	}
	allowed := false
	switch need {
	case "device":
		allowed = kind == "device"
	case "pipeline":
		allowed = kind == "pipeline"
	case "viewer":
		allowed = kind == "viewer" || kind == "editor" || kind == "admin"
	case "editor":
		allowed = kind == "editor" || kind == "admin"
	case "admin":
		allowed = kind == "admin"
	case "public", "any":
		allowed = true
	}
	if allowed {
		return ok
	}
	return 403
}
