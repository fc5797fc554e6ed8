package coredumps

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/espcore/espcoretest"
)

// The inspector itself is tested in espcore (TestInspect*, FuzzInspect, and its agreement
// with the decoder in TestInspectorAgreesWithDecoder); these tests cover ingest's view of it.

// BuildDump makes a minimal valid dump of the given version word (see espcoretest).
func BuildDump(version uint32, shaPrefix string) []byte {
	return espcoretest.BuildDump(version, shaPrefix)
}

func TestInspectIngestView(t *testing.T) {
	elf := BuildDump(0x000D0104, "abcdef01")
	bin := BuildDump(0x00000003, "")
	truncated := elf[:len(elf)-8]
	v1 := BuildDump(0x00000001, "")
	v1 = v1[:len(v1)-4] // over UART: no CRC, data_len excludes it
	binary.LittleEndian.PutUint32(v1, uint32(len(v1)))
	yes, no := true, false
	for _, c := range []struct {
		name string
		body []byte
		want Header
	}{
		{"elf", elf, Header{ContainerRaw, 0x000D0104, "esp32c6", &yes, "abcdef01", true, ""}},
		{"binary", bin, Header{ContainerRaw, 0x00000003, "esp32", &yes, "", true, ""}},
		{"truncated", truncated, Header{ContainerRaw, 0x000D0104, "esp32c6", &no, "abcdef01", true, ProblemTruncated}},
		{"V1 over UART", v1, Header{ContainerRaw, 0x00000001, "esp32", nil, "", true, ""}},
		{"bare elf", espcoretest.BuildCoreELF(0x00050102, "0123"), Header{ContainerELF, 0x00050102, "esp32c3", nil, "0123", true, ""}},
		{"unknown chip", BuildDump(0x00420102, ""), Header{ContainerRaw, 0x00420102, "", &yes, "", true, ""}},
		{"junk", []byte{0xA5, 0x5A, 0x00, 0x13, 1, 2, 3, 4, 5}, Header{ContainerUnknown, 0, "", nil, "", false, ProblemNotCoredump}},
	} {
		got := Inspect(c.body)
		okEqual := (got.ChecksumOK == nil) == (c.want.ChecksumOK == nil) && (got.ChecksumOK == nil || *got.ChecksumOK == *c.want.ChecksumOK)
		got.ChecksumOK, c.want.ChecksumOK = nil, nil
		if got != c.want || !okEqual {
			t.Errorf("%s: got %+v (checksum equal %v), want %+v", c.name, got, okEqual, c.want)
		}
	}
	if FormatOf(0x000D0104) != "elf" || FormatOf(0x00000003) != "binary" || FormatOf(0x00000205) != "" {
		t.Error("FormatOf")
	}
	if !KnownChip("esp32s3") || KnownChip("esp8266") || KnownChip("ESP32") {
		t.Error("KnownChip")
	}
}

// corpus is the shared esp-coredump test data (never copied into the project).
const corpus = "../../../shared/testdata/esp-coredump"

// corpusDump is one case of the corpus: its .b64 file and the raw partition bytes it holds.
type corpusDump struct{ b64, raw []byte }

// corpusDumps reads every case of the corpus.
func corpusDumps(t *testing.T) map[string]corpusDump {
	ents, err := os.ReadDir(corpus)
	if err != nil {
		t.Fatalf("shared test data missing: %v", err)
	}
	out := map[string]corpusDump{}
	for _, e := range ents {
		b64, err := os.ReadFile(filepath.Join(corpus, e.Name(), "coredump.b64"))
		if err != nil {
			continue
		}
		var raw []byte
		for _, l := range strings.Fields(string(b64)) {
			d, err := base64.StdEncoding.DecodeString(l)
			if err != nil {
				t.Fatalf("%s: %v", e.Name(), err)
			}
			raw = append(raw, d...)
		}
		out[e.Name()] = corpusDump{b64, raw}
	}
	if len(out) < 5 {
		t.Fatalf("only %d corpus dumps", len(out))
	}
	return out
}

