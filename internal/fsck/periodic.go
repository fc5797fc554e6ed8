package fsck

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Periodic runs report-only checks on a timer and publishes their findings as metrics.
type Periodic struct {
	c        *Checker
	log      *slog.Logger
	grace    time.Duration
	findings *prometheus.GaugeVec
	lastRun  prometheus.Gauge
	failures prometheus.Counter
}

// NewPeriodic registers the iotsupport_fsck_* metrics on reg (may be nil).
func NewPeriodic(c *Checker, grace time.Duration, log *slog.Logger, reg prometheus.Registerer) *Periodic {
	p := &Periodic{c: c, log: log, grace: grace,
		findings: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "iotsupport_fsck_findings",
			Help: "Problems found by the last periodic fsck, by kind (orphan, dangling, size_mismatch, sha256_mismatch, stuck_outbox)."}, []string{"kind"}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "iotsupport_fsck_last_run_timestamp_seconds",
			Help: "Unix time of the last completed periodic fsck."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_fsck_failures_total",
			Help: "Periodic fsck runs that could not complete (database or storage unavailable)."}),
	}
	for _, k := range Kinds {
		p.findings.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(p.findings, p.lastRun, p.failures)
	}
	return p
}

// Run checks every interval until ctx ends (the first check after one interval).
func (p *Periodic) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, _ = p.Once(ctx)
	}
}

// Once runs one report-only check and updates the metrics.
func (p *Periodic) Once(ctx context.Context) (*Report, error) {
	rep, err := p.c.Check(ctx, Options{Grace: p.grace})
	if err != nil {
		if ctx.Err() == nil {
			p.failures.Inc()
			p.log.Warn("periodic fsck failed", "error", err)
		}
		return nil, err
	}
	for _, k := range Kinds {
		p.findings.WithLabelValues(k).Set(float64(rep.Counts[k]))
	}
	p.lastRun.Set(float64(rep.CheckedAt.Unix()))
	if rep.Clean() {
		p.log.Info("periodic fsck clean", "objects", rep.Objects, "rows", rep.Rows)
	} else {
		p.log.Warn("periodic fsck found problems; run `iotsupport fsck` for details", "orphan", rep.Counts[Orphan], "dangling", rep.Counts[Dangling],
			"size_mismatch", rep.Counts[SizeMismatch], "sha256_mismatch", rep.Counts[SHA256Mismatch], "stuck_outbox", rep.Counts[StuckOutbox])
	}
	return rep, nil
}
