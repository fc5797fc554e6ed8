package httpapi_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestDeviceModelsCRUD(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		created := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "thermo_v2", "name": "Thermostat"}).Map(t)
		id := int(created["id"].(float64))
		if created["code"] != "thermo_v2" || created["firmware_version"] != nil || created["has_config_schema"] != false ||
			created["device_count"].(float64) != 0 || created["config_schema"] != nil {
			t.Fatalf("created model: %v", created)
		}
		for _, f := range []string{"created_at", "updated_at"} {
			ts, _ := created[f].(string)
			if _, err := time.Parse(time.RFC3339, ts); err != nil || !strings.HasSuffix(ts, "Z") {
				t.Fatalf("%s = %q, want RFC 3339 UTC with Z", f, ts)
			}
		}

		// Duplicate code.
		dup := s.Expect(409, "POST", "/api/device-models", map[string]any{"code": "thermo_v2", "name": "Other"}).Map(t)
		if dup["code"] != "RECORD_EXISTS" || dup["error"] != "DeviceModel for thermo_v2 already exists" {
			t.Fatalf("duplicate: %v", dup)
		}
		// Invalid inputs.
		for _, body := range []map[string]any{
			{"code": "Bad-Code", "name": "x"},
			{"code": "", "name": "x"},
			{"code": strings.Repeat("a", 51), "name": "x"},
			{"code": "ok", "name": ""},
			{"code": "ok", "name": "   "},
			{"code": "ok", "name": "x", "config_schema": "{not json"},
			{"code": "ok", "name": "x", "config_schema": `{"type": 12}`},
			{"name": "x"},
		} {
			r := s.Expect(400, "POST", "/api/device-models", body).Map(t)
			if r["code"] != "VALIDATION_FAILED" {
				t.Fatalf("%v: %v", body, r)
			}
		}
		s.Expect(400, "POST", "/api/device-models", `{"code": "x", `)

		s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "alpha", "name": "A"})
		list := s.Expect(200, "GET", "/api/device-models", nil).Map(t)
		ms := list["device_models"].([]any)
		if list["count"].(float64) != 2 || ms[0].(map[string]any)["code"] != "alpha" || ms[1].(map[string]any)["code"] != "thermo_v2" {
			t.Fatalf("list not ordered by code: %v", list)
		}
		if _, has := ms[0].(map[string]any)["config_schema"]; has {
			t.Fatalf("summary carries config_schema: %v", ms[0])
		}

		// Update: name only, then schema; absent fields stay unchanged.
		schema := `{"type":"object","properties":{"deviceName":{"type":"string"}},"required":["deviceName"]}`
		up := s.Expect(200, "PUT", fmt.Sprintf("/api/device-models/%d", id), map[string]any{"name": "Thermostat 2"}).Map(t)
		if up["name"] != "Thermostat 2" || up["code"] != "thermo_v2" {
			t.Fatalf("update: %v", up)
		}
		up = s.Expect(200, "PUT", fmt.Sprintf("/api/device-models/%d", id), map[string]any{"config_schema": schema}).Map(t)
		if up["name"] != "Thermostat 2" || up["config_schema"] != schema || up["has_config_schema"] != true {
			t.Fatalf("update schema: %v", up)
		}
		s.Expect(404, "PUT", "/api/device-models/9999", map[string]any{"name": "x"})
		nf := s.Expect(404, "GET", "/api/device-models/9999", nil).Map(t)
		if nf["error"] != "DeviceModel 9999 was not found" || nf["code"] != "RECORD_NOT_FOUND" {
			t.Fatalf("not found: %v", nf)
		}
		s.Expect(404, "GET", "/api/device-models/abc", nil)

		// A model with devices cannot be deleted.
		s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": id, "config": `{"deviceName":"kitchen"}`})
		del := s.Expect(409, "DELETE", fmt.Sprintf("/api/device-models/%d", id), nil).Map(t)
		if del["code"] != "INVALID_OPERATION" || !strings.Contains(del["error"].(string), "1 associated device") {
			t.Fatalf("delete with devices: %v", del)
		}
		got := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d", id), nil).Map(t)
		if got["device_count"].(float64) != 1 {
			t.Fatalf("device_count: %v", got)
		}
		alpha := ms[0].(map[string]any)["id"].(float64)
		s.Expect(204, "DELETE", fmt.Sprintf("/api/device-models/%d", int(alpha)), nil)
		s.Expect(404, "DELETE", fmt.Sprintf("/api/device-models/%d", int(alpha)), nil)
	})
}

