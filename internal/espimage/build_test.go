package espimage_test

import (
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

// The builder is production code (iotsupport bench uploads its images), so it is
// tested directly here, not only through espimagetest.

func TestBuildFromELF(t *testing.T) {
	for _, c := range []struct{ name, chip string }{{"esp32", "esp32"}, {"esp32c3", "esp32c3"}, {"esp32c6", "esp32c6"}} {
		t.Run(c.name, func(t *testing.T) {
			elfBytes, err := os.ReadFile(espimagetest.ELFPath(t, c.name))
			if err != nil {
				t.Fatal(err)
			}
			img, err := espimage.BuildFromELF(elfBytes, espimage.BuildOptions{Version: "9.8.7"})
			if err != nil {
				t.Fatal(err)
			}
			im, err := parseBytes(img)
			if err != nil {
				t.Fatalf("Parse of a built image: %v", err)
			}
			if im.Chip != c.chip || im.Version != "9.8.7" || !im.HashAppended || im.Size != int64(len(img)) {
				t.Errorf("chip %q version %q hash %v size %d/%d", im.Chip, im.Version, im.HashAppended, im.Size, len(img))
			}
			if im.AppELFSHA256 != sha256.Sum256(elfBytes) {
				t.Errorf("app_elf_sha256 is not the ELF's SHA-256")
			}

			const size = 1<<20 + 5 // not a multiple of 16: needs trailing bytes too
			padded, err := espimage.BuildFromELF(elfBytes, espimage.BuildOptions{PadTo: size, NoHash: true})
			if err != nil {
				t.Fatal(err)
			}
			pm, err := parseBytes(padded)
			if err != nil {
				t.Fatalf("Parse of a padded image: %v", err)
			}
			if len(padded) != size || pm.Size != size || pm.HashAppended || pm.Version == "" || pm.Version == "9.8.7" {
				t.Errorf("padded: %d bytes, parsed size %d (want %d), hash appended %v, version %q (want the ELF's)",
					len(padded), pm.Size, size, pm.HashAppended, pm.Version)
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	elfBytes, err := os.ReadFile(espimagetest.ELFPath(t, "esp32c3"))
	if err != nil {
		t.Fatal(err)
	}
	seg := []espimage.SegmentData{{Addr: 0x3C020020, Data: espimagetest.Desc("1.0", "p", "v5.4")}}
	for _, c := range []struct {
		name  string
		build func() ([]byte, error)
		want  string
	}{
		{"not an ELF", func() ([]byte, error) { return espimage.BuildFromELF([]byte("nope"), espimage.BuildOptions{}) }, "parse ELF"},
		{"PadTo below the image", func() ([]byte, error) { return espimage.BuildFromELF(elfBytes, espimage.BuildOptions{PadTo: 1000}) }, "below the natural image size"},
		{"version over 32 bytes", func() ([]byte, error) {
			return espimage.BuildFromELF(elfBytes, espimage.BuildOptions{Version: strings.Repeat("v", 33)})
		}, "longer than 32 bytes"},
		{"unknown chip", func() ([]byte, error) { return espimage.Build("esp8266", 0, seg, espimage.BuildOptions{}) }, "unknown chip"},
		{"no segments", func() ([]byte, error) { return espimage.Build("esp32c3", 0, nil, espimage.BuildOptions{}) }, "segments"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.build(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestResealRepairsAnEditedImage(t *testing.T) {
	seg := []espimage.SegmentData{{Addr: 0x3C020020, Data: append(espimagetest.Desc("1.0", "p", "v5.4"), "rodata!!"...)}}
	for _, noHash := range []bool{false, true} {
		img, err := espimage.Build("esp32c3", 0x40380000, seg, espimage.BuildOptions{NoHash: noHash})
		if err != nil {
			t.Fatal(err)
		}
		img[espimage.AppDescOffset+espimage.AppDescLen] ^= 0x5A // a byte of "rodata!!"
		if _, err := parseBytes(img); !errors.Is(err, espimage.ErrChecksum) {
			t.Fatalf("no hash %v: edited image: %v, want a checksum mismatch", noHash, err)
		}
		if err := espimage.Reseal(img); err != nil {
			t.Fatal(err)
		}
		if _, err := parseBytes(img); err != nil {
			t.Fatalf("no hash %v: resealed image: %v", noHash, err)
		}
	}
	if err := espimage.Reseal(make([]byte, 10)); err == nil {
		t.Fatal("Reseal of 10 bytes succeeded")
	}
}
