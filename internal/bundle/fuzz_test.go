package bundle_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
)

func FuzzValidate(f *testing.F) {
	// Small synthetic seeds (a few KB each); real bundles are megabytes.
	for _, s := range []struct {
		chip string
		opts bundletest.Options
	}{
		{"esp32c3", bundletest.Options{}},
		{"esp32", bundletest.Options{Store: true}},
		{"esp32c6", bundletest.Options{Omit: []string{"m1.map"}}},
		{"esp32s3", bundletest.Options{VersionJSON: []byte(`{"git_commit":1,"idf_version":null,"firmware_version":"unknown"}`)}},
	} {
		z, err := bundletest.Synthetic("m1", s.chip, "1.0.0", s.opts)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(z)
	}
	limits := bundle.Limits{MaxMemberBytes: 1 << 20, MaxTotalBytes: 2 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mode := range []bundle.Mode{bundle.Strict, bundle.Legacy} {
			b, err := bundle.Validate(bytes.NewReader(data), int64(len(data)), "m1", limits, mode)
			if err != nil {
				var ve *bundle.ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("non-validation error from an in-memory reader: %v", err)
				}
				continue
			}
			if mode == bundle.Strict && (len(b.Artifacts) != 5 || len(b.Warnings) != 0) {
				t.Fatalf("strict bundle with %d artifacts, warnings %v", len(b.Artifacts), b.Warnings)
			}
			for _, a := range b.Artifacts {
				rc, err := a.Open()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || sha256.Sum256(got) != a.SHA256 || int64(len(got)) != a.Size {
					t.Fatalf("%s reopened differently: %v", a.Name, err)
				}
			}
		}
	})
}
