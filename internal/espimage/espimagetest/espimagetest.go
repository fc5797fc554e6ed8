// Package espimagetest builds ESP-IDF app images for tests: realistic ones from
// the shared test ELFs and deliberately broken ones. The images come from
// espimage's builder; this package adds the test-only parts (finding the test
// ELFs, synthetic images, Edit and Break).
package espimagetest

import (
	"encoding/binary"
	"os"
	"path/filepath"

	"github.com/iotsupport/iotsupport/internal/espimage"
)

// TB is the part of testing.TB these helpers use (*testing.T, *testing.B and *testing.F have it).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Options tune the built image. The zero value builds a valid image.
type Options struct {
	// Version, Chip, ELFSHA256, PadTo and NoHash are espimage.BuildOptions.
	Version   string
	Chip      string
	ELFSHA256 *[32]byte
	PadTo     int
	NoHash    bool
	// Edit changes the image (trailing PadTo bytes included) before the
	// checksum and digest are computed again, so the result is still
	// internally consistent.
	Edit func(img []byte)
	// Break changes the finished image (checksum and digest stay stale).
	Break func(img []byte)
}

func (o Options) build() espimage.BuildOptions {
	return espimage.BuildOptions{Version: o.Version, Chip: o.Chip, ELFSHA256: o.ELFSHA256, PadTo: o.PadTo, NoHash: o.NoHash}
}

// Segment is raw segment input for Build.
type Segment = espimage.SegmentData

// BuildFromELF is espimage.BuildFromELF plus the test-only Edit and Break.
func BuildFromELF(elfBytes []byte, opts Options) ([]byte, error) {
	img, err := espimage.BuildFromELF(elfBytes, opts.build())
	if err != nil {
		return nil, err
	}
	return finish(img, opts)
}

// Build is espimage.Build plus the test-only Edit and Break.
func Build(chip string, entry uint32, segs []Segment, opts Options) ([]byte, error) {
	img, err := espimage.Build(chip, entry, segs, opts.build())
	if err != nil {
		return nil, err
	}
	return finish(img, opts)
}

func finish(img []byte, opts Options) ([]byte, error) {
	if opts.Edit != nil {
		opts.Edit(img)
		if err := espimage.Reseal(img); err != nil {
			return nil, err
		}
	}
	if opts.Break != nil {
		opts.Break(img)
	}
	return img, nil
}

// Cases are the esp-coredump test apps with an app ELF in shared test data.
var Cases = []string{"esp32", "esp32_bin", "esp32c3", "esp32c3_bin", "esp32c6"}

// ELFPath returns the path of a test app ELF (shared/testdata/esp-coredump/
// <name>/app.elf), found from the module root; the test fails if it is absent.
func ELFPath(tb TB, name string) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", "esp-coredump", name, "app.elf")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("test ELF: %v", err)
	}
	return p
}

// ImageFromCase reads a test ELF and builds its image.
func ImageFromCase(tb TB, name string, opts Options) (img, elfBytes []byte) {
	tb.Helper()
	elfBytes, err := os.ReadFile(ELFPath(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	img, err = BuildFromELF(elfBytes, opts)
	if err != nil {
		tb.Fatalf("build image from %s: %v", name, err)
	}
	return img, elfBytes
}

// Desc returns a 256-byte esp_app_desc_t with the given strings, for
// synthetic images built with Build.
func Desc(version, project, idf string) []byte {
	d := make([]byte, espimage.AppDescLen)
	binary.LittleEndian.PutUint32(d, espimage.AppDescMagic)
	copy(d[0x10:0x30], version)
	copy(d[0x30:0x50], project)
	copy(d[0x50:0x60], "12:34:56")
	copy(d[0x60:0x70], "Nov 26 2026")
	copy(d[0x70:0x90], idf)
	return d
}

// Synthetic builds a small valid image (well under 1 KiB) for chip with the
// given version, for fuzz seeds and fast unit tests.
func Synthetic(chip, version string, opts Options) ([]byte, error) {
	segs := []Segment{
		{Addr: 0x3C020020, Data: append(Desc(version, "synthetic", "v5.4"), []byte("rodata!!")...)},
		{Addr: 0x40380000, Data: []byte{0x13, 0x00, 0x00, 0x00, 0x6f, 0x00, 0x00, 0x00}},
		{Addr: 0x3FC80000, Data: []byte("data section")},
	}
	return Build(chip, 0x40380000, segs, opts)
}
