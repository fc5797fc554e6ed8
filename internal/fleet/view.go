package fleet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
)

// Window limits of the fleet view.
const (
	MinWindow     = time.Hour
	MaxWindow     = 90 * 24 * time.Hour
	DefaultWindow = "24h"
)

var windowPattern = regexp.MustCompile(`^([1-9][0-9]{0,4})([mhd])$`)

// ParseWindow reads a window such as 90m, 24h or 7d (1h to 90d).
func ParseWindow(s string) (time.Duration, error) {
	m := windowPattern.FindStringSubmatch(s)
	if m == nil {
		return 0, apperr.Validationf("window must be a number with m, h or d, like 24h or 7d (got %q)", s)
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	w := time.Duration(n) * unit
	if w < MinWindow || w > MaxWindow {
		return 0, apperr.Validationf("window must be from 1h to 90d (got %s)", s)
	}
	return w, nil
}

// View is a model's fleet over a window ending now.
type View struct {
	Window       string         `json:"window"`
	Devices      int            `json:"devices"`
	DevicesSeen  int            `json:"devices_seen"`
	StaleDevices int            `json:"stale_devices"`
	Versions     []VersionStats `json:"versions"`
}

// VersionStats is one version's figures in a View.
type VersionStats struct {
	Version string `json:"version"`
	// Current is the model's current version.
	Current bool `json:"current"`
	// DevicesRunning is the devices whose latest report names this version (any time).
	DevicesRunning int `json:"devices_running"`
	// DevicesSeen is the devices seen running it in the window.
	DevicesSeen int `json:"devices_seen"`
	// CrashedDevices is those of them that crashed on it in the window (a core dump, or a
	// boot whose reset reason is PANIC, INT_WDT, TASK_WDT or WDT).
	CrashedDevices int `json:"crashed_devices"`
	// CrashFreePercent is 100 × (seen − crashed) / seen; nil when none were seen.
	CrashFreePercent *float64       `json:"crash_free_percent"`
	BootsByReason    map[string]int `json:"boots_by_reason"`
	CoreDumps        int            `json:"core_dumps"`
	// CrashGroupsNew is the crash groups first seen on this version in the window.
	CrashGroupsNew int `json:"crash_groups_new"`
}

// CrashFree is 100 × (seen − crashed) / seen, nil when seen is 0.
func CrashFree(seen, crashed int) *float64 {
	if seen <= 0 {
		return nil
	}
	v := 100 * float64(seen-min(crashed, seen)) / float64(seen)
	return &v
}

// View returns model's fleet over the window ending now. What this replica saw since its
// last flush is not in it yet (at most FLEET_FLUSH_INTERVAL old).
func (s *Service) View(ctx context.Context, modelID int64, window string) (*View, error) {
	w, err := ParseWindow(window)
	if err != nil {
		return nil, err
	}
	return s.ViewSince(ctx, modelID, s.now().Add(-w), window)
}

// ViewSince is View over the time since a given moment (a rollout stage's start, say);
// label is reported as the window.
func (s *Service) ViewSince(ctx context.Context, modelID int64, since time.Time, label string) (*View, error) {
	since = since.UTC()
	var current sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT firmware_version FROM device_models WHERE id = $1`, modelID).Scan(&current)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("Device model %d was not found", modelID)
	}
	if err != nil {
		return nil, db.Err("fleet view", err)
	}
	v := &View{Window: label}
	// A device is stale when it has not been seen (or, never seen, created) for longer
	// than the window.
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*),
			COALESCE(SUM(CASE WHEN s.last_seen_at >= $2 THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN COALESCE(s.last_seen_at, d.created_at) < $2 THEN 1 ELSE 0 END), 0)
		FROM devices d LEFT JOIN device_status s ON s.device_id = d.id WHERE d.device_model_id = $1`, modelID, since).Scan(
		&v.Devices, &v.DevicesSeen, &v.StaleDevices); err != nil {
		return nil, db.Err("fleet view", err)
	}
	byVersion := map[string]*VersionStats{}
	get := func(version string) *VersionStats {
		st := byVersion[version]
		if st == nil {
			st = &VersionStats{Version: version, BootsByReason: map[string]int{}}
			byVersion[version] = st
		}
		return st
	}
	if current.Valid {
		get(current.String).Current = true
	}
	counts := []struct {
		sql  string
		args []any
		set  func(*VersionStats, int)
	}{
		{`SELECT s.running_version, COUNT(*) FROM device_status s JOIN devices d ON d.id = s.device_id
			WHERE d.device_model_id = $1 AND s.running_version IS NOT NULL GROUP BY s.running_version`,
			[]any{modelID}, func(st *VersionStats, n int) { st.DevicesRunning = n }},
		{`SELECT version, COUNT(DISTINCT device_id) FROM fleet_device_days
			WHERE model_id = $1 AND day >= $2 AND last_seen_at >= $3 GROUP BY version`,
			[]any{modelID, Day(since), since}, func(st *VersionStats, n int) { st.DevicesSeen = n }},
		// A crash also marks its device seen on that version at that moment (writeBoot,
		// DumpQueries), so crashed devices are a subset of seen ones.
		{`SELECT version, COUNT(DISTINCT device_id) FROM (
				SELECT device_id, version FROM fleet_boots WHERE model_id = $1 AND booted_at >= $2 AND version IS NOT NULL
					AND reason IN (` + crashReasonsSQL + `)
				UNION SELECT device_id, version FROM fleet_dumps WHERE model_id = $1 AND uploaded_at >= $2) AS crashed
			GROUP BY version`,
			[]any{modelID, since}, func(st *VersionStats, n int) { st.CrashedDevices = n }},
		{`SELECT version, COUNT(*) FROM fleet_dumps WHERE model_id = $1 AND uploaded_at >= $2 GROUP BY version`,
			[]any{modelID, since}, func(st *VersionStats, n int) { st.CoreDumps = n }},
	}
	for _, c := range counts {
		if err := s.eachCount(ctx, c.sql, c.args, func(version string, n int) { c.set(get(version), n) }); err != nil {
			return nil, err
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT version, reason, COUNT(*) FROM fleet_boots
		WHERE model_id = $1 AND booted_at >= $2 AND version IS NOT NULL GROUP BY version, reason`, modelID, since)
	if err != nil {
		return nil, db.Err("fleet view", err)
	}
	defer rows.Close()
	for rows.Next() {
		var version, reason string
		var n int
		if err := rows.Scan(&version, &reason, &n); err != nil {
			return nil, db.Err("fleet view", err)
		}
		get(version).BootsByReason[reason] = n
	}
	if err := rows.Err(); err != nil {
		return nil, db.Err("fleet view", err)
	}
	newGroups, err := s.groups.NewGroupsByVersion(ctx, modelID, since)
	if err != nil {
		return nil, err
	}
	for version, n := range newGroups {
		get(version).CrashGroupsNew = n
	}
	for _, st := range byVersion {
		st.CrashFreePercent = CrashFree(st.DevicesSeen, st.CrashedDevices)
		v.Versions = append(v.Versions, *st)
	}
	sortVersions(v.Versions)
	if v.Versions == nil {
		v.Versions = []VersionStats{}
	}
	return v, nil
}

// eachCount runs a "version, count" query.
func (s *Service) eachCount(ctx context.Context, q string, args []any, fn func(string, int)) error {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return db.Err("fleet view", err)
	}
	defer rows.Close()
	for rows.Next() {
		var version string
		var n int
		if err := rows.Scan(&version, &n); err != nil {
			return db.Err("fleet view", fmt.Errorf("scan: %w", err))
		}
		fn(version, n)
	}
	return db.Err("fleet view", rows.Err())
}
