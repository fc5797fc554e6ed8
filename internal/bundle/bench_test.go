package bundle_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

// BenchmarkValidate shows that memory stays flat as the app image grows.
func BenchmarkValidate(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20} {
		z := bundletest.BuildCase(b, "bench", "esp32c3", bundletest.Options{Image: espimagetest.Options{PadTo: size}})
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(z)
			for b.Loop() {
				if _, err := bundle.Validate(r, int64(len(z)), "bench", bundle.Limits{}, bundle.Strict); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
