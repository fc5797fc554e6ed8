package fleet

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	devicesDesc = prometheus.NewDesc("iotsupport_fleet_devices",
		"Devices whose latest report names this version, per model and stored version.", []string{"model", "version"}, nil)
	crashFreeDesc = prometheus.NewDesc("iotsupport_fleet_crash_free_ratio",
		"Share of the devices seen on this version in the window that did not crash on it (absent when none were seen), per model and stored version.",
		[]string{"model", "version", "window"}, nil)
)

// metricsWindow is the window of iotsupport_fleet_crash_free_ratio.
const metricsWindow = "24h"

// collector exports the fleet view of each model's stored versions only, so the label
// sets stay bounded by MAX_FIRMWARES whatever versions devices claim. A scrape reuses the
// figures of the last FLEET_FLUSH_INTERVAL: they cannot change faster.
type collector struct {
	s       *Service
	mu      sync.Mutex
	at      time.Time
	metrics []prometheus.Metric
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- devicesDesc
	ch <- crashFreeDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= c.s.opts.FlushInterval {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ms, err := c.s.gauges(ctx)
		cancel()
		if err != nil {
			c.s.log.Warn("fleet: metrics not refreshed", "error", err)
		} else {
			c.metrics, c.at = ms, time.Now()
		}
	}
	for _, m := range c.metrics {
		ch <- m
	}
}

// gauges computes the fleet metrics of every model.
func (s *Service) gauges(ctx context.Context) ([]prometheus.Metric, error) {
	type model struct {
		id   int64
		code string
	}
	var models []model
	stored := map[int64][]string{}
	rows, err := s.db.QueryContext(ctx, `SELECT m.id, m.code, f.version FROM device_models m
		JOIN firmware_versions f ON f.device_model_id = m.id ORDER BY m.id, f.version`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var m model
		var version string
		if err := rows.Scan(&m.id, &m.code, &version); err != nil {
			rows.Close()
			return nil, err
		}
		if len(models) == 0 || models[len(models)-1].id != m.id {
			models = append(models, m)
		}
		stored[m.id] = append(stored[m.id], version)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []prometheus.Metric
	for _, m := range models {
		v, err := s.View(ctx, m.id, metricsWindow)
		if err != nil {
			return nil, err
		}
		byVersion := map[string]VersionStats{}
		for _, st := range v.Versions {
			byVersion[st.Version] = st
		}
		for _, version := range stored[m.id] {
			st := byVersion[version]
			out = append(out, prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(st.DevicesRunning), m.code, version))
			if st.CrashFreePercent != nil {
				out = append(out, prometheus.MustNewConstMetric(crashFreeDesc, prometheus.GaugeValue, *st.CrashFreePercent/100, m.code, version, metricsWindow))
			}
		}
	}
	return out, nil
}
