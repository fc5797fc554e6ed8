package espcore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espcore/espcoretest"
)

// inspectCase is one dump of the shared corpus and what its header holds (ESP-FORMATS §4.1).
type inspectCase struct {
	Name    string
	Version uint32
	ELF     bool // ELF format: carries the app ELF SHA prefix
}

var inspectCases = []inspectCase{
	{"esp32", 0x00000102, true},
	{"esp32_bin", 0x00000003, false},
	{"esp32c3", 0x00050102, true},
	{"esp32c3_bin", 0x00050102, true},
	{"esp32c6", 0x000D0104, true},
}

func readCorpus(t testing.TB, name, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdataDir, name, file))
	if err != nil {
		t.Fatalf("shared test data missing: %v", err)
	}
	return b
}

// decodeLines decodes a .b64 file line by line, the reference way.
func decodeLines(t testing.TB, b64 []byte) []byte {
	var out []byte
	for _, l := range strings.Split(strings.TrimSpace(string(b64)), "\n") {
		d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(l))
		if err != nil {
			t.Fatalf("decode %q: %v", l, err)
		}
		out = append(out, d...)
	}
	return out
}

// verified is the checksum result ingest stores: nil when the dump carries no checksum
// to verify.
func verified(h Header) *bool {
	if h.ChecksumKind == "" || h.ChecksumKind == "none" {
		return nil
	}
	return &h.ChecksumOK
}

// chipName is the table name of a version word's chip, "" when unknown.
func chipName(version uint32) string {
	c, _ := chips.ByID(uint16(version >> 16))
	return c.Name
}

// uartCapture frames a .b64 file as a terminal capture of the device's output.
func uartCapture(b64 []byte) string {
	return "I (312) esp_core_dump_uart: Press Enter to print core dump to UART...\r\n" +
		"\x1b[0;32mI (4312) some_tag: log line\x1b[0m\n" +
		"================= CORE DUMP START =================\r\n" +
		strings.ReplaceAll(string(b64), "\n", "\r\n") +
		"================= CORE DUMP END =================\r\n" +
		"Coredump checksum: 1234abcd\r\nRebooting...\r\n"
}

func TestInspectCorpus(t *testing.T) {
	for _, c := range inspectCases {
		t.Run(c.Name, func(t *testing.T) {
			b64 := readCorpus(t, c.Name, "coredump.b64")
			sum := sha256.Sum256(readCorpus(t, c.Name, "app.elf"))
			elfSHA := hex.EncodeToString(sum[:])
			raw := decodeLines(t, b64)
			hdrLen := versions[uint16(c.Version)].hdrLen
			csLen := 4
			if versions[uint16(c.Version)].sha {
				csLen = 32
			}
			dataLen := int(binary.LittleEndian.Uint32(raw))

			forms := []struct {
				name, container string
				body            []byte
				checksum        bool
			}{
				{"b64", KindBase64, b64, true},
				{"uart capture", KindBase64, []byte(uartCapture(b64)), true},
				{"raw", KindRaw, raw, true},
				{"raw with flash tail", KindRaw, append(append([]byte{}, raw...), make([]byte, 28)...), true},
			}
			if c.ELF {
				forms = append(forms, struct {
					name, container string
					body            []byte
					checksum        bool
				}{"bare elf", KindELF, raw[hdrLen : dataLen-csLen], false})
			}
			for _, f := range forms {
				h := Inspect(f.body)
				if h.Kind != f.container || !h.Recognized || h.ProblemKind != "" || h.Problem != "" || h.Version != c.Version {
					t.Fatalf("%s: %+v", f.name, h)
				}
				if ok := verified(h); f.checksum != (ok != nil && *ok) {
					t.Fatalf("%s: checksum %v", f.name, ok)
				}
				if c.ELF != (h.AppELFSHAPrefix != "") || len(h.AppELFSHAPrefix) > 0 && (len(h.AppELFSHAPrefix) < 8 || !strings.HasPrefix(elfSHA, h.AppELFSHAPrefix)) {
					t.Fatalf("%s: SHA prefix %q, ELF SHA-256 %s", f.name, h.AppELFSHAPrefix, elfSHA)
				}
				if h.ChipName != chipName(c.Version) || h.ChipName == "" {
					t.Fatalf("%s: chip %q", f.name, h.ChipName)
				}
			}

			// A flipped data byte breaks the checksum but the dump stays recognised.
			bad := append([]byte{}, raw...)
			bad[hdrLen+60] ^= 0x40
			if h := Inspect(bad); !h.Recognized || verified(h) == nil || *verified(h) || h.ProblemKind != ProblemChecksumMismatch {
				t.Fatalf("corrupted: %+v", h)
			}
			if h := Inspect(raw[:len(raw)/2]); !h.Recognized || h.ProblemKind != ProblemTruncated || verified(h) == nil || *verified(h) {
				t.Fatalf("truncated: %+v", h)
			}
		})
	}
}

