package espimage_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espimage"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/naming"
)

func parseBytes(b []byte) (*espimage.Image, error) {
	return espimage.Parse(bytes.NewReader(b), int64(len(b)))
}

func TestParseImagesBuiltFromTestELFs(t *testing.T) {
	tests := []struct {
		name, chip   string
		arch         chips.Arch
		version, idf string
	}{
		{"esp32", "esp32", chips.Xtensa, "v1.0-56-g30082bf", "v5.3-dev-458-g8c0f8b041e"},
		{"esp32_bin", "esp32", chips.Xtensa, "v1.12.0-7-gb7813ea-dirty", "v5.4-dev-4243-g2cfc2dec30"},
		{"esp32c3", "esp32c3", chips.RISCV, "v1.0-56-g30082bf-dirty", "v5.3-dev-458-g8c0f8b041e"},
		{"esp32c3_bin", "esp32c3", chips.RISCV, "v1.12.0-7-gb7813ea-dirty", "v5.4-dev-4243-g2cfc2dec30"},
		{"esp32c6", "esp32c6", chips.RISCV, "v1.12.0-16-g8ea0d23-dirty", "v6.0-dev-1306-g43f3a88da65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, elfBytes := espimagetest.ImageFromCase(t, tt.name, espimagetest.Options{})
			im, err := parseBytes(img)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if im.Chip != tt.chip || im.Arch != tt.arch {
				t.Errorf("chip = %s/%s, want %s/%s", im.Chip, im.Arch, tt.chip, tt.arch)
			}
			if im.Version != tt.version || im.IDFVersion != tt.idf || im.ProjectName != "test_core_dump" {
				t.Errorf("descriptor = %q %q %q", im.Version, im.IDFVersion, im.ProjectName)
			}
			if im.AppELFSHA256 != sha256.Sum256(elfBytes) {
				t.Errorf("app_elf_sha256 = %x, want the ELF's SHA-256", im.AppELFSHA256)
			}
			if im.SHA256 != sha256.Sum256(img) || im.Size != int64(len(img)) || im.ImageLen != im.Size {
				t.Errorf("size/hash: size %d imageLen %d of %d", im.Size, im.ImageLen, len(img))
			}
			if !im.HashAppended || len(im.Segments) < 3 || im.Segments[0].Offset != 0x20 {
				t.Errorf("segments = %+v, hash %v", im.Segments, im.HashAppended)
			}
			if !naming.ValidVersion(im.Version) {
				t.Errorf("version %q not valid", im.Version)
			}
		})
	}
}

