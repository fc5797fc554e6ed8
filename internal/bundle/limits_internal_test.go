package bundle

import (
	"archive/zip"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
)

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// The archive/zip reader already refuses data beyond the declared size, so
// these limits are a second line; check them on an endless stream directly.
func TestMemberReaderCountsActualBytes(t *testing.T) {
	tests := []struct {
		name       string
		limits     Limits
		compressed uint64
		msg        string
	}{
		{"per-member limit", Limits{MaxMemberBytes: 1000, MaxTotalBytes: 1 << 30, MaxRatio: 1 << 40, RatioMinBytes: 1 << 30}, 10, "m.map is too large (over 1000 bytes uncompressed)"},
		{"total limit", Limits{MaxMemberBytes: 1 << 30, MaxTotalBytes: 3000, MaxRatio: 1 << 40, RatioMinBytes: 1 << 30}, 10, "contents too large (over 3000 bytes uncompressed)"},
		{"ratio limit", Limits{MaxMemberBytes: 1 << 30, MaxTotalBytes: 1 << 30, MaxRatio: 200, RatioMinBytes: 1 << 20}, 100, "m.map has a suspicious compression ratio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &validator{limits: tt.limits, total: 0}
			f := &zip.File{FileHeader: zip.FileHeader{Name: "m.map", CompressedSize64: tt.compressed}}
			m := &memberReader{v: v, f: f, rc: io.NopCloser(zeroReader{}), h: sha256.New()}
			n, err := io.Copy(io.Discard, m)
			var ve *ValidationError
			if !errors.As(err, &ve) || !strings.Contains(ve.Msg, tt.msg) {
				t.Fatalf("err = %v", err)
			}
			if n > 2<<20 {
				t.Errorf("read %d bytes before stopping", n)
			}
		})
	}
}
