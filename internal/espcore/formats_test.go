package espcore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

func rawDump(t testing.TB, c string) []byte {
	raw, _ := decodeUART(readDump(t, c))
	if len(raw) == 0 {
		t.Fatalf("%s: no base64", c)
	}
	return raw
}

// rewrap re-encodes a dump body under another container version.
func rewrap(body []byte, chip uint16, ver uint16, tasks, tcbSz uint32) []byte {
	vi := versions[ver]
	csLen := 4
	if vi.sha {
		csLen = 32
	}
	if vi.optional {
		csLen = 0 // legacy V1 over UART: no checksum, data_len excludes it
	}
	h := make([]byte, vi.hdrLen)
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(vi.hdrLen+len(body)+csLen))
	le.PutUint32(h[4:], uint32(chip)<<16|uint32(ver))
	if vi.hdrLen == 12 {
		le.PutUint32(h[8:], 3)
	} else {
		le.PutUint32(h[8:], tasks)
		le.PutUint32(h[12:], tcbSz)
		if vi.hdrLen == 24 {
			le.PutUint32(h[20:], 3)
		}
	}
	out := append(h, body...)
	if vi.sha {
		s := sha256.Sum256(out)
		out = append(out, s[:]...)
	} else if !vi.optional {
		out = le.AppendUint32(out, crc32.ChecksumIEEE(out))
	}
	return out
}

func uartText(raw []byte) []byte {
	var b bytes.Buffer
	b.WriteString("I (123) esp_core_dump_uart: Press Enter to print core dump to UART...\r\n")
	b.WriteString("================= CORE DUMP START =================\r\n")
	// Each device write is encoded separately: header, then 48-byte chunks.
	for len(raw) > 0 {
		n := min(48, len(raw))
		b.WriteString(base64.StdEncoding.EncodeToString(raw[:n]) + "\r\n")
		raw = raw[n:]
	}
	b.WriteString("================= CORE DUMP END =================\r\nCoredump checksum: 12345678\r\nI (200) main: rebooting\n")
	return b.Bytes()
}

func framePCs(r *Report) []uint32 {
	var pcs []uint32
	for _, th := range r.Threads {
		for _, f := range th.Frames {
			pcs = append(pcs, f.PC)
		}
	}
	return pcs
}

func TestContainerVariants(t *testing.T) {
	for _, c := range testCases(t) {
		ix := loadIndex(t, c)
		raw := rawDump(t, c)
		ref, err := Decode(readDump(t, c), ix, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ver := uint16(le32(raw, 4))
		chip := uint16(le32(raw, 4) >> 16)
		vi := versions[ver]
		csLen := 4
		if vi.sha {
			csLen = 32
		}
		body := raw[vi.hdrLen : le32(raw, 0)-uint32(csLen)]
		tasks, tcb := le32(raw, 8), le32(raw, 12)
		variants := map[string][]byte{
			"raw":      raw,
			"raw+pad":  append(append([]byte{}, raw...), make([]byte, 28)...),
			"uart-log": uartText(raw),
		}
		if vi.elf {
			variants["bare-elf"] = body
			for _, v := range []uint16{verELFCRC32, verELFSHA256, verELFCRC32V21, verELFSHA256V2, verELFSHA256V3} {
				variants[versions[v].name] = rewrap(body, chip, v, 0, 0)
			}
		} else {
			for _, v := range []uint16{verBinV1, verBinV2, verBinV21} {
				variants[versions[v].name] = rewrap(body, chip, v, tasks, tcb)
			}
			// Flash V1: CRC appended and counted in data_len.
			v1 := rewrap(body, chip, verBinV1, tasks, tcb)
			binary.LittleEndian.PutUint32(v1, uint32(len(v1)+4))
			variants["BIN_V1_flash"] = binary.LittleEndian.AppendUint32(v1, crc32.ChecksumIEEE(v1))
		}
		for name, d := range variants {
			r, err := Decode(d, ix, Options{})
			if err != nil {
				t.Errorf("%s/%s: %v", c, name, err)
				continue
			}
			if !r.Checksum.OK {
				t.Errorf("%s/%s: checksum %+v", c, name, r.Checksum)
			}
			if r.Chip != ref.Chip || r.DumpFormat != ref.DumpFormat {
				t.Errorf("%s/%s: chip %s format %s", c, name, r.Chip, r.DumpFormat)
			}
			if !equalU32(framePCs(r), framePCs(ref)) {
				t.Errorf("%s/%s: frames differ", c, name)
			}
			h := Inspect(d)
			if h.Chip != ref.Chip || (vi.elf && !strings.HasPrefix(r.ELFSHA256, h.AppELFSHAPrefix)) || h.AppELFSHAPrefix != ref.AppELFSHAPrefix {
				t.Errorf("%s/%s: Inspect %+v", c, name, h)
			}
		}
		// A corrupted byte is a warning, not a failure.
		bad := append([]byte{}, raw...)
		bad[len(bad)-40] ^= 0xff
		r, err := Decode(bad, ix, Options{})
		if err != nil || r.Checksum.OK || len(r.Warnings) == 0 {
			t.Errorf("%s: corrupted dump: err %v checksum %+v", c, err, r.Checksum)
		}
		if h := Inspect(bad); h.ChecksumOK || h.Kind != KindRaw {
			t.Errorf("%s: Inspect corrupted: %+v", c, h)
		}
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWrongELF(t *testing.T) {
	cs := testCases(t)
	if len(cs) < 2 {
		t.Skip()
	}
	// esp32 dump with the esp32_bin ELF: same chip, different build.
	r, err := Decode(readDump(t, "esp32"), loadIndex(t, "esp32_bin"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ELFMatch == nil || *r.ELFMatch || !strings.Contains(r.Text(), "DOES NOT MATCH") {
		t.Errorf("mismatch not reported: %v", r.ELFMatch)
	}
	if len(r.Threads) == 0 || len(r.Threads[0].Frames) < 3 {
		t.Errorf("decoder gave up on ELF mismatch")
	}
	// Wrong architecture: symbols dropped, registers kept.
	r, err = Decode(readDump(t, "esp32c3"), loadIndex(t, "esp32"), Options{})
	if err != nil || len(r.Registers) == 0 {
		t.Fatalf("arch mismatch: %v", err)
	}
	// No ELF at all.
	r, err = Decode(readDump(t, "esp32"), nil, Options{})
	if err != nil || len(r.Threads[0].Frames) < 3 {
		t.Fatalf("no ELF: %v", err)
	}
}

func TestInspectGarbage(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("hello\nworld\n"), {0x7f, 'E', 'L', 'F'}, make([]byte, 24)} {
		h := Inspect(in)
		if h.Kind == "" {
			t.Errorf("empty kind for %q", in)
		}
		if _, err := Decode(in, nil, Options{}); err == nil {
			t.Errorf("Decode(%q) succeeded", in)
		}
	}
}
