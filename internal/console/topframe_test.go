package console

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
)

// The crashing line the page puts first is the test apps' own code (main/test_core_dump.c),
// not ESP-IDF's panic or abort frames above it.
func TestTopFrameIsTheApplicationsLine(t *testing.T) {
	for _, tc := range espimagetest.Cases {
		elf, err := os.ReadFile(espimagetest.ELFPath(t, tc))
		if err != nil {
			t.Fatal(err)
		}
		dump, err := os.ReadFile(filepath.Join(filepath.Dir(espimagetest.ELFPath(t, tc)), "coredump.b64"))
		if err != nil {
			t.Fatal(err)
		}
		_, rep, err := decoding.NewNative(64<<20).Decode(context.Background(), decoding.Input{Dump: dump, ELF: elf})
		if err != nil {
			t.Fatal(err)
		}
		f := topFrame(rep)
		if f == nil {
			t.Fatalf("%s: no top frame", tc)
		}
		t.Logf("%s: %s %s:%d", tc, f.Function, f.File, f.Line)
		if panicMachinery(f) || !strings.Contains(f.File, "/main/") {
			t.Errorf("%s: top frame %s at %s:%d is not the application's", tc, f.Function, f.File, f.Line)
		}
	}
}
