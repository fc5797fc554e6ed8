package espimage_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

// BenchmarkParse shows that allocations do not grow with the image size.
func BenchmarkParse(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20} {
		img, _ := espimagetest.ImageFromCase(b, "esp32c3", espimagetest.Options{PadTo: size})
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			r := bytes.NewReader(img)
			for b.Loop() {
				if _, err := espimage.Parse(r, int64(len(img))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, chip := range []string{"esp32", "esp32c3", "esp32p4"} {
		img, err := espimagetest.Synthetic(chip, "1.0.0", espimagetest.Options{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(img)
	}
	noHash, _ := espimagetest.Synthetic("esp32s3", "v2", espimagetest.Options{NoHash: true})
	f.Add(noHash)
	// Real headers and descriptors, truncated to keep seeds small.
	for _, c := range []string{"esp32", "esp32c6"} {
		img, _ := espimagetest.ImageFromCase(f, c, espimagetest.Options{})
		f.Add(img[:1024])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := espimage.Parse(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			var e *espimage.Error
			if !errors.As(err, &e) {
				t.Fatalf("non-validation error from an in-memory reader: %v", err)
			}
			return
		}
		if im.SHA256 != sha256.Sum256(data) || im.Size != int64(len(data)) || im.ImageLen > im.Size {
			t.Fatalf("inconsistent result %+v", im)
		}
		if im.Version == "" || len(im.Segments) == 0 {
			t.Fatalf("accepted image without version or segments")
		}
	})
}
