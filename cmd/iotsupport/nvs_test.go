package main_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/proctest"
)

const nvsVectors = "../../../shared/testdata/nvs"

// The CLI resolves file rows against its working directory, as ESP-IDF does, writes the
// same bytes as nvs_partition_gen.py, and dumps them back.
func TestNVSGenerateAndDump(t *testing.T) {
	dir, err := filepath.Abs(nvsVectors)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "sample.bin")
	cmd := exec.Command(proctest.Binary(t), "nvs", "generate", "sample_singlepage_blob.csv", out, "0x4000")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	want, _ := os.ReadFile(filepath.Join(dir, "sample_singlepage_blob.0x4000.bin"))
	if !bytes.Equal(got, want) {
		t.Fatal("generated image differs from ESP-IDF's")
	}

	stdout, stderr, code := proctest.Run(t, nil, "nvs", "dump", filepath.Join(dir, "prov.0x3000.bin"))
	if code != 0 || !strings.Contains(stdout, "namespace prov\n") ||
		!strings.Contains(stdout, `device_secret   string "Zx8Qm3VtR9kPw2LbN7cJ4hYs"`) {
		t.Fatalf("dump exit %d:\n%s%s", code, stdout, stderr)
	}

	// Refusals name the problem and write nothing.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	_ = os.WriteFile(bad, []byte("key,type,encoding,value\nns,namespace,,\nk,data,u8,256\n"), 0o644)
	none := filepath.Join(t.TempDir(), "none.bin")
	_, stderr, code = proctest.Run(t, nil, "nvs", "generate", bad, none, "0x3000")
	if code == 0 || !strings.Contains(stderr, "line 3") || !strings.Contains(stderr, "out of range for u8") {
		t.Fatalf("out-of-range value: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(none); err == nil {
		t.Fatal("an image was written for a refused CSV")
	}
	_, stderr, code = proctest.Run(t, nil, "nvs", "generate", bad, none, "0x3800")
	if code == 0 || !strings.Contains(stderr, "multiple of 4096") {
		t.Fatalf("bad size: exit %d, %s", code, stderr)
	}
}
