package bundle_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

// The builder is production code (iotsupport bench uploads its bundles), so it is
// tested directly here, not only through bundletest.

func TestBuiltBundleValidates(t *testing.T) {
	elfBytes, err := os.ReadFile(espimagetest.ELFPath(t, "esp32c3"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := espimage.BuildFromELF(elfBytes, espimage.BuildOptions{Version: "2.3.4"})
	if err != nil {
		t.Fatal(err)
	}
	members := bundle.Members("lamp", img, elfBytes, bundle.VersionJSON("cafe1234", "v5.4", "2.3.4"))
	for _, method := range []uint16{zip.Store, zip.Deflate} {
		z, err := bundle.Zip(members, method)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
			if f.Method != method {
				t.Errorf("%s: method %d, want %d", f.Name, f.Method, method)
			}
		}
		if want := []string{"lamp.bin", "lamp.elf", "lamp.map", "sdkconfig", "version.json"}; !slices.Equal(names, want) {
			t.Errorf("members %v, want %v", names, want)
		}
		b, err := bundle.Validate(bytes.NewReader(z), int64(len(z)), "lamp", bundle.Limits{}, bundle.Strict)
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		if b.Version != "2.3.4" || b.FirmwareVersion != "2.3.4" || b.GitCommit != "cafe1234" || b.IDFVersion != "v5.4" || len(b.Artifacts) != 5 {
			t.Errorf("version %q, version.json %q/%q/%q, %d artifacts", b.Version, b.FirmwareVersion, b.GitCommit, b.IDFVersion, len(b.Artifacts))
		}
	}
}

func TestVersionJSON(t *testing.T) {
	var got map[string]string
	if err := json.Unmarshal(bundle.VersionJSON("abc", "v5.3", "1.0.0"), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["git_commit"] != "abc" || got["idf_version"] != "v5.3" || got["firmware_version"] != "1.0.0" {
		t.Fatalf("version.json %v", got)
	}
}
