package espcore

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// olderUART prints raw as ESP-IDF 3.x–4.x's esp_core_dump_uart does: every write is
// base64-encoded by itself in pieces of at most 48 bytes, one line each, so a write whose
// size is not a multiple of 3 ends in '=' padding in the middle of the dump. The write
// sizes cycle through sizes; eol ends each line: CRLF as printed, CR as some terminal
// captures keep it, or nothing (the dump's lines joined into one).
func olderUART(raw []byte, sizes []int, eol string) []byte {
	var b bytes.Buffer
	logEOL := eol
	if logEOL == "" {
		logEOL = "\r\n"
	}
	b.WriteString("I (3021) esp_core_dump_uart: Press Enter to print core dump to UART..." + logEOL)
	b.WriteString("================= CORE DUMP START =================" + logEOL)
	for i := 0; len(raw) > 0; i++ {
		w := raw[:min(sizes[i%len(sizes)], len(raw))]
		raw = raw[len(w):]
		for len(w) > 0 {
			n := min(48, len(w))
			b.WriteString(base64.StdEncoding.EncodeToString(w[:n]) + eol)
			w = w[n:]
		}
	}
	b.WriteString(logEOL + "================= CORE DUMP END =================" + logEOL + "Coredump checksum: 1a2b3c4d" + logEOL)
	return b.Bytes()
}

// Write sizes: the real header lengths, odd task and segment sizes, and pieces that are
// not multiples of 3, so that padded lines sit all through the dump.
var olderWriteSizes = [][]int{{20, 12, 340, 7, 1000}, {24, 52, 31, 176}, {12, 5, 49, 100, 2}}

func TestOlderUARTLineByLine(t *testing.T) {
	for _, c := range testCases(t) {
		ix := loadIndex(t, c)
		raw := rawDump(t, c)
		ref, err := Decode(raw, ix, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, eol := range []string{"\r\n", "\r", ""} {
			for _, sizes := range olderWriteSizes {
				text := olderUART(raw, sizes, eol)
				if n := bytes.Count(text, []byte("=")) - 2*bytes.Count(text, []byte("=================")); n < 3 {
					t.Fatalf("%s %v: only %d padding characters; the variant tests nothing", c, sizes, n)
				}
				name := c + "/" + strings.NewReplacer("\r", "CR", "\n", "LF").Replace(eol)
				rep, err := Decode(text, ix, Options{})
				if err != nil {
					t.Errorf("%s %v: %v", name, sizes, err)
					continue
				}
				if rep.Input != KindBase64 || !rep.Checksum.OK || rep.Chip != ref.Chip || !equalU32(framePCs(rep), framePCs(ref)) {
					t.Errorf("%s %v: input %s checksum %+v chip %s, frames equal %v", name, sizes, rep.Input, rep.Checksum, rep.Chip, equalU32(framePCs(rep), framePCs(ref)))
				}
				if h := Inspect(text); h.Kind != KindBase64 || !h.ChecksumOK || h.Chip != ref.Chip {
					t.Errorf("%s %v: Inspect %+v", name, sizes, h)
				}
			}
		}
	}
}

// The offline CLI reads the same text.
func TestDecodeFilesOlderUART(t *testing.T) {
	raw := rawDump(t, "esp32c3")
	p := filepath.Join(t.TempDir(), "dump.txt")
	if err := os.WriteFile(p, olderUART(raw, olderWriteSizes[0], "\r"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	code, err := DecodeFiles(p, filepath.Join(testdataDir, "esp32c3", "app.elf"), false, &out)
	if err != nil || code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	if !strings.Contains(out.String(), "Checksum: crc32 OK") || !strings.Contains(out.String(), "vPortExitCritical") {
		t.Fatalf("report:\n%s", out.String())
	}
}
