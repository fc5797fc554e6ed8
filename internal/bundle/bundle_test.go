package bundle_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/naming"
)

func validate(z []byte, code string, l bundle.Limits, mode bundle.Mode) (*bundle.Bundle, error) {
	return bundle.Validate(bytes.NewReader(z), int64(len(z)), code, l, mode)
}

func TestValidateBundlesOfTestELFs(t *testing.T) {
	for _, c := range espimagetest.Cases {
		t.Run(c, func(t *testing.T) {
			elfBytes, err := os.ReadFile(espimagetest.ELFPath(t, c))
			if err != nil {
				t.Fatal(err)
			}
			z := bundletest.BuildCase(t, "model_"+c, c, bundletest.Options{GitCommit: "abc123"})
			b, err := validate(z, "model_"+c, bundle.Limits{}, bundle.Strict)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !naming.ValidVersion(b.Version) || b.Version != b.Image.Version || b.FirmwareVersion != b.Version {
				t.Errorf("version %q, version.json %q", b.Version, b.FirmwareVersion)
			}
			if b.GitCommit != "abc123" || b.IDFVersion != b.Image.IDFVersion || len(b.Warnings) != 0 {
				t.Errorf("git %q idf %q warnings %v", b.GitCommit, b.IDFVersion, b.Warnings)
			}
			wantArch := chips.RISCV
			if strings.HasPrefix(c, "esp32") && !strings.HasPrefix(c, "esp32c") {
				wantArch = chips.Xtensa
			}
			if b.Image.Arch != wantArch {
				t.Errorf("arch %s, want %s", b.Image.Arch, wantArch)
			}
			if len(b.Artifacts) != 5 {
				t.Fatalf("%d artifacts", len(b.Artifacts))
			}
			for i, a := range b.Artifacts {
				if a.Name != bundle.ObjectNames[i] {
					t.Errorf("artifact %d is %s", i, a.Name)
				}
				rc, err := a.Open()
				if err != nil {
					t.Fatal(err)
				}
				data, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || int64(len(data)) != a.Size || sha256.Sum256(data) != a.SHA256 {
					t.Errorf("%s: reopened %d bytes (want %d), err %v", a.Name, len(data), a.Size, err)
				}
			}
			if e := b.Artifact(bundle.ObjELF); e == nil || e.SHA256 != sha256.Sum256(elfBytes) || e.Member != "model_"+c+".elf" {
				t.Errorf("ELF artifact %+v", e)
			}
			if b.Artifact(bundle.ObjBin).SHA256 != b.Image.SHA256 {
				t.Error("firmware.bin SHA-256 differs from the image's")
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		opts bundletest.Options
		fv   string
	}{
		{"stored instead of deflated", bundletest.Options{Store: true}, "1.2.3"},
		{"version.json with UTF-8 BOM", bundletest.Options{VersionJSON: append([]byte{0xEF, 0xBB, 0xBF}, `{"git_commit":"x","idf_version":"v5","firmware_version":"1.2.3"}`...)}, "1.2.3"},
		{"version.json in UTF-16LE with BOM", bundletest.Options{VersionJSON: utf16le(`{"git_commit":"x","idf_version":"v5","firmware_version":"1.2.3"}`)}, "1.2.3"},
		{"other field values null", bundletest.Options{VersionJSON: []byte(`{"git_commit":null,"idf_version":null,"firmware_version":"1.2.3"}`)}, "1.2.3"},
		{"version.json extra fields", bundletest.Options{VersionJSON: []byte(`{"git_commit":"x","idf_version":"v5","firmware_version":"1.2.3","built_by":"ci"}`)}, "1.2.3"},
		{"empty map and sdkconfig", bundletest.Options{Replace: map[string][]byte{"m1.map": {}, "sdkconfig": {}}}, "1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, err := bundletest.Synthetic("m1", "esp32c3", "1.2.3", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := validate(z, "m1", bundle.Limits{}, bundle.Strict)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if b.Version != "1.2.3" || b.FirmwareVersion != tt.fv {
				t.Errorf("version %q, firmware_version %q", b.Version, tt.fv)
			}
		})
	}
}

func utf16le(s string) []byte {
	out := []byte{0xFF, 0xFE}
	for _, r := range s {
		out = append(out, byte(r), 0)
	}
	return out
}

type rawEntry struct {
	name   string
	data   []byte
	method uint16
	flags  uint16
	usize  uint64 // declared uncompressed size; 0 means len(data)
	crc    uint32 // 0 means correct
}

// rawZip writes entries with caller-chosen headers, for lying archives.
func rawZip(t *testing.T, base []byte, entries ...rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if base != nil {
		zr, err := zip.NewReader(bytes.NewReader(base), int64(len(base)))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range zr.File {
			if err := zw.Copy(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: e.method, Flags: e.flags,
			CompressedSize64: uint64(len(e.data)), UncompressedSize64: uint64(len(e.data)), CRC32: crc32.ChecksumIEEE(e.data)}
		if e.usize != 0 {
			h.UncompressedSize64 = e.usize
		}
		if e.crc != 0 {
			h.CRC32 = e.crc
		}
		w, err := zw.CreateRaw(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func deflated(t *testing.T, data []byte) []byte {
	t.Helper()
	z, err := bundletest.Zip([]bundletest.Member{{Name: "x", Data: data}}, zip.Deflate)
	if err != nil {
		t.Fatal(err)
	}
	zr, _ := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	rc, _ := zr.File[0].OpenRaw()
	raw, _ := io.ReadAll(rc)
	return raw
}

func TestValidateRejects(t *testing.T) {
	syn := func(chip string, o bundletest.Options) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			z, err := bundletest.Synthetic("m1", chip, "1.2.3", o)
			if err != nil {
				t.Fatal(err)
			}
			return z
		}
	}
	c3 := func(o bundletest.Options) func(t *testing.T) []byte { return syn("esp32c3", o) }
	zeros := make([]byte, 2<<20)
	vj := func(s string) bundletest.Options { return bundletest.Options{VersionJSON: []byte(s)} }
	elf64 := bundletest.MinimalELF(elf.EM_RISCV)
	elf64[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	relocatable := bundletest.MinimalELF(elf.EM_RISCV)
	relocatable[16] = byte(elf.ET_REL)

	tests := []struct {
		name   string
		zip    func(t *testing.T) []byte
		limits bundle.Limits
		msg    string
	}{
		{name: "not a ZIP", zip: func(*testing.T) []byte { return []byte("\xE9\x03 this is a raw .bin") },
			msg: "Firmware must be uploaded as a ZIP bundle"},
		{name: "empty body", zip: func(*testing.T) []byte { return nil }, msg: "Firmware must be uploaded as a ZIP bundle"},
		{name: "ZIP magic but no central directory", zip: func(*testing.T) []byte { return []byte("PK\x03\x04garbage garbage garbage") },
			msg: "Invalid firmware ZIP: zip: not a valid zip file"},
		{name: "missing members listed sorted", zip: c3(bundletest.Options{Omit: []string{"sdkconfig", "m1.map"}}),
			msg: "Invalid firmware ZIP: missing m1.map, sdkconfig"},
		{name: "member for another model is missing and unexpected", zip: func(t *testing.T) []byte {
			z, _ := bundletest.Synthetic("other", "esp32c3", "1.2.3", bundletest.Options{})
			return z
		}, msg: "Invalid firmware ZIP: missing m1.bin, m1.elf, m1.map"},
		{name: "names are case-sensitive", zip: c3(bundletest.Options{Omit: []string{"sdkconfig"}, Extra: []bundletest.Member{{Name: "SDKCONFIG"}}}),
			msg: "Invalid firmware ZIP: missing sdkconfig"},
		{name: "extra file", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: "notes.txt"}, {Name: "a.txt"}}}),
			msg: "Invalid firmware ZIP: unexpected files: a.txt, notes.txt"},
		{name: "directory entry is an extra file", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: "build/"}}}),
			msg: "Invalid firmware ZIP: unexpected files: build/"},
		{name: "member in a subdirectory", zip: c3(bundletest.Options{Omit: []string{"m1.map"}, Extra: []bundletest.Member{{Name: "build/m1.map"}}}),
			msg: "Invalid firmware ZIP: missing m1.map"},
		{name: "many extra files are capped in the message", zip: c3(bundletest.Options{Extra: manyMembers(25)}),
			msg: "unexpected files: f00, f01, f02, f03, f04, f05, f06, f07, f08, f09, and 15 more"},
		{name: "path traversal", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: "../../etc/cron.d/x"}}}),
			msg: `Invalid firmware ZIP: unsafe file name "../../etc/cron.d/x"`},
		{name: "absolute path", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: "/etc/passwd"}}}),
			msg: `unsafe file name "/etc/passwd"`},
		{name: "backslash path", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: `..\evil.dll`}}}),
			msg: `unsafe file name "..\\evil.dll"`},
		{name: "control character in name", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: "a\nb"}}}),
			msg: `unsafe file name "a\nb"`},
		{name: "duplicate member", zip: c3(bundletest.Options{Extra: []bundletest.Member{{Name: "sdkconfig", Data: []byte("X=1")}}}),
			msg: "Invalid firmware ZIP: duplicate file sdkconfig"},
		{name: "version.json not JSON", zip: c3(vj(`{"git_commit": `)),
			msg: "Invalid firmware ZIP: version.json is not valid JSON: unexpected end of JSON input"},
		{name: "version.json a list", zip: c3(vj(`["git_commit","idf_version","firmware_version"]`)),
			msg: "Invalid firmware ZIP: version.json must contain a JSON object"},
		{name: "version.json missing fields", zip: c3(vj(`{"firmware_version":"1.2.3"}`)),
			msg: "Invalid firmware ZIP: version.json missing fields: git_commit, idf_version"},
		{name: "version.json over 1 MiB", zip: c3(bundletest.Options{Store: true, VersionJSON: append([]byte(`{"pad":"`), bytes.Repeat([]byte("a"), 1<<20)...)}),
			msg: "Invalid firmware ZIP: version.json is too large"},
		{name: "firmware_version differs from the image", zip: c3(vj(`{"git_commit":"x","idf_version":"v5","firmware_version":"1.2.4"}`)),
			msg: `Invalid firmware ZIP: version.json firmware_version "1.2.4" does not match the app image version "1.2.3"`},
		{name: "firmware_version unknown", zip: c3(vj(`{"git_commit":"x","idf_version":"v5","firmware_version":"unknown"}`)),
			msg: `Invalid firmware ZIP: version.json firmware_version "unknown" does not match the app image version "1.2.3"`},
		{name: "firmware_version empty", zip: c3(vj(`{"git_commit":"x","idf_version":"v5","firmware_version":""}`)),
			msg: `Invalid firmware ZIP: version.json firmware_version "" does not match the app image version "1.2.3"`},
		{name: "firmware_version null", zip: c3(vj(`{"git_commit":"x","idf_version":"v5","firmware_version":null}`)),
			msg: `Invalid firmware ZIP: version.json firmware_version "" does not match the app image version "1.2.3"`},
		{name: "image checksum mismatch", zip: c3(bundletest.Options{Image: espimagetest.Options{NoHash: true, Break: func(b []byte) { b[0x140] ^= 1 }}}),
			msg: "Invalid firmware: image checksum mismatch (stored 0x"},
		{name: "image without app descriptor", zip: c3(bundletest.Options{Image: espimagetest.Options{Edit: func(b []byte) { b[0x20] = 0 }}}),
			msg: "Invalid firmware: magic number mismatch (expected 0xABCD5432, got 0xABCD5400)"},
		{name: "image too short", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.bin": []byte("short")}}),
			msg: "Invalid firmware: binary too short (minimum 80 bytes required)"},
		{name: "image unknown chip", zip: c3(bundletest.Options{Image: espimagetest.Options{Edit: func(b []byte) { b[12] = 0xEE }}}),
			msg: "Invalid firmware: unknown chip id 0x00EE in image header"},
		{name: "version with a slash", zip: func(t *testing.T) []byte {
			z, _ := bundletest.Synthetic("m1", "esp32c3", "1.0/../x", bundletest.Options{})
			return z
		}, msg: `Invalid firmware: version "1.0/../x" is not allowed`},
		{name: "ELF is not an ELF", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.elf": []byte("#!/bin/sh\necho hi\n")}}),
			msg: "Invalid firmware ZIP: m1.elf is not an ELF file"},
		{name: "ELF is 64-bit", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.elf": elf64}}),
			msg: "Invalid firmware ZIP: m1.elf is not a 32-bit little-endian ELF file"},
		{name: "ELF is not an executable", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.elf": relocatable}}),
			msg: "Invalid firmware ZIP: m1.elf is not an executable (ELF type ET_REL)"},
		{name: "Xtensa ELF with a RISC-V image", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.elf": bundletest.MinimalELF(elf.EM_XTENSA)}}),
			msg: "Invalid firmware ZIP: m1.elf is built for EM_XTENSA, but m1.bin is an esp32c3 image (riscv)"},
		{name: "RISC-V ELF with an Xtensa image", zip: syn("esp32s3", bundletest.Options{Replace: map[string][]byte{"m1.elf": bundletest.MinimalELF(elf.EM_RISCV)}}),
			msg: "m1.elf is built for EM_RISCV, but m1.bin is an esp32s3 image (xtensa)"},
		{name: "ELF does not match app_elf_sha256", zip: c3(bundletest.Options{Image: espimagetest.Options{ELFSHA256: &[32]byte{1}}}),
			msg: "Invalid firmware ZIP: m1.elf does not belong to m1.bin (ELF SHA-256 "},
		{name: "member over the per-member limit", zip: c3(bundletest.Options{Replace: map[string][]byte{"sdkconfig": make([]byte, 5000)}}),
			limits: bundle.Limits{MaxMemberBytes: 4096}, msg: "Invalid firmware ZIP: sdkconfig is too large (5000 bytes uncompressed, limit 4096)"},
		{name: "bundle over the total limit", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.map": make([]byte, 3000), "sdkconfig": make([]byte, 3000)}}),
			limits: bundle.Limits{MaxTotalBytes: 5000}, msg: "Invalid firmware ZIP: contents too large"},
		{name: "compression ratio bomb", zip: c3(bundletest.Options{Replace: map[string][]byte{"m1.map": zeros}}),
			msg: "Invalid firmware ZIP: m1.map has a suspicious compression ratio (2097152 bytes from"},
		{name: "declared 4 GiB member", zip: func(t *testing.T) []byte {
			return rawZip(t, syn("esp32c3", bundletest.Options{Omit: []string{"m1.map"}})(t), rawEntry{name: "m1.map", data: []byte("x"), usize: 5 << 30})
		}, msg: "Invalid firmware ZIP: m1.map is too large (5368709120 bytes uncompressed, limit 67108864)"},
		{name: "declared size smaller than the data", zip: func(t *testing.T) []byte {
			return rawZip(t, syn("esp32c3", bundletest.Options{Omit: []string{"m1.map"}})(t), rawEntry{name: "m1.map", data: deflated(t, zeros[:500000]), method: zip.Deflate, usize: 100})
		}, msg: "Invalid firmware ZIP: m1.map: zip: not a valid zip file"},
		{name: "CRC mismatch", zip: func(t *testing.T) []byte {
			return rawZip(t, syn("esp32c3", bundletest.Options{Omit: []string{"sdkconfig"}})(t), rawEntry{name: "sdkconfig", data: []byte("CONFIG_X=y\n"), crc: 1})
		}, msg: "Invalid firmware ZIP: sdkconfig: zip: checksum error"},
		{name: "encrypted member", zip: func(t *testing.T) []byte {
			return rawZip(t, syn("esp32c3", bundletest.Options{Omit: []string{"sdkconfig"}})(t), rawEntry{name: "sdkconfig", data: []byte("xxxxxxxxxxxx"), flags: 1})
		}, msg: "Invalid firmware ZIP: sdkconfig is encrypted"},
		{name: "unsupported compression method", zip: func(t *testing.T) []byte {
			return rawZip(t, syn("esp32c3", bundletest.Options{Omit: []string{"sdkconfig"}})(t), rawEntry{name: "sdkconfig", data: []byte("BZh9"), method: 12})
		}, msg: "Invalid firmware ZIP: sdkconfig uses unsupported compression method 12"},
		{name: "corrupt deflate stream", zip: func(t *testing.T) []byte {
			return rawZip(t, syn("esp32c3", bundletest.Options{Omit: []string{"sdkconfig"}})(t), rawEntry{name: "sdkconfig", data: []byte{0xFF, 0xFF, 0xFF, 0xFF}, method: zip.Deflate, usize: 10})
		}, msg: "Invalid firmware ZIP: sdkconfig: flate: corrupt input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := validate(tt.zip(t), "m1", tt.limits, bundle.Strict)
			var ve *bundle.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v (%T), want a *ValidationError", err, err)
			}
			if !strings.Contains(ve.Msg, tt.msg) {
				t.Fatalf("message %q\ndoes not contain %q", ve.Msg, tt.msg)
			}
		})
	}
}

