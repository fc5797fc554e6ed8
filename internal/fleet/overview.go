package fleet

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
)

// ModelOverview is one model on the console's overview: the fleet view's versions over
// the last 24 hours (without boots by reason and new groups), its stale devices, and its
// core dumps over the last day and week.
type ModelOverview struct {
	Versions     []VersionStats
	StaleDevices int
	DumpsDay     int
	DumpsWeek    int
	// DevicesWeek is the devices with a core dump in the week.
	DevicesWeek int
}

// Overview returns every model's ModelOverview in a fixed number of grouped queries,
// whatever the number of models: the same counts as View, over all models at once.
// Models without devices or history are absent.
func (s *Service) Overview(ctx context.Context) (map[int64]*ModelOverview, error) {
	now := s.now().UTC()
	day, week := now.Add(-24*time.Hour), now.Add(-7*24*time.Hour)
	out := map[int64]*ModelOverview{}
	model := func(id int64) *ModelOverview {
		m := out[id]
		if m == nil {
			m = &ModelOverview{}
			out[id] = m
		}
		return m
	}
	type key struct {
		model   int64
		version string
	}
	byVersion := map[key]*VersionStats{}
	get := func(id int64, version string) *VersionStats {
		st := byVersion[key{id, version}]
		if st == nil {
			st = &VersionStats{Version: version}
			byVersion[key{id, version}] = st
		}
		return st
	}
	each := func(q string, args []any, fn func(id int64, version string, n int)) error {
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var version string
			var n int
			if err := rows.Scan(&id, &version, &n); err != nil {
				return err
			}
			fn(id, version, n)
		}
		return rows.Err()
	}
	queries := []struct {
		sql  string
		args []any
		fn   func(int64, string, int)
	}{
		{`SELECT id, firmware_version, 0 FROM device_models WHERE firmware_version IS NOT NULL`, nil,
			func(id int64, v string, _ int) { get(id, v).Current = true }},
		{`SELECT d.device_model_id, '', COALESCE(SUM(CASE WHEN COALESCE(s.last_seen_at, d.created_at) < $1 THEN 1 ELSE 0 END), 0)
			FROM devices d LEFT JOIN device_status s ON s.device_id = d.id GROUP BY d.device_model_id`, []any{day},
			func(id int64, _ string, n int) { model(id).StaleDevices = n }},
		{`SELECT d.device_model_id, s.running_version, COUNT(*) FROM device_status s JOIN devices d ON d.id = s.device_id
			WHERE s.running_version IS NOT NULL GROUP BY d.device_model_id, s.running_version`, nil,
			func(id int64, v string, n int) { get(id, v).DevicesRunning = n }},
		{`SELECT model_id, version, COUNT(DISTINCT device_id) FROM fleet_device_days
			WHERE day >= $1 AND last_seen_at >= $2 GROUP BY model_id, version`, []any{Day(day), day},
			func(id int64, v string, n int) { get(id, v).DevicesSeen = n }},
	}
	for _, q := range queries {
		if err := each(q.sql, q.args, q.fn); err != nil {
			return nil, db.Err("fleet overview", err)
		}
	}
	// Crashes: the week's dumps and the day's crash boots, per device, counted here. One
	// row per device and version (bounded by the fleet), read through the time indexes;
	// grouping by model and version in SQL let SQLite scan the (model, time) index whole.
	type crash struct {
		model, device int64
		version       string
	}
	crashed := map[crash]bool{}
	dumpedWeek := map[[2]int64]bool{}
	rows, err := s.db.QueryContext(ctx, `SELECT model_id, device_id, version, SUM(CASE WHEN uploaded_at >= $1 THEN 1 ELSE 0 END), COUNT(*)
		FROM fleet_dumps WHERE uploaded_at >= $2 GROUP BY device_id, model_id, version`, day, week)
	if err != nil {
		return nil, db.Err("fleet overview", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c crash
		var inDay, inWeek int
		if err := rows.Scan(&c.model, &c.device, &c.version, &inDay, &inWeek); err != nil {
			return nil, db.Err("fleet overview", err)
		}
		m := model(c.model)
		m.DumpsWeek += inWeek
		dumpedWeek[[2]int64{c.model, c.device}] = true
		if inDay > 0 {
			m.DumpsDay += inDay
			get(c.model, c.version).CoreDumps += inDay
			crashed[c] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, db.Err("fleet overview", err)
	}
	rows.Close()
	boots, err := s.db.QueryContext(ctx, `SELECT DISTINCT model_id, device_id, version FROM fleet_boots
		WHERE booted_at >= $1 AND version IS NOT NULL AND reason IN (`+crashReasonsSQL+`)`, day)
	if err != nil {
		return nil, db.Err("fleet overview", err)
	}
	defer boots.Close()
	for boots.Next() {
		var c crash
		if err := boots.Scan(&c.model, &c.device, &c.version); err != nil {
			return nil, db.Err("fleet overview", err)
		}
		crashed[c] = true
	}
	if err := boots.Err(); err != nil {
		return nil, db.Err("fleet overview", err)
	}
	for c := range crashed {
		get(c.model, c.version).CrashedDevices++
	}
	for k := range dumpedWeek {
		model(k[0]).DevicesWeek++
	}
	for k, st := range byVersion {
		st.CrashFreePercent = CrashFree(st.DevicesSeen, st.CrashedDevices)
		m := model(k.model)
		m.Versions = append(m.Versions, *st)
	}
	for _, m := range out {
		sortVersions(m.Versions)
	}
	return out, nil
}

// sortVersions puts the current version first, then by devices running, then seen.
func sortVersions(vs []VersionStats) {
	slices.SortFunc(vs, func(a, b VersionStats) int {
		switch {
		case a.Current != b.Current:
			if a.Current {
				return -1
			}
			return 1
		case a.DevicesRunning != b.DevicesRunning:
			return b.DevicesRunning - a.DevicesRunning
		case a.DevicesSeen != b.DevicesSeen:
			return b.DevicesSeen - a.DevicesSeen
		}
		return strings.Compare(a.Version, b.Version)
	})
}