func TestInspectNotACoredump(t *testing.T) {
	for name, body := range map[string][]byte{
		"text":        []byte("hello, this is not a dump\n"),
		"base64 junk": []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("junk"), 40))),
		"zeros":       make([]byte, 4096),
		"short":       {1, 2, 3},
		"png":         []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
		"elf exe":     append([]byte("\x7fELF\x01\x01\x01"), make([]byte, 60)...),
	} {
		h := Inspect(body)
		if h.Recognized || h.ProblemKind == "" || h.Problem == "" {
			t.Errorf("%s: %+v", name, h)
		}
	}
	if h := Inspect(bytes.Repeat([]byte{0xff}, 65536)); h.ProblemKind != ProblemErased || h.Recognized || h.Kind != KindRaw {
		t.Errorf("erased: %+v", h)
	}
	framed := []byte("================= CORE DUMP START =================\nnot base64!\n================= CORE DUMP END =================\n")
	if h := Inspect(framed); h.Kind != KindBase64 || h.Recognized || h.ProblemKind != ProblemNotCoredump {
		t.Errorf("framed junk: %+v", h)
	}
}

// TestInspectSyntheticVersions covers the formats the corpus has no sample of.
func TestInspectSyntheticVersions(t *testing.T) {
	prefix := "0123456789abcdef"
	for v := range versions {
		version := uint32(0x0009)<<16 | uint32(v)
		d := espcoretest.BuildDump(version, prefix)
		h := Inspect(d)
		if !h.Recognized || h.Version != version || h.ProblemKind != "" || h.ChipName != "esp32s3" {
			t.Fatalf("%#x: %+v", version, h)
		}
		if ok := verified(h); ok == nil || !*ok {
			t.Fatalf("%#x: checksum %v", version, ok)
		}
		if wantELF := versions[v].elf; wantELF != (h.AppELFSHAPrefix == prefix) || FormatOf(version) != map[bool]string{true: "elf", false: "binary"}[wantELF] {
			t.Fatalf("%#x: prefix %q format %q", version, h.AppELFSHAPrefix, FormatOf(version))
		}
		// Over UART as esp-idf prints it: one base64 line per write of at most 48 bytes.
		var uart strings.Builder
		uart.WriteString("================= CORE DUMP START =================\n")
		for i := 0; i < len(d); i += 48 {
			uart.WriteString(base64.StdEncoding.EncodeToString(d[i:min(i+48, len(d))]) + "\n")
		}
		uart.WriteString("================= CORE DUMP END =================\n")
		if h2 := Inspect([]byte(uart.String())); h2.Kind != KindBase64 || h2.Version != version || h2.ProblemKind != "" {
			t.Fatalf("%#x over UART: %+v", version, h2)
		}
	}
	// V1 over UART has no checksum: recognised, nothing to verify.
	d := espcoretest.BuildDump(0x0001, "")
	noCRC := d[:len(d)-4]
	binary.LittleEndian.PutUint32(noCRC, uint32(len(noCRC)))
	if h := Inspect(noCRC); !h.Recognized || verified(h) != nil || h.ProblemKind != "" {
		t.Fatalf("V1 without CRC: %+v", h)
	}
}

func FuzzInspect(f *testing.F) {
	for _, c := range inspectCases {
		if b, err := os.ReadFile(filepath.Join(testdataDir, c.Name, "coredump.b64")); err == nil {
			f.Add(b)
		}
	}
	for v := range versions {
		f.Add(espcoretest.BuildDump(0x000D0000|uint32(v), "abcdef01"))
	}
	f.Add([]byte("================= CORE DUMP START =================\nAAAA\n================= CORE DUMP END ================="))
	f.Fuzz(func(t *testing.T, b []byte) {
		recoverPanics = false
		h := Inspect(b) // must not panic
		if h.Recognized && h.Kind == KindUnknown {
			t.Fatalf("recognised with unknown container: %+v", h)
		}
		if h.Kind == "" {
			t.Fatalf("no container: %+v", h)
		}
		if len(h.AppELFSHAPrefix) > 64 {
			t.Fatalf("prefix too long: %q", h.AppELFSHAPrefix)
		}
		if h.Problem != "" && h.ProblemKind == "" {
			t.Fatalf("refused without a problem kind: %+v", h)
		}
	})
}