func TestDevicesCRUD(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		schema := `{"type":"object","properties":{"deviceName":{"type":"string"},"enableOTA":{"type":"boolean"}},"required":["deviceName"]}`
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "sensor", "name": "Sensor", "config_schema": schema}).Map(t)
		mid := int(m["id"].(float64))
		other := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "plain", "name": "Plain"}).Map(t)

		cfg := `{"deviceName":"Hall","deviceEntityId":"sensor.hall","enableOTA":true}`
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": cfg}).Map(t)
		key := d["key"].(string)
		if !regexp.MustCompile(`^[a-z2-7]{8}$`).MatchString(key) {
			t.Fatalf("key %q", key)
		}
		if d["client_id"] != "iotdevice-sensor-"+key || d["device_name"] != "Hall" || d["device_entity_id"] != "sensor.hall" ||
			d["enable_ota"] != true || d["active"] != true || d["config"] != cfg || d["last_coredump_at"] != nil {
			t.Fatalf("device: %v", d)
		}
		if dm := d["device_model"].(map[string]any); dm["code"] != "sensor" || dm["firmware_version"] != nil {
			t.Fatalf("device_model: %v", dm)
		}
		id := int(d["id"].(float64))

		// Schema and JSON validation, unknown model.
		bad := s.Expect(400, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"enableOTA":true}`}).Map(t)
		if !strings.HasPrefix(bad["error"].(string), "Config validation failed") {
			t.Fatalf("schema failure: %v", bad)
		}
		s.Expect(400, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{"deviceName":`})
		s.Expect(404, "POST", "/api/devices", map[string]any{"device_model_id": 9999, "config": `{}`})
		s.Expect(400, "POST", "/api/devices", map[string]any{"device_model_id": mid})

		// Keys are unique across many devices.
		keys := map[string]bool{key: true}
		for i := 0; i < 30; i++ {
			k := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": int(other["id"].(float64)), "config": `{}`}).Map(t)["key"].(string)
			if keys[k] {
				t.Fatalf("duplicate key %s", k)
			}
			keys[k] = true
		}
		all := s.Expect(200, "GET", "/api/devices", nil).Map(t)
		if all["count"].(float64) != 31 {
			t.Fatalf("count %v", all["count"])
		}
		prev := ""
		for _, x := range all["devices"].([]any) {
			k := x.(map[string]any)["key"].(string)
			if k < prev {
				t.Fatalf("devices not ordered by key")
			}
			prev = k
		}
		filtered := s.Expect(200, "GET", fmt.Sprintf("/api/devices?model_id=%d", mid), nil).Map(t)
		if filtered["count"].(float64) != 1 {
			t.Fatalf("filtered: %v", filtered)
		}

		// Update replaces config and display fields; active flag.
		up := s.Expect(200, "PUT", fmt.Sprintf("/api/devices/%d", id), map[string]any{"config": `{"deviceName":"Attic"}`, "active": false}).Map(t)
		if up["device_name"] != "Attic" || up["device_entity_id"] != nil || up["enable_ota"] != nil || up["active"] != false {
			t.Fatalf("update: %v", up)
		}
		s.Expect(400, "PUT", fmt.Sprintf("/api/devices/%d", id), map[string]any{"config": `{}`, "active": true})
		s.Expect(400, "PUT", fmt.Sprintf("/api/devices/%d", id), map[string]any{"config": `{"deviceName":"x"}`})
		got := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", id), nil).Map(t)
		if got["device_name"] != "Attic" || got["active"] != false {
			t.Fatalf("unchanged after failed updates: %v", got)
		}
		s.Expect(204, "DELETE", fmt.Sprintf("/api/devices/%d", id), nil)
		nf := s.Expect(404, "GET", fmt.Sprintf("/api/devices/%d", id), nil).Map(t)
		if nf["error"] != fmt.Sprintf("Device %d was not found", id) {
			t.Fatalf("%v", nf)
		}
	})
}

