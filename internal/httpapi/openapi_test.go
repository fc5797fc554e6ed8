package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// The OpenAPI document declares how to authenticate, scheme by scheme and per
// operation as the middleware enforces it, so the docs page's "Authorize" works.
func TestOpenAPIDeclaresSecuritySchemes(t *testing.T) {
	s := apitest.Start(t, testenv.New(t, "sqlite+local"))
	var doc struct {
		Components struct {
			SecuritySchemes map[string]struct{ Type, Scheme string } `json:"securitySchemes"`
		} `json:"components"`
		Paths map[string]map[string]struct {
			Security []map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(s.Expect(200, "GET", "/api/docs/openapi.json", nil).Body, &doc); err != nil {
		t.Fatal(err)
	}
	ss := doc.Components.SecuritySchemes
	if ss["bearerAuth"].Type != "http" || ss["bearerAuth"].Scheme != "bearer" || ss["deviceBasic"].Type != "http" || ss["deviceBasic"].Scheme != "basic" {
		t.Fatalf("security schemes: %+v", ss)
	}
	schemes := func(path, method string) string {
		op, ok := doc.Paths[path][method]
		if !ok {
			t.Fatalf("no operation %s %s", method, path)
		}
		var names []string
		for _, req := range op.Security {
			for n := range req {
				names = append(names, n)
			}
		}
		return strings.Join(names, ",")
	}
	for _, tc := range []struct{ path, method, want string }{
		{"/api/devices", "get", "bearerAuth"},
		{"/api/device-models/{model_id}/firmware", "post", "bearerAuth"},
		{"/api/pipeline/models/{code}/firmware", "post", "bearerAuth"},
		{"/api/iot/firmware-version", "get", "deviceBasic,bearerAuth"},
		{"/api/auth/self", "get", "deviceBasic,bearerAuth"},
		{"/api/testing/coredumps", "post", "bearerAuth"},
	} {
		if got := schemes(tc.path, tc.method); got != tc.want {
			t.Errorf("%s %s security %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			need := auth.Policy(strings.ToUpper(method), path)
			public := need == auth.Public || need == auth.TestingOnly
			if public != (len(op.Security) == 0) {
				t.Errorf("%s %s: public %v, security %v", method, path, public, op.Security)
			}
		}
	}
}

// enable_ota (like device_name and device_entity_id) is written through the config's
// enableOTA, which the document says; the field itself is not accepted as input.
func TestEnableOTAIsDocumentedAndWrittenThroughConfig(t *testing.T) {
	s := apitest.Start(t, testenv.New(t, "sqlite+local"))
	raw := string(s.Expect(200, "GET", "/api/docs/openapi.json", nil).Body)
	if !strings.Contains(raw, "Copied from the config's boolean enableOTA") {
		t.Fatal("the OpenAPI document does not say where enable_ota comes from")
	}
	mid := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "m1", "name": "M"}).Map(t)["id"]
	d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"enableOTA":true}`}).Map(t)
	if d["enable_ota"] != true {
		t.Fatalf("created: %v", d)
	}
	path := "/api/devices/" + jsonNumber(d["id"])
	up := s.Expect(200, "PUT", path, map[string]any{"config": `{"enableOTA":false}`, "active": true}).Map(t)
	if up["enable_ota"] != false {
		t.Fatalf("updated: %v", up)
	}
	s.Expect(400, "PUT", path, map[string]any{"config": `{}`, "active": true, "enable_ota": true})
	if got := s.Expect(200, "GET", path, nil).Map(t); got["enable_ota"] != false {
		t.Fatalf("a refused update changed the device: %v", got)
	}
}

func jsonNumber(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
