package elfsym

import (
	"bytes"
	"testing"
)

func BenchmarkNew(b *testing.B) {
	for _, c := range []string{"esp32", "esp32c3"} {
		raw := readTestELF(b, c)
		b.Run(c, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			var ix *Index
			for b.Loop() {
				var err error
				if ix, err = New(bytes.NewReader(raw)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ix.MemSize()), "index-bytes")
		})
	}
}

// benchPCs samples addresses spread over the line table.
func benchPCs(ix *Index) []uint64 {
	var pcs []uint64
	step := max(1, len(ix.lines.rows)/1024)
	for i := 0; i < len(ix.lines.rows); i += step {
		pcs = append(pcs, ix.lines.rows[i].addr+1)
	}
	return pcs
}

func BenchmarkLocations(b *testing.B) {
	ix := loadIndex(b, "esp32c3")
	pcs := benchPCs(ix)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ix.Locations(pcs[i%len(pcs)])
		i++
	}
}

func BenchmarkCFARule(b *testing.B) {
	ix := loadIndex(b, "esp32c3")
	pcs := benchPCs(ix)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ix.CFARule(pcs[i%len(pcs)])
		i++
	}
}