func TestParseOptionsOfBuilder(t *testing.T) {
	t.Run("version override", func(t *testing.T) {
		img, _ := espimagetest.ImageFromCase(t, "esp32c6", espimagetest.Options{Version: "2.0.1+build.7"})
		im, err := parseBytes(img)
		if err != nil || im.Version != "2.0.1+build.7" {
			t.Fatalf("got %v, %v", im, err)
		}
	})
	t.Run("32-character version without NUL", func(t *testing.T) {
		v := strings.Repeat("a", 32)
		img, err := espimagetest.Synthetic("esp32c3", v, espimagetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		im, err := parseBytes(img)
		if err != nil || im.Version != v {
			t.Fatalf("got %v, %v", im, err)
		}
	})
	for _, size := range []int{1 << 20, 1<<20 + 5, 16 << 20} {
		img, _ := espimagetest.ImageFromCase(t, "esp32", espimagetest.Options{PadTo: size})
		if len(img) != size {
			t.Fatalf("PadTo %d gave %d bytes", size, len(img))
		}
		im, err := parseBytes(img)
		if err != nil {
			t.Fatalf("PadTo %d: %v", size, err)
		}
		if im.Size != int64(size) || im.SHA256 != sha256.Sum256(img) {
			t.Errorf("PadTo %d: size %d", size, im.Size)
		}
	}
	t.Run("no appended hash", func(t *testing.T) {
		img, err := espimagetest.Synthetic("esp32c3", "1.0", espimagetest.Options{NoHash: true})
		if err != nil {
			t.Fatal(err)
		}
		im, err := parseBytes(img)
		if err != nil || im.HashAppended || im.ImageLen != int64(len(img)) {
			t.Fatalf("got %+v, %v", im, err)
		}
	})
	t.Run("trailing signature bytes are allowed", func(t *testing.T) {
		img, _ := espimagetest.Synthetic("esp32", "1.0", espimagetest.Options{})
		n := len(img)
		img = append(img, make([]byte, 4096)...)
		im, err := parseBytes(img)
		if err != nil || im.ImageLen != int64(n) || im.Size != int64(len(img)) {
			t.Fatalf("got %+v, %v", im, err)
		}
	})
}

func TestParseRejects(t *testing.T) {
	u16 := func(off int, v uint16) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint16(b[off:], v) }
	}
	u32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}
	tests := []struct {
		name string
		opts espimagetest.Options
		raw  func() []byte // instead of opts
		kind error
		msg  string
	}{
		{name: "file shorter than 80 bytes", raw: func() []byte { return []byte{0xE9, 1} },
			kind: espimage.ErrTooShort, msg: "binary too short (minimum 80 bytes required)"},
		{name: "wrong image magic", opts: espimagetest.Options{Edit: func(b []byte) { b[0] = 0x7F }},
			kind: espimage.ErrNotImage, msg: "not an ESP-IDF app image (first byte 0x7F, expected 0xE9)"},
		{name: "zero segments", opts: espimagetest.Options{Break: func(b []byte) { b[1] = 0 }},
			kind: espimage.ErrSegments, msg: "image has 0 segments (expected 1 to 16)"},
		{name: "more than 16 segments", opts: espimagetest.Options{Break: func(b []byte) { b[1] = 17 }},
			kind: espimage.ErrSegments, msg: "image has 17 segments"},
		{name: "unknown chip id", opts: espimagetest.Options{Edit: u16(12, 0x0042)},
			kind: espimage.ErrUnknownChip, msg: "unknown chip id 0x0042 in image header"},
		{name: "segment longer than the file", opts: espimagetest.Options{Break: u32(28, 1<<20)},
			kind: espimage.ErrTruncated, msg: "segment 0 (1048576 bytes at offset 0x20) runs past the end of the file"},
		{name: "segment over 16 MiB", opts: espimagetest.Options{Break: u32(28, 1<<30)},
			kind: espimage.ErrSegments, msg: "segment 0 is 1073741824 bytes long (limit 16777216)"},
		{name: "segment count beyond the data", raw: func() []byte {
			b, _ := espimagetest.Synthetic("esp32c3", "1.0", espimagetest.Options{})
			b[1] = 4
			return b[:332] // the three segments end at 332
		}, kind: espimage.ErrTruncated, msg: "header of segment 3 at offset 0x14C is past the end"},
		{name: "missing app descriptor magic", opts: espimagetest.Options{Edit: u32(0x20, 0x12345678)},
			kind: espimage.ErrNoAppDesc, msg: "magic number mismatch (expected 0xABCD5432, got 0x12345678)"},
		{name: "bootloader image", opts: espimagetest.Options{Edit: u32(0x20, 0x00000050)},
			kind: espimage.ErrNoAppDesc, msg: "bootloader image, not an app image"},
		{name: "first segment shorter than a descriptor", opts: espimagetest.Options{Edit: u32(28, 64)},
			kind: espimage.ErrNoAppDesc, msg: "first segment is too short for an app descriptor (64 bytes, need 256)"},
		{name: "empty version", opts: espimagetest.Options{Edit: func(b []byte) { b[0x30] = 0 }},
			kind: espimage.ErrVersionString, msg: "empty version string"},
		{name: "version not UTF-8", opts: espimagetest.Options{Edit: func(b []byte) { b[0x30] = 0xFF }},
			kind: espimage.ErrVersionString, msg: "cannot decode version string"},
		{name: "checksum mismatch", opts: espimagetest.Options{NoHash: true, Break: func(b []byte) { b[0x40] ^= 0x5A }},
			kind: espimage.ErrChecksum, msg: "image checksum mismatch (stored 0x"},
		{name: "appended SHA-256 mismatch", opts: espimagetest.Options{Break: func(b []byte) { b[len(b)-1] ^= 1 }},
			kind: espimage.ErrDigest, msg: "image SHA-256 mismatch (stored "},
		{name: "header edit breaks the SHA-256", opts: espimagetest.Options{Break: func(b []byte) { b[2] = 3 }},
			kind: espimage.ErrDigest, msg: "image SHA-256 mismatch"},
		{name: "truncated before the checksum", raw: func() []byte {
			b, _ := espimagetest.Synthetic("esp32c3", "1.0", espimagetest.Options{})
			return b[:334] // checksum at 335
		}, kind: espimage.ErrTruncated, msg: "checksum at offset"},
		{name: "truncated inside the digest", raw: func() []byte {
			b, _ := espimagetest.Synthetic("esp32c3", "1.0", espimagetest.Options{})
			return b[:len(b)-5]
		}, kind: espimage.ErrTruncated, msg: "appended SHA-256 at offset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b []byte
			if tt.raw != nil {
				b = tt.raw()
			} else {
				var err error
				if b, err = espimagetest.Synthetic("esp32c3", "1.2.3", tt.opts); err != nil {
					t.Fatal(err)
				}
			}
			_, err := parseBytes(b)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want %v", err, tt.kind)
			}
			var e *espimage.Error
			if !errors.As(err, &e) || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("message %q does not contain %q", err, tt.msg)
			}
		})
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, os.ErrDeadlineExceeded
	}
	n := min(len(p), r.n)
	clear(p[:n])
	r.n -= n
	return n, nil
}

func TestParseReaderReportsReadErrorsAsIOErrors(t *testing.T) {
	img, _ := espimagetest.Synthetic("esp32", "1.0", espimagetest.Options{})
	_, err := espimage.ParseReader(io.MultiReader(bytes.NewReader(img[:100]), &failingReader{}), int64(len(img)))
	var e *espimage.Error
	if err == nil || errors.As(err, &e) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a wrapped read error", err)
	}
}