func TestRoutingErrorsUseEnvelope(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	r := s.Expect(404, "GET", "/api/nope", nil)
	if r.Map(t)["code"] != "RECORD_NOT_FOUND" {
		t.Fatalf("%s", r.Body)
	}
	r = s.Expect(405, "PATCH", "/api/device-models", nil)
	if r.Map(t)["code"] != "METHOD_NOT_ALLOWED" {
		t.Fatalf("%s", r.Body)
	}
	// The correlation id is taken from the request when given.
	r = s.Expect(404, "GET", "/api/device-models/77", nil, "X-Request-ID", "trace-abc-123")
	if r.Map(t)["correlationId"] != "trace-abc-123" || r.Header.Get("X-Request-ID") != "trace-abc-123" {
		t.Fatalf("correlation: %s %v", r.Body, r.Header)
	}
	// A hostile id is replaced by a generated one.
	r = s.Expect(404, "GET", "/api/device-models/77", nil, "X-Request-ID", strings.Repeat("x", 300))
	if len(r.Header.Get("X-Request-ID")) != 32 {
		t.Fatalf("request id not regenerated: %q", r.Header.Get("X-Request-ID"))
	}
	// Wrong content type and oversized JSON get a 4xx envelope.
	r = s.Do("POST", "/api/device-models", []byte("code=x"), "Content-Type", "application/x-www-form-urlencoded")
	if r.Status < 400 || r.Status >= 500 {
		t.Fatalf("form body: %d %s", r.Status, r.Body)
	}
}

func TestOperationsEndpoints(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		h := s.Expect(200, "GET", "/health/healthz", nil).Map(t)
		if h["status"] != "alive" {
			t.Fatalf("%v", h)
		}
		rd := s.Expect(200, "GET", "/health/readyz", nil).Map(t)
		if rd["ready"] != true || rd["database"].(map[string]any)["migrations_pending"].(float64) != 0 || rd["storage"].(map[string]any)["ok"] != true {
			t.Fatalf("readyz: %v", rd)
		}
		s.Expect(200, "GET", "/api/device-models", nil)
		s.Expect(404, "GET", "/api/device-models/5", nil)
		m := string(s.Expect(200, "GET", "/metrics", nil).Body)
		for _, want := range []string{
			`iotsupport_http_requests_total{method="GET",route="/api/device-models",status="200"} 1`,
			`iotsupport_http_requests_total{method="GET",route="/api/device-models/{model_id}",status="404"} 1`,
			`iotsupport_http_request_duration_seconds_bucket`,
			`go_goroutines`,
		} {
			if !strings.Contains(m, want) {
				t.Fatalf("metrics lack %q", want)
			}
		}
		doc := s.Expect(200, "GET", "/api/docs/openapi.json", nil).Map(t)
		paths := doc["paths"].(map[string]any)
		if _, ok := paths["/api/devices/{device_id}"]; !ok || doc["openapi"] != "3.1.0" {
			t.Fatalf("openapi: %v", doc["paths"])
		}
		page := s.Expect(200, "GET", "/api/docs", nil)
		if !strings.Contains(string(page.Body), "/api/docs/assets/swagger-ui-bundle.js") || strings.Contains(string(page.Body), "https://") {
			t.Fatalf("docs page must reference only vendored assets: %s", page.Body)
		}
		js := s.Expect(200, "GET", "/api/docs/assets/swagger-ui-bundle.js", nil)
		if len(js.Body) < 100000 {
			t.Fatalf("vendored swagger bundle missing")
		}
		// Responses carry no $schema links.
		if _, ok := s.Expect(200, "GET", "/api/device-models", nil).Map(t)["$schema"]; ok {
			t.Fatal("$schema present")
		}
		_ = http.StatusOK
	})
}
