package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// op is one request (or baseline operation); it returns the payload bytes moved.
type op func(ctx context.Context, worker int) (int64, error)

// Stats summarises one load run.
type Stats struct {
	Requests  int64         `json:"requests"`
	Errors    int64         `json:"errors"`
	Bytes     int64         `json:"bytes"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	PerSecond float64       `json:"per_second"`
	MBPerSec  float64       `json:"mb_per_second"`
	P50       time.Duration `json:"p50_ns"`
	P90       time.Duration `json:"p90_ns"`
	P99       time.Duration `json:"p99_ns"`
	FirstErr  string        `json:"first_error,omitempty"`
}

// load runs fn from concurrency workers until duration has passed or
// maxOps operations have started (maxOps <= 0: no count bound). Every worker
// stops by itself: no operation starts after the deadline, and the ones in
// flight finish (so slow operations are measured whole); ctx cancels early.
func load(ctx context.Context, concurrency int, duration time.Duration, maxOps int64, fn op) Stats {
	return summarize(run(ctx, concurrency, duration, maxOps, fn))
}

// sample is one load run's raw measurements.
type sample struct {
	lat      []time.Duration
	errs     int64
	bytes    int64
	elapsed  time.Duration
	firstErr error
}

// run is load without the summary.
func run(ctx context.Context, concurrency int, duration time.Duration, maxOps int64, fn op) sample {
	if concurrency < 1 {
		concurrency = 1
	}
	if maxOps <= 0 {
		maxOps = math.MaxInt64
	}
	var (
		started  atomic.Int64
		errs     atomic.Int64
		bytes    atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(duration)
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= maxOps {
				t0 := time.Now()
				n, err := fn(ctx, w)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break // interrupted, not a failure
					}
					errs.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
				bytes.Add(n)
				mine = append(mine, d)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return sample{lat: lat, errs: errs.Load(), bytes: bytes.Load(), elapsed: time.Since(start), firstErr: firstErr}
}

// summarize merges samples (rounds of one measurement) into Stats.
func summarize(parts ...sample) Stats {
	var st Stats
	var lat []time.Duration
	for _, p := range parts {
		lat = append(lat, p.lat...)
		st.Errors += p.errs
		st.Bytes += p.bytes
		st.Elapsed += p.elapsed
		if p.firstErr != nil && st.FirstErr == "" {
			st.FirstErr = p.firstErr.Error()
		}
	}
	st.Requests = int64(len(lat))
	if st.Elapsed > 0 {
		st.PerSecond = float64(st.Requests) / st.Elapsed.Seconds()
		st.MBPerSec = float64(st.Bytes) / (1 << 20) / st.Elapsed.Seconds()
	}
	slices.Sort(lat)
	st.P50, st.P90, st.P99 = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
	return st
}

// percentile of sorted durations (nearest rank); 0 when empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
