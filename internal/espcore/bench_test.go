package espcore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotsupport/iotsupport/internal/elfsym"
)

// BenchmarkDecode measures one decode per case, reusing the ELF index.
func BenchmarkDecode(b *testing.B) {
	for _, c := range testCases(b) {
		ix := loadIndex(b, c)
		dump := readDump(b, c)
		b.Run(c, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(dump, ix, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIndex measures building the ELF index once per case; index_bytes
// is the index's own estimate of the memory it holds.
func BenchmarkIndex(b *testing.B) {
	for _, c := range testCases(b) {
		data, err := os.ReadFile(filepath.Join(testdataDir, c, "app.elf"))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c, func(b *testing.B) {
			b.ReportAllocs()
			var ix *elfsym.Index
			for b.Loop() {
				ix, err = elfsym.New(bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ix.MemSize()), "index_bytes")
		})
	}
}
