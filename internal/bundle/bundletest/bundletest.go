// Package bundletest builds firmware bundle ZIPs for tests: complete, valid
// ones from the shared test ELFs, tiny synthetic ones, and broken variants.
// The members and the ZIP come from bundle's builder; this package adds the
// test-only parts (test ELFs, synthetic bundles, Omit, Replace, Extra).
package bundletest

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"slices"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

// TB is the part of testing.TB these helpers use (see espimagetest.TB).
type TB = espimagetest.TB

// Member is one ZIP entry.
type Member = bundle.Member

// Options tune the bundle. The zero value builds a valid bundle.
type Options struct {
	// Version sets the app image version and version.json's
	// firmware_version (default: the ELF descriptor's version).
	Version string
	// Image passes options to the image builder (Version above wins).
	Image espimagetest.Options
	// VersionJSON replaces version.json's contents.
	VersionJSON []byte
	// GitCommit goes into version.json (default "0123456789abcdef").
	GitCommit string
	// Omit leaves out members, by ZIP name ("sdkconfig", "esp32.map").
	Omit []string
	// Replace swaps a member's contents, by ZIP name.
	Replace map[string][]byte
	// Extra members are appended after the five.
	Extra []Member
	// Store writes members uncompressed instead of deflated.
	Store bool
}

// Build makes a bundle for modelCode from the ELF at elfPath (see
// espimagetest.ELFPath); the test fails on error.
func Build(tb TB, modelCode, elfPath string, opts Options) []byte {
	tb.Helper()
	elfBytes, err := os.ReadFile(elfPath)
	if err != nil {
		tb.Fatal(err)
	}
	z, err := Make(modelCode, elfBytes, opts)
	if err != nil {
		tb.Fatalf("build bundle: %v", err)
	}
	return z
}

// BuildCase is Build for a shared test case ("esp32c3").
func BuildCase(tb TB, modelCode, testCase string, opts Options) []byte {
	tb.Helper()
	return Build(tb, modelCode, espimagetest.ELFPath(tb, testCase), opts)
}

// Make builds a bundle from ELF bytes: the image from espimagetest, the ELF
// itself, a .map, sdkconfig and version.json.
func Make(modelCode string, elfBytes []byte, opts Options) ([]byte, error) {
	iopts := opts.Image
	if opts.Version != "" {
		iopts.Version = opts.Version
	}
	img, err := espimagetest.BuildFromELF(elfBytes, iopts)
	if err != nil {
		return nil, err
	}
	return assemble(modelCode, img, elfBytes, opts)
}

// Synthetic builds a tiny bundle (a few KB) around a synthetic image for chip
// and a minimal ELF header, for fuzz seeds and fast tests.
func Synthetic(modelCode, chip, version string, opts Options) ([]byte, error) {
	ci, ok := chips.ByName(chip)
	if !ok {
		return nil, fmt.Errorf("unknown chip %q", chip)
	}
	elfBytes := MinimalELF(ci.Arch.ELFMachine())
	iopts := opts.Image
	if iopts.ELFSHA256 == nil {
		sum := sha256.Sum256(elfBytes)
		iopts.ELFSHA256 = &sum
	}
	img, err := espimagetest.Synthetic(chip, version, iopts)
	if err != nil {
		return nil, err
	}
	return assemble(modelCode, img, elfBytes, opts)
}

// Members builds the bundle's members (image first) from ELF bytes, before zipping.
func Members(modelCode string, elfBytes []byte, opts Options) ([]Member, error) {
	iopts := opts.Image
	if opts.Version != "" {
		iopts.Version = opts.Version
	}
	img, err := espimagetest.BuildFromELF(elfBytes, iopts)
	if err != nil {
		return nil, err
	}
	return members(modelCode, img, elfBytes, opts), nil
}

func assemble(modelCode string, img, elfBytes []byte, opts Options) ([]byte, error) {
	method := zip.Deflate
	if opts.Store {
		method = zip.Store
	}
	return Zip(members(modelCode, img, elfBytes, opts), method)
}

func members(modelCode string, img, elfBytes []byte, opts Options) []Member {
	vj := opts.VersionJSON
	if vj == nil {
		im, err := espimage.Parse(bytes.NewReader(img), int64(len(img)))
		version, idf := opts.Version, "v5.4"
		if err == nil { // broken images are fine; they just need a version.json
			version, idf = im.Version, im.IDFVersion
		}
		commit := opts.GitCommit
		if commit == "" {
			commit = "0123456789abcdef"
		}
		vj = bundle.VersionJSON(commit, idf, version)
	}
	var out []Member
	for _, m := range bundle.Members(modelCode, img, elfBytes, vj) {
		if slices.Contains(opts.Omit, m.Name) {
			continue
		}
		if r, ok := opts.Replace[m.Name]; ok {
			m.Data = r
		}
		out = append(out, m)
	}
	return append(out, opts.Extra...)
}

// Zip is bundle.Zip.
func Zip(members []Member, method uint16) ([]byte, error) { return bundle.Zip(members, method) }

// MinimalELF returns a 52-byte ELF32 little-endian executable header for the
// machine: enough for the bundle's ELF checks.
func MinimalELF(m elf.Machine) []byte {
	h := make([]byte, 52)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS] = byte(elf.ELFCLASS32)
	h[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.LittleEndian.PutUint16(h[16:], uint16(elf.ET_EXEC))
	binary.LittleEndian.PutUint16(h[18:], uint16(m))
	binary.LittleEndian.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	binary.LittleEndian.PutUint16(h[40:], 52) // e_ehsize
	return h
}
