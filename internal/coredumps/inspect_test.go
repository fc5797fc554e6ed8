package coredumps

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Corpus is the shared esp-coredump test data (never copied into the project).
const Corpus = "../../../shared/testdata/esp-coredump"

// CorpusCase is one dump of the corpus and what its header holds (ESP-FORMATS §4.1).
type CorpusCase struct {
	Name    string
	Version uint32
	ELF     bool // ELF format: carries the app ELF SHA prefix
}

var corpusCases = []CorpusCase{
	{"esp32", 0x00000102, true},
	{"esp32_bin", 0x00000003, false},
	{"esp32c3", 0x00050102, true},
	{"esp32c3_bin", 0x00050102, true},
	{"esp32c6", 0x000D0104, true},
}

func readCorpus(t testing.TB, name, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Corpus, name, file))
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

func TestInspectCorpus(t *testing.T) {
	for _, c := range corpusCases {
		t.Run(c.Name, func(t *testing.T) {
			b64 := readCorpus(t, c.Name, "coredump.b64")
			sum := sha256.Sum256(readCorpus(t, c.Name, "app.elf"))
			elfSHA := hex.EncodeToString(sum[:])
			raw := decodeLines(t, b64)
			hdrLen := versions[uint16(c.Version)].headerLen
			csLen := 4
			if versions[uint16(c.Version)].checksum == sha256Checksum {
				csLen = 32
			}
			dataLen := int(binary.LittleEndian.Uint32(raw))

			uart := "I (312) esp_core_dump_uart: Press Enter to print core dump to UART...\r\n" +
				"\x1b[0;32mI (4312) some_tag: log line\x1b[0m\n" +
				"================= CORE DUMP START =================\r\n" +
				strings.ReplaceAll(string(b64), "\n", "\r\n") +
				"================= CORE DUMP END =================\r\n" +
				"Coredump checksum: 1234abcd\r\nRebooting...\r\n"
			forms := []struct {
				name, container string
				body            []byte
				checksum        bool
			}{
				{"b64", ContainerBase64, b64, true},
				{"uart capture", ContainerBase64, []byte(uart), true},
				{"raw", ContainerRaw, raw, true},
				{"raw with flash tail", ContainerRaw, append(append([]byte{}, raw...), make([]byte, 28)...), true},
			}
			if c.ELF {
				forms = append(forms, struct {
					name, container string
					body            []byte
					checksum        bool
				}{"bare elf", ContainerELF, raw[hdrLen : dataLen-csLen], false})
			}
			for _, f := range forms {
				h := Inspect(f.body)
				if h.Container != f.container || !h.Recognized || h.Problem != "" || h.Version != c.Version {
					t.Fatalf("%s: %+v", f.name, h)
				}
				if f.checksum != (h.ChecksumOK != nil && *h.ChecksumOK) {
					t.Fatalf("%s: checksum %v", f.name, h.ChecksumOK)
				}
				if c.ELF != (h.AppELFSHAPrefix != "") || len(h.AppELFSHAPrefix) > 0 && (len(h.AppELFSHAPrefix) < 8 || !strings.HasPrefix(elfSHA, h.AppELFSHAPrefix)) {
					t.Fatalf("%s: SHA prefix %q, ELF SHA-256 %s", f.name, h.AppELFSHAPrefix, elfSHA)
				}
				if h.Chip != chipNames[uint16(c.Version>>16)] || h.Chip == "" {
					t.Fatalf("%s: chip %q", f.name, h.Chip)
				}
			}

			// A flipped data byte breaks the checksum but the dump stays recognised.
			bad := append([]byte{}, raw...)
			bad[hdrLen+60] ^= 0x40
			if h := Inspect(bad); !h.Recognized || h.ChecksumOK == nil || *h.ChecksumOK || h.Problem != ProblemChecksumMismatch {
				t.Fatalf("corrupted: %+v", h)
			}
			if h := Inspect(raw[:len(raw)/2]); !h.Recognized || h.Problem != ProblemTruncated || h.ChecksumOK == nil || *h.ChecksumOK {
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
		if h.Recognized || h.Problem == "" {
			t.Errorf("%s: %+v", name, h)
		}
	}
	if h := Inspect(bytes.Repeat([]byte{0xff}, 65536)); h.Problem != ProblemErased || h.Recognized || h.Container != ContainerRaw {
		t.Errorf("erased: %+v", h)
	}
	framed := []byte("================= CORE DUMP START =================\nnot base64!\n================= CORE DUMP END =================\n")
	if h := Inspect(framed); h.Container != ContainerBase64 || h.Recognized || h.Problem != ProblemNotCoredump {
		t.Errorf("framed junk: %+v", h)
	}
}

// TestInspectSyntheticVersions covers the formats the corpus has no sample of.
func TestInspectSyntheticVersions(t *testing.T) {
	prefix := "0123456789abcdef"
	for v := range versions {
		version := uint32(0x0009)<<16 | uint32(v)
		d := BuildDump(version, prefix)
		h := Inspect(d)
		if !h.Recognized || h.Version != version || h.Problem != "" || h.Chip != "esp32s3" {
			t.Fatalf("%#x: %+v", version, h)
		}
		if h.ChecksumOK == nil || !*h.ChecksumOK {
			t.Fatalf("%#x: checksum %v", version, h.ChecksumOK)
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
		if h2 := Inspect([]byte(uart.String())); h2.Container != ContainerBase64 || h2.Version != version || h2.Problem != "" {
			t.Fatalf("%#x over UART: %+v", version, h2)
		}
	}
	// V1 over UART has no checksum: recognised, nothing to verify.
	d := BuildDump(0x0001, "")
	noCRC := d[:len(d)-4]
	binary.LittleEndian.PutUint32(noCRC, uint32(len(noCRC)))
	if h := Inspect(noCRC); !h.Recognized || h.ChecksumOK != nil || h.Problem != "" {
		t.Fatalf("V1 without CRC: %+v", h)
	}
}

// BuildDump makes a minimal valid dump of the given version word: header, data (a core ELF
// with an ESP_CORE_DUMP_INFO note for ELF formats, one empty task otherwise) and checksum.
func BuildDump(version uint32, shaPrefix string) []byte {
	vi := versions[uint16(version)]
	var data []byte
	if vi.elf {
		data = buildCoreELF(version, shaPrefix)
	} else {
		data = make([]byte, 12+8) // one task header and a tiny TCB
	}
	csLen := 4
	if vi.checksum == sha256Checksum {
		csLen = 32
	}
	hdr := make([]byte, vi.headerLen)
	le := binary.LittleEndian
	le.PutUint32(hdr[0:], uint32(len(hdr)+len(data)+csLen))
	le.PutUint32(hdr[4:], version)
	if vi.headerLen >= 16 && !vi.elf {
		le.PutUint32(hdr[8:], 1)  // tasks_num
		le.PutUint32(hdr[12:], 8) // tcb_sz
	}
	out := append(hdr, data...)
	if vi.checksum == sha256Checksum {
		s := sha256.Sum256(out)
		return append(out, s[:]...)
	}
	return le.AppendUint32(out, crc32.ChecksumIEEE(out))
}

func buildCoreELF(version uint32, shaPrefix string) []byte {
	le := binary.LittleEndian
	name := "ESP_CORE_DUMP_INFO\x00"
	desc := make([]byte, 72)
	le.PutUint32(desc, version)
	copy(desc[4:], shaPrefix)
	note := le.AppendUint32(nil, uint32(len(name)))
	note = le.AppendUint32(note, uint32(len(desc)))
	note = le.AppendUint32(note, ntESPInfo)
	note = append(note, name...)
	for len(note)%4 != 0 {
		note = append(note, 0)
	}
	note = append(note, desc...)

	h := make([]byte, elfHeaderLen)
	copy(h, "\x7fELF\x01\x01\x01")
	le.PutUint16(h[16:], 4)      // ET_CORE
	le.PutUint16(h[18:], 0xf3)   // RISC-V
	le.PutUint32(h[20:], 1)      // e_version
	le.PutUint32(h[28:], 52)     // e_phoff
	le.PutUint16(h[40:], 52)     // e_ehsize
	le.PutUint16(h[42:], 32)     // e_phentsize
	le.PutUint16(h[44:], 1)      // e_phnum
	ph := make([]byte, phEntLen) // PT_NOTE
	le.PutUint32(ph[0:], ptNote)
	le.PutUint32(ph[4:], elfHeaderLen+phEntLen)
	le.PutUint32(ph[16:], uint32(len(note)))
	le.PutUint32(ph[20:], uint32(len(note)))
	return append(append(h, ph...), note...)
}

func FuzzInspect(f *testing.F) {
	for _, c := range corpusCases {
		if b, err := os.ReadFile(filepath.Join(Corpus, c.Name, "coredump.b64")); err == nil {
			f.Add(b)
		}
	}
	for v := range versions {
		f.Add(BuildDump(0x000D0000|uint32(v), "abcdef01"))
	}
	f.Add([]byte("================= CORE DUMP START =================\nAAAA\n================= CORE DUMP END ================="))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := Inspect(b) // must not panic
		if h.Recognized && h.Container == ContainerUnknown {
			t.Fatalf("recognised with unknown container: %+v", h)
		}
		if h.Container == "" {
			t.Fatalf("no container: %+v", h)
		}
		if len(h.AppELFSHAPrefix) > 64 {
			t.Fatalf("prefix too long: %q", h.AppELFSHAPrefix)
		}
	})
}