// uart frames a dump as the device prints it: one base64 line per write of at most 48
// bytes between the markers, with log lines around.
func uart(raw []byte) []byte {
	var b strings.Builder
	b.WriteString("I (312) esp_core_dump_uart: Press Enter to print core dump to UART...\r\n")
	b.WriteString("================= CORE DUMP START =================\r\n")
	for i := 0; i < len(raw); i += 48 {
		b.WriteString(base64.StdEncoding.EncodeToString(raw[i:min(i+48, len(raw))]) + "\r\n")
	}
	b.WriteString("================= CORE DUMP END =================\r\nRebooting...\r\n")
	return []byte(b.String())
}

// TestInspectorAgreesWithDecoder runs ingest's inspector and the decoder over every real
// dump in raw, base64 and ELF form and over damaged variants of each. A dump the
// inspector calls sound is one the decoder accepts, one the decoder refuses is one the
// inspector flags (and one it does not recognise), and where both take a dump they agree
// on container, version, chip, checksum and app ELF SHA prefix.
func TestInspectorAgreesWithDecoder(t *testing.T) {
	le := binary.LittleEndian
	kinds := map[string]bool{}
	for name, cd := range corpusDumps(t) {
		raw := cd.raw
		version := le.Uint32(raw[4:])
		hdrLen, csLen := espcoretest.HeaderLen(version), espcoretest.ChecksumLen(version)
		dataLen := int(le.Uint32(raw))
		edit := func(f func(b []byte)) []byte {
			b := append([]byte{}, raw...)
			f(b)
			return b
		}
		// variants: body and the problem kind ingest must find ("" for none).
		type variant struct {
			body []byte
			want string
		}
		variants := map[string]variant{
			"raw":              {raw, ""},
			"raw+flash tail":   {append(append([]byte{}, raw...), make([]byte, 28)...), ""},
			"flipped data":     {edit(func(b []byte) { b[hdrLen+60] ^= 0x40 }), ProblemChecksumMismatch},
			"flipped checksum": {edit(func(b []byte) { b[dataLen-1] ^= 0x01 }), ProblemChecksumMismatch},
			"header cut":       {raw[:hdrLen-1], ProblemTruncated},
			"header only":      {raw[:hdrLen], ProblemTruncated},
			"half":             {raw[:len(raw)/2], ProblemTruncated},
			"last byte cut":    {raw[:dataLen-1], ProblemTruncated},
			"data_len 0":       {edit(func(b []byte) { le.PutUint32(b, 0) }), ProblemBadLength},
			"data_len erased":  {edit(func(b []byte) { le.PutUint32(b, 0xFFFFFFFF) }), ProblemTruncated},
			"data_len header":  {edit(func(b []byte) { le.PutUint32(b, uint32(hdrLen)) }), ProblemBadLength},
			"unknown version":  {edit(func(b []byte) { le.PutUint32(b[4:], version&0xFFFF0000|0x0205) }), ProblemNotCoredump},
			"unknown chip":     {espcoretest.Reseal(edit(func(b []byte) { le.PutUint32(b[4:], 0x00420000|version&0xFFFF) })), ""},
			"erased":           {bytes.Repeat([]byte{0xFF}, len(raw)), ProblemErased},
			"zeroed header":    {edit(func(b []byte) { clear(b[:hdrLen]) }), ProblemNotCoredump},
		}
		if espcore.FormatOf(version) == "elf" {
			elf := raw[hdrLen : dataLen-csLen]
			bareEdit := func(f func(b []byte)) []byte {
				b := append([]byte{}, elf...)
				f(b)
				return b
			}
			inRaw := func(f func(b []byte)) []byte { // an edit of the core ELF under a valid checksum
				return espcoretest.Reseal(edit(func(b []byte) { f(b[hdrLen : dataLen-csLen]) }))
			}
			phnum := int(le.Uint16(elf[44:]))
			variants["bare elf"] = variant{elf, ""}
			variants["bare elf, 64-bit"] = variant{bareEdit(func(b []byte) { b[4] = 2 }), ProblemBadELF}
			variants["bare elf, big-endian"] = variant{bareEdit(func(b []byte) { b[5] = 2 }), ProblemBadELF}
			variants["bare elf, executable"] = variant{bareEdit(func(b []byte) { le.PutUint16(b[16:], 2) }), ProblemBadELF}
			variants["bare elf, ARM"] = variant{bareEdit(func(b []byte) { le.PutUint16(b[18:], 40) }), ProblemBadELF}
			variants["bare elf, program headers past the end"] = variant{bareEdit(func(b []byte) { le.PutUint16(b[44:], 0xFFFF) }), ProblemBadELF}
			variants["bare elf, program header size"] = variant{bareEdit(func(b []byte) { le.PutUint16(b[42:], 8) }), ProblemBadELF}
			variants["bare elf, ELF header only"] = variant{elf[:52], ProblemBadELF}
			variants["bare elf, program headers only"] = variant{elf[:52+32*phnum], ProblemBadELF}
			variants["elf in raw, 64-bit"] = variant{inRaw(func(b []byte) { b[4] = 2 }), ProblemBadELF}
			variants["elf in raw, ARM"] = variant{inRaw(func(b []byte) { le.PutUint16(b[18:], 40) }), ProblemBadELF}
			variants["elf in raw, program headers past the end"] = variant{inRaw(func(b []byte) { le.PutUint16(b[44:], 0xFFFF) }), ProblemBadELF}
			variants["elf in raw, not an ELF"] = variant{inRaw(func(b []byte) { b[1] = 'X' }), ProblemBadELF}
		}
		for vname, v := range maps.Clone(variants) {
			if v.want == ProblemErased || v.want == "" && len(v.body) == 0 {
				continue
			}
			variants[vname+", base64"] = variant{uart(v.body), v.want}
		}
		variants["b64 file"] = variant{cd.b64, ""}
		variants["uart capture"] = variant{[]byte("I (312) esp_core_dump_uart: Press Enter to print core dump to UART...\r\n" +
			"\x1b[0;32mI (4312) some_tag: log line\x1b[0m\n" +
			"================= CORE DUMP START =================\r\n" +
			strings.ReplaceAll(string(cd.b64), "\n", "\r\n") +
			"================= CORE DUMP END =================\r\n" +
			"Coredump checksum: 1234abcd\r\nRebooting...\r\n"), ""}
		lines := strings.Split(string(uart(raw)), "\r\n")
		lines[12] = "#" + lines[12] // a line of data, not base64 any more: 48 bytes go missing
		variants["base64, a line damaged"] = variant{[]byte(strings.Join(lines, "\r\n")), ProblemTruncated}

		for vname, v := range variants {
			in := Inspect(v.body)
			rep, err := espcore.Decode(v.body, nil, espcore.Options{})
			where := name + "/" + vname
			kinds[in.Problem] = true
			if in.Problem != v.want {
				t.Errorf("%s: ingest found %q, want %q (%+v)", where, in.Problem, v.want, in)
			}
			switch {
			case in.Recognized && in.Problem == "" && err != nil:
				t.Errorf("%s: sound to ingest, refused by the decoder: %v", where, err)
			case err != nil && in.Problem == "":
				t.Errorf("%s: the decoder refuses it (%v), ingest flags nothing", where, err)
			case !in.Recognized && err == nil:
				t.Errorf("%s: not recognised by ingest, decoded", where)
			}
			if err != nil {
				continue
			}
			if rep.Input != in.Container || rep.Version != in.Version || chipName(rep) != in.Chip || rep.AppELFSHAPrefix != in.AppELFSHAPrefix {
				t.Errorf("%s: ingest %+v, decoder input %s version %#x chip %s (%#x) prefix %q", where, in, rep.Input, rep.Version, rep.Chip, rep.ChipID, rep.AppELFSHAPrefix)
			}
			if (in.ChecksumOK == nil) != (rep.Checksum.Kind == "none") || in.ChecksumOK != nil && *in.ChecksumOK != rep.Checksum.OK {
				t.Errorf("%s: ingest checksum %v, decoder %+v", where, in.ChecksumOK, rep.Checksum)
			}
		}
	}
	for _, k := range []string{"", ProblemNotCoredump, ProblemErased, ProblemTruncated, ProblemBadLength, ProblemChecksumMismatch, ProblemBadELF} {
		if !kinds[k] {
			t.Errorf("no variant found problem %q", k)
		}
	}
}

// chipName is the chip table's name of the chip a report names, "" for none.
func chipName(rep *espcore.Report) string {
	if rep.Version == 0 {
		return ""
	}
	c, _ := chips.ByID(rep.ChipID)
	return c.Name
}