func manyMembers(n int) []bundletest.Member {
	var m []bundletest.Member
	for i := range n {
		m = append(m, bundletest.Member{Name: string([]byte{'f', byte('0' + i/10), byte('0' + i%10)})})
	}
	return m
}

func TestLegacyModeTolerates(t *testing.T) {
	tests := []struct {
		name     string
		opts     bundletest.Options
		warnings []string
	}{
		{"missing map, sdkconfig and version.json", bundletest.Options{Omit: []string{"m1.map", "sdkconfig", "version.json"}},
			[]string{"bundle has no m1.map", "bundle has no sdkconfig", "bundle has no version.json"}},
		{"ELF not matching app_elf_sha256", bundletest.Options{Image: espimagetest.Options{ELFSHA256: &[32]byte{}}},
			[]string{"m1.elf does not belong to m1.bin"}},
		{"firmware_version mismatch", bundletest.Options{VersionJSON: []byte(`{"git_commit":"x","idf_version":"v5","firmware_version":"0.9"}`)},
			[]string{`version.json firmware_version "0.9" does not match`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, err := bundletest.Synthetic("m1", "esp32", "1.2.3", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := validate(z, "m1", bundle.Limits{}, bundle.Strict); err == nil {
				t.Fatal("strict mode accepted it")
			}
			b, err := validate(z, "m1", bundle.Limits{}, bundle.Legacy)
			if err != nil {
				t.Fatalf("legacy: %v", err)
			}
			if len(b.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings %q, want %q", b.Warnings, tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(b.Warnings[i], w) {
					t.Errorf("warning %q does not contain %q", b.Warnings[i], w)
				}
			}
			if b.Version != "1.2.3" || b.Artifact(bundle.ObjBin) == nil || b.Artifact(bundle.ObjELF) == nil {
				t.Errorf("bundle %+v", b)
			}
		})
	}
	t.Run("ELF is still required", func(t *testing.T) {
		z, _ := bundletest.Synthetic("m1", "esp32", "1.2.3", bundletest.Options{Omit: []string{"m1.elf"}})
		if _, err := validate(z, "m1", bundle.Limits{}, bundle.Legacy); err == nil || err.Error() != "Invalid firmware ZIP: missing m1.elf" {
			t.Fatalf("err = %v", err)
		}
	})
}

