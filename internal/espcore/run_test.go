package espcore

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeFilesText(t *testing.T) {
	for _, c := range testCases(t) {
		var b bytes.Buffer
		code, err := DecodeFiles(filepath.Join(testdataDir, c, "coredump.b64"), filepath.Join(testdataDir, c, "app.elf"), false, &b)
		if err != nil || code != 0 {
			t.Fatalf("%s: code %d err %v", c, code, err)
		}
		if !strings.Contains(b.String(), "CURRENT THREAD STACK") {
			t.Errorf("%s: text lacks backtrace section", c)
		}
		if testing.Verbose() && c == "esp32" {
			t.Log("\n" + b.String())
		}
		b.Reset()
		if _, err := DecodeFiles(filepath.Join(testdataDir, c, "coredump.b64"), "", true, &b); err != nil {
			t.Fatal(err)
		}
		var r Report
		if err := json.Unmarshal(b.Bytes(), &r); err != nil || len(r.Threads) == 0 {
			t.Errorf("%s: JSON round trip: %v", c, err)
		}
	}
}
