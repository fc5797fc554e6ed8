package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
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