// failingReaderAt fails every read past limit, like a disk error.
type failingReaderAt struct {
	r     *bytes.Reader
	limit int64
}

var errDisk = errors.New("disk on fire")

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.limit {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

func TestValidateReportsIOErrorsAsSuch(t *testing.T) {
	z, _ := bundletest.Synthetic("m1", "esp32", "1.2.3", bundletest.Options{})
	for _, limit := range []int64{0, 100, int64(len(z)) - 30} {
		_, err := bundle.Validate(failingReaderAt{bytes.NewReader(z), limit}, int64(len(z)), "m1", bundle.Limits{}, bundle.Strict)
		var ve *bundle.ValidationError
		if !errors.Is(err, errDisk) || errors.As(err, &ve) {
			t.Errorf("limit %d: err = %v, want the wrapped I/O error", limit, err)
		}
	}
}

func TestValidateRejectsBadModelCode(t *testing.T) {
	z, _ := bundletest.Synthetic("m1", "esp32", "1.2.3", bundletest.Options{})
	if _, err := validate(z, "../m1", bundle.Limits{}, bundle.Strict); err == nil {
		t.Fatal("accepted a bad model code")
	}
}

func TestValidateFromTempFile(t *testing.T) {
	z := bundletest.BuildCase(t, "esp32_dev", "esp32", bundletest.Options{Version: "3.1.4"})
	f, err := os.CreateTemp(t.TempDir(), "bundle-*.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(z); err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Validate(f, int64(len(z)), "esp32_dev", bundle.DefaultLimits(), bundle.Strict)
	if err != nil {
		t.Fatal(err)
	}
	if b.Version != "3.1.4" || b.Image.Chip != "esp32" {
		t.Fatalf("version %q chip %q", b.Version, b.Image.Chip)
	}
	rc, err := b.Artifact(bundle.ObjVersionJSON).Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	if !strings.Contains(string(data), `"firmware_version": "3.1.4"`) {
		t.Fatalf("version.json = %s", data)
	}
	if got := b.Image.AppELFSHA256Hex(); got != fmt.Sprintf("%x", b.Artifact(bundle.ObjELF).SHA256) {
		t.Fatalf("AppELFSHA256Hex = %s", got)
	}
}
