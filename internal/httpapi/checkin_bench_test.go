package httpapi_test

import (
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// BenchmarkDeviceRequests measures the handler overhead of what every device
// does most: polling its firmware version, and a 4 KiB ranged download (the
// ESP-IDF partial OTA pattern), both with Basic device authentication.
func BenchmarkDeviceRequests(b *testing.B) {
	env := testenv.New(b, "sqlite+local")
	s := apitest.Start(b, env)
	r := s.Do("POST", "/api/device-models", map[string]any{"code": "poll", "name": "poll"})
	var m struct{ ID int }
	r.JSON(b, &m)
	zip := bundletest.BuildCase(b, "poll", "esp32c3", bundletest.Options{Version: "1.0.0", Image: espimagetest.Options{PadTo: 2 << 20}})
	if r := s.Do("POST", "/api/device-models/"+strconv.Itoa(m.ID)+"/firmware", zip); r.Status != 200 {
		b.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	var d struct{ Key, Secret string }
	s.Do("POST", "/api/devices", map[string]any{"device_model_id": m.ID, "config": "{}"}).JSON(b, &d)
	for _, c := range []struct {
		name, path, rng string
		status          int
		telemetry       bool
	}{
		{"checkin", "/api/iot/firmware-version", "", 200, false},
		// What an ESP-IDF device sends on every request once it reports to the fleet view.
		{"checkin-headers", "/api/iot/firmware-version", "", 200, true},
		{"ranged-4KiB", "/api/iot/firmware", "bytes=65536-69631", 206, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", c.path, nil)
			req.SetBasicAuth(d.Key, d.Secret)
			if c.rng != "" {
				req.Header.Set("Range", c.rng)
			}
			if c.telemetry {
				req.Header.Set("X-Firmware-Version", "1.0.0")
				req.Header.Set("X-Boot-Id", "bench-boot")
				req.Header.Set("X-Reset-Reason", "POWERON")
			}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				s.App.HTTP.ServeHTTP(w, req)
				if w.Code != c.status {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
