package httpapi_test

import (
	"fmt"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestDeviceCache: two replicas over one database. Changes made through a replica apply
// there at once (its cache is cleared); the other replica answers from its cache until the
// TTL (10 minutes here, so the test cannot race it); a replica with DEVICE_CACHE_TTL=0 sees
// every change at once.
func TestDeviceCache(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		a := apitest.Start(t, env, "DEVICE_CACHE_TTL", "10m")
		b := apitest.Start(t, env, "DEVICE_CACHE_TTL", "10m")
		off := apitest.Start(t, env, "DEVICE_CACHE_TTL", "0")
		mid := newModel(t, a, "cachem")
		key, secret := newDevice(t, a, mid)
		dev := a.Expect(200, "GET", "/api/devices?model_id="+fmt.Sprint(mid), nil).Map(t)["devices"].([]any)[0].(map[string]any)
		devPath := fmt.Sprintf("/api/devices/%d", int(dev["id"].(float64)))
		version := func(s *apitest.Server, secret string) string {
			t.Helper()
			m := s.Basic(key, secret).Expect(200, "GET", "/api/iot/firmware-version", nil).Map(t)
			v, _ := m["firmware_version"].(string)
			return v
		}
		upload := func(v string) {
			t.Helper()
			a.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "cachem", "esp32c3", bundletest.Options{Version: v}))
		}

		upload("1.0.0")
		for _, s := range []*apitest.Server{a, b, off} {
			if got := version(s, secret); got != "1.0.0" {
				t.Fatalf("first poll: %q", got)
			}
		}
		upload("2.0.0")
		if got := version(a, secret); got != "2.0.0" {
			t.Errorf("replica that took the upload answers %q, want 2.0.0 at once", got)
		}
		if got := version(off, secret); got != "2.0.0" {
			t.Errorf("uncached replica answers %q, want 2.0.0", got)
		}
		if got := version(b, secret); got != "1.0.0" {
			t.Errorf("other replica answers %q within its TTL; want the cached 1.0.0 (is the cache working?)", got)
		}
		// The download follows the same cached answer as the version check.
		if r := b.Basic(key, secret).Expect(200, "GET", "/api/iot/firmware", nil); r.Header.Get("X-Firmware-Version") != "1.0.0" {
			t.Errorf("other replica's download is %q", r.Header.Get("X-Firmware-Version"))
		}

		// Rotating the secret: the old one stops at once where it was rotated.
		newSecret := a.Expect(200, "POST", devPath+"/credentials", nil).Map(t)["secret"].(string)
		a.Basic(key, secret).Expect(401, "GET", "/api/iot/firmware-version", nil)
		off.Basic(key, secret).Expect(401, "GET", "/api/iot/firmware-version", nil)
		b.Basic(key, secret).Expect(200, "GET", "/api/iot/firmware-version", nil)
		if got := version(a, newSecret); got != "2.0.0" {
			t.Errorf("new secret: %q", got)
		}

		// Deactivation and deletion apply at once on the replica that made them.
		a.Expect(200, "PUT", devPath, map[string]any{"config": `{}`, "active": false})
		a.Basic(key, newSecret).Expect(403, "GET", "/api/iot/firmware-version", nil)
		off.Basic(key, newSecret).Expect(403, "GET", "/api/iot/firmware-version", nil)
		a.Expect(204, "DELETE", devPath, nil)
		a.Basic(key, newSecret).Expect(401, "GET", "/api/iot/firmware-version", nil)
		off.Basic(key, newSecret).Expect(401, "GET", "/api/iot/firmware-version", nil)
	})
}
