package crashgroups_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// BenchmarkDecodeGrouping measures the decode job (read the dump, decode it with a warm
// ELF cache, record the result) with and without crash grouping in its transaction,
// alternating the two on the same dump so both meet the same machine state, on each storage
// configuration. It reports each p50 and their ratio (grouped/ungrouped); ns/op includes the
// untimed uploads and means nothing.
//
//	go test ./internal/crashgroups/ -run XXX -bench DecodeGrouping -benchtime 300x
func BenchmarkDecodeGrouping(b *testing.B) {
	for _, name := range testenv.Configs {
		b.Run(name, func(b *testing.B) {
			env := testenv.New(b, name)
			h := newHarness(b, env, 100000)
			h.firmware(b, h.model, "esp32c3", "1.0.0")
			plain := decoding.NewService(env.DB, h.dumps, h.fw, noGroups{}, nil, decoding.Config{}, discard(), nil)
			d := h.device(b, h.model)
			warm := h.upload(b, d, "esp32c3", "1.0.0")
			h.decode(b, warm) // warms the ELF cache and creates the group
			var with, without []time.Duration
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				for _, grouped := range []bool{i%2 == 0, i%2 != 0} {
					id := h.upload(b, d, "esp32c3", "1.0.0")
					svc := plain
					if grouped {
						svc = h.dec
					}
					start := time.Now()
					if err := svc.Decode(ctx, id); err != nil {
						b.Fatal(err)
					}
					if grouped {
						with = append(with, time.Since(start))
					} else {
						without = append(without, time.Since(start))
					}
				}
			}
			pw, po := p50(with), p50(without)
			b.ReportMetric(float64(pw.Microseconds())/1000, "p50-grouped-ms")
			b.ReportMetric(float64(po.Microseconds())/1000, "p50-ungrouped-ms")
			b.ReportMetric(float64(pw)/float64(po), "ratio")
		})
	}
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
