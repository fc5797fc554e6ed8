package httpapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark measures
// what the handler allocates, not a recorder's buffer.
type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkFirmwareDownload shows memory per download does not grow with the image:
// compare B/op of the 1 MiB and 16 MiB cases.
func BenchmarkFirmwareDownload(b *testing.B) {
	env := testenv.New(b, "sqlite+local")
	s := apitest.Start(b, env)
	for _, size := range []int{1 << 20, 16 << 20} {
		code := fmt.Sprintf("m%d", size>>20)
		r := s.Do("POST", "/api/device-models", map[string]any{"code": code, "name": code})
		var m struct{ ID int }
		r.JSON(b, &m)
		zip := bundletest.BuildCase(b, code, "esp32c3", bundletest.Options{Version: "1.0.0", Image: espimagetest.Options{PadTo: size}})
		if r := s.Do("POST", fmt.Sprintf("/api/device-models/%d/firmware", m.ID), zip); r.Status != 200 {
			b.Fatalf("upload: %d %s", r.Status, r.Body)
		}
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			req := httptest.NewRequest("GET", fmt.Sprintf("/api/device-models/%d/firmware", m.ID), nil)
			req.Header.Set("Authorization", "Bearer "+s.Tokens["viewer"])
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				w := &discardWriter{h: http.Header{}}
				s.App.HTTP.ServeHTTP(w, req)
				if w.n != size {
					b.Fatalf("served %d bytes, want %d", w.n, size)
				}
			}
		})
	}
}
