package decoding

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A Native decoder given no ELF asks for it unless it holds that ELF's index.
func TestNativeAsksForELFItDoesNotHold(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "testdata", "esp-coredump", "esp32c3")
	elf, err := os.ReadFile(filepath.Join(dir, "app.elf"))
	if err != nil {
		t.Fatal(err)
	}
	dump, err := os.ReadFile(filepath.Join(dir, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	n := NewNative(0)
	ctx := context.Background()
	if n.HasELF("abc") {
		t.Fatal("empty cache holds an ELF")
	}
	if _, _, err := n.Decode(ctx, Input{Dump: dump, ELFSHA256: "abc"}); !errors.Is(err, ErrNeedELF) {
		t.Fatalf("no ELF, cold cache: %v, want ErrNeedELF", err)
	}
	text, _, err := n.Decode(ctx, Input{Dump: dump, ELF: elf, ELFSHA256: "abc"})
	if err != nil || text == "" {
		t.Fatalf("with ELF: %v", err)
	}
	if !n.HasELF("abc") {
		t.Fatal("index not kept after a decode")
	}
	again, _, err := n.Decode(ctx, Input{Dump: dump, ELFSHA256: "abc"})
	if err != nil || again != text {
		t.Fatalf("warm decode without ELF: %v (same text: %v)", err, again == text)
	}
}
