package crashgroups

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
)

// Group is one crash group.
type Group struct {
	ID                int64      `json:"id"`
	ModelID           int64      `json:"model_id"`
	Fingerprint       string     `json:"fingerprint"`
	GroupingVersion   int        `json:"grouping_version"`
	Title             string     `json:"title"`
	Culprit           string     `json:"culprit"`
	Fault             string     `json:"fault"`
	FirstSeenAt       time.Time  `json:"first_seen_at"`
	LastSeenAt        time.Time  `json:"last_seen_at"`
	DumpCount         int64      `json:"dump_count"`
	DeviceCount       int64      `json:"device_count"`
	FirstVersion      string     `json:"first_version"`
	LastVersion       string     `json:"last_version"`
	Status            string     `json:"status" enum:"open,resolved,ignored"`
	ResolvedInVersion *string    `json:"resolved_in_version"`
	RegressedAt       *time.Time `json:"regressed_at"`
}

const groupColumns = `g.id, g.model_id, g.fingerprint, g.grouping_version, g.title, g.culprit, g.fault, g.first_seen_at, g.last_seen_at,
	g.dump_count, g.device_count, g.first_version, g.last_version, g.status, g.resolved_in_version, g.regressed_at`

func scanGroup(sc interface{ Scan(...any) error }) (*Group, error) {
	var g Group
	var resolved sql.NullString
	var regressed sql.NullTime
	if err := sc.Scan(&g.ID, &g.ModelID, &g.Fingerprint, &g.GroupingVersion, &g.Title, &g.Culprit, &g.Fault, &g.FirstSeenAt, &g.LastSeenAt,
		&g.DumpCount, &g.DeviceCount, &g.FirstVersion, &g.LastVersion, &g.Status, &resolved, &regressed); err != nil {
		return nil, err
	}
	g.Fingerprint = strings.TrimSpace(g.Fingerprint)
	g.FirstSeenAt, g.LastSeenAt = g.FirstSeenAt.UTC(), g.LastSeenAt.UTC()
	if resolved.Valid {
		g.ResolvedInVersion = &resolved.String
	}
	if regressed.Valid {
		t := regressed.Time.UTC()
		g.RegressedAt = &t
	}
	return &g, nil
}

// Sort orders of List, each newest (largest) first.
var sortColumn = map[string]string{"last_seen": "last_seen_at", "devices": "device_count", "dumps": "dump_count"}

// Filter selects groups for List.
type Filter struct {
	ModelID  int64  // 0: every model
	Status   string // "": any
	Version  string // "": any; else groups with dumps of this version
	Sort     string // last_seen (default), devices, dumps
	Limit    int
	BeforeID int64 // the last id of the previous page
}

// Page is one page of groups and how many match the filter.
type Page struct {
	Groups []*Group
	Count  int
}

// List returns groups newest first by the sort, keyset-paged after the group BeforeID.
func (s *Service) List(ctx context.Context, f Filter) (*Page, error) {
	cond, args, err := filter(f)
	if err != nil {
		return nil, err
	}
	p := &Page{Groups: []*Group{}}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM crash_groups g WHERE `+cond, args...).Scan(&p.Count); err != nil {
		return nil, db.Err("list crash groups", err)
	}
	q, args, err := s.listQuery(ctx, f)
	if err != nil {
		return nil, db.Err("list crash groups", err)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.Err("list crash groups", err)
	}
	defer rows.Close()
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, db.Err("list crash groups", err)
		}
		p.Groups = append(p.Groups, g)
	}
	return p, db.Err("list crash groups", rows.Err())
}

// filter is the WHERE clause of a filter (over crash_groups g) and its arguments.
func filter(f Filter) (string, []any, error) {
	switch f.Status {
	case "", StatusOpen, StatusResolved, StatusIgnored:
	default:
		return "", nil, apperr.Validationf("status must be open, resolved or ignored")
	}
	if f.Sort != "" && sortColumn[f.Sort] == "" {
		return "", nil, apperr.Validationf("sort must be last_seen, devices or dumps")
	}
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.ModelID > 0 {
		where = append(where, "g.model_id = "+arg(f.ModelID))
	}
	if f.Status != "" {
		where = append(where, "g.status = "+arg(f.Status))
	}
	if f.Version != "" {
		where = append(where, "EXISTS (SELECT 1 FROM crash_group_daily v WHERE v.group_id = g.id AND v.version = "+arg(f.Version)+")")
	}
	if len(where) == 0 {
		return "1 = 1", nil, nil
	}
	return strings.Join(where, " AND "), args, nil
}

// listQuery is the statement of one page: the filter, the keyset after BeforeID, and the
// order of an index (crash_groups' indexes lead with model_id, then the sort column and id).
func (s *Service) listQuery(ctx context.Context, f Filter) (string, []any, error) {
	cond, args, err := filter(f)
	if err != nil {
		return "", nil, err
	}
	col := sortColumn[f.Sort]
	if col == "" {
		col = sortColumn["last_seen"]
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.BeforeID > 0 {
		// Page on (sort column, id); a cursor group gone meanwhile (merged) falls back to id.
		var cursor any
		err := s.db.QueryRowContext(ctx, `SELECT `+col+` FROM crash_groups WHERE id = $1`, f.BeforeID).Scan(&cursor)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			cond += ` AND g.id < ` + arg(f.BeforeID)
		case err != nil:
			return "", nil, err
		default:
			c := arg(cursor)
			cond += ` AND (g.` + col + ` < ` + c + ` OR (g.` + col + ` = ` + c + ` AND g.id < ` + arg(f.BeforeID) + `))`
		}
	}
	return `SELECT ` + groupColumns + ` FROM crash_groups g WHERE ` + cond +
		fmt.Sprintf(` ORDER BY g.%s DESC, g.id DESC LIMIT %d`, col, limit), args, nil
}

// VersionCount is a group's dumps and distinct devices on one firmware version.
type VersionCount struct {
	Version string `json:"version"`
	Dumps   int64  `json:"dumps"`
	Devices int64  `json:"devices"`
}

// DayCount is a group's dumps and distinct devices on one day (UTC).
type DayCount struct {
	Day     string `json:"day" example:"2026-12-03"`
	Dumps   int64  `json:"dumps"`
	Devices int64  `json:"devices"`
}

// Detail is a group with its counts per version and day and its newest dumps.
type Detail struct {
	*Group
	Versions          []VersionCount `json:"versions"`
	Daily             []DayCount     `json:"daily" doc:"The last 30 days with dumps, oldest first"`
	SampleCoredumpIDs []int64        `json:"sample_coredump_ids" doc:"Stored dumps of the group, newest first (at most 10)"`
	// Samples are those dumps with their devices (the console links each to its page).
	Samples []Sample `json:"-"`
}

// Sample is one stored dump of a group.
type Sample struct {
	CoredumpID, DeviceID int64
	Version, Day         string
}

// DailyDays is how many days Get's daily counts cover.
const DailyDays = 30

func (s *Service) get(ctx context.Context, q db.Querier, id int64) (*Group, error) {
	g, err := scanGroup(q.QueryRowContext(ctx, `SELECT `+groupColumns+` FROM crash_groups g WHERE g.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("Crash group %d was not found", id)
	}
	return g, err
}

// Get returns a group with its counts per version, per day of the last 30 and sample dumps.
func (s *Service) Get(ctx context.Context, id int64) (*Detail, error) {
	g, err := s.get(ctx, s.db, id)
	if err != nil {
		return nil, db.Err("get crash group", err)
	}
	d := &Detail{Group: g, Versions: []VersionCount{}, Daily: []DayCount{}, SampleCoredumpIDs: []int64{}}
	rows, err := s.db.QueryContext(ctx, `SELECT version, SUM(dumps), COUNT(DISTINCT device_id) FROM crash_group_daily
		WHERE group_id = $1 GROUP BY version ORDER BY MIN(day), version`, id)
	if err != nil {
		return nil, db.Err("get crash group", err)
	}
	for rows.Next() {
		var v VersionCount
		if err := rows.Scan(&v.Version, &v.Dumps, &v.Devices); err != nil {
			rows.Close()
			return nil, db.Err("get crash group", err)
		}
		d.Versions = append(d.Versions, v)
	}
	rows.Close()
	since := s.now().AddDate(0, 0, -(DailyDays - 1)).Format(time.DateOnly)
	rows, err = s.db.QueryContext(ctx, `SELECT day, SUM(dumps), COUNT(DISTINCT device_id) FROM crash_group_daily
		WHERE group_id = $1 AND day >= $2 GROUP BY day ORDER BY day`, id, since)
	if err != nil {
		return nil, db.Err("get crash group", err)
	}
	for rows.Next() {
		var c DayCount
		if err := rows.Scan(&c.Day, &c.Dumps, &c.Devices); err != nil {
			rows.Close()
			return nil, db.Err("get crash group", err)
		}
		d.Daily = append(d.Daily, c)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT coredump_id, device_id, version, day FROM crash_group_dumps
		WHERE group_id = $1 ORDER BY coredump_id DESC LIMIT 10`, id)
	if err != nil {
		return nil, db.Err("get crash group", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sm Sample
		if err := rows.Scan(&sm.CoredumpID, &sm.DeviceID, &sm.Version, &sm.Day); err != nil {
			return nil, db.Err("get crash group", err)
		}
		d.Samples = append(d.Samples, sm)
		d.SampleCoredumpIDs = append(d.SampleCoredumpIDs, sm.CoredumpID)
	}
	if err := rows.Err(); err != nil {
		return nil, db.Err("get crash group", err)
	}
	return d, nil
}

// GroupDevice is one device of a group.
type GroupDevice struct {
	DeviceID    int64     `json:"device_id"`
	DeviceKey   string    `json:"device_key"`
	DumpCount   int64     `json:"dump_count"`
	FirstSeenAt time.Time `json:"first_seen_at"`
	LastSeenAt  time.Time `json:"last_seen_at"`
	LastVersion string    `json:"last_version"`
}

// DevicePage is one page of a group's devices, most recently crashed first.
type DevicePage struct {
	Devices []GroupDevice
	Count   int
}

// Devices lists a group's devices, most recent crash first, after the device beforeID
// of the previous page.
func (s *Service) Devices(ctx context.Context, id int64, limit int, beforeID int64) (*DevicePage, error) {
	if _, err := s.get(ctx, s.db, id); err != nil {
		return nil, db.Err("list crash group devices", err)
	}
	if limit <= 0 {
		limit = 100
	}
	p := &DevicePage{Devices: []GroupDevice{}}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM crash_group_devices WHERE group_id = $1`, id).Scan(&p.Count); err != nil {
		return nil, db.Err("list crash group devices", err)
	}
	cond, args := `c.group_id = $1`, []any{id}
	if beforeID > 0 {
		cond += ` AND (c.last_seen_at < (SELECT last_seen_at FROM crash_group_devices WHERE group_id = $1 AND device_id = $2)
			OR (c.last_seen_at = (SELECT last_seen_at FROM crash_group_devices WHERE group_id = $1 AND device_id = $2) AND c.device_id < $2))`
		args = append(args, beforeID)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT c.device_id, d.key, c.dump_count, c.first_seen_at, c.last_seen_at, c.last_version
		FROM crash_group_devices c JOIN devices d ON d.id = c.device_id WHERE `+cond+
		fmt.Sprintf(` ORDER BY c.last_seen_at DESC, c.device_id DESC LIMIT %d`, limit), args...)
	if err != nil {
		return nil, db.Err("list crash group devices", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g GroupDevice
		if err := rows.Scan(&g.DeviceID, &g.DeviceKey, &g.DumpCount, &g.FirstSeenAt, &g.LastSeenAt, &g.LastVersion); err != nil {
			return nil, db.Err("list crash group devices", err)
		}
		g.FirstSeenAt, g.LastSeenAt = g.FirstSeenAt.UTC(), g.LastSeenAt.UTC()
		p.Devices = append(p.Devices, g)
	}
	return p, db.Err("list crash group devices", rows.Err())
}

// NewGroupsByVersion counts a model's groups first seen on each version at or after
// since (the fleet view's crash_groups_new).
func (s *Service) NewGroupsByVersion(ctx context.Context, modelID int64, since time.Time) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT first_version, COUNT(*) FROM crash_groups WHERE model_id = $1 AND first_seen_at >= $2
		GROUP BY first_version`, modelID, since.UTC())
	if err != nil {
		return nil, db.Err("count new crash groups", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var v string
		var n int
		if err := rows.Scan(&v, &n); err != nil {
			return nil, db.Err("count new crash groups", err)
		}
		out[v] = n
	}
	return out, db.Err("count new crash groups", rows.Err())
}

// NewGroup is a crash group first seen on a version, with its device count.
type NewGroup struct {
	ID      int64  `json:"id"`
	Title   string `json:"title"`
	Devices int    `json:"devices"`
}

// NewGroupsOn lists a model's crash groups first seen on version since a moment, most
// devices first (a staged rollout halts on one with too many devices).
func (s *Service) NewGroupsOn(ctx context.Context, modelID int64, version string, since time.Time) ([]NewGroup, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, title, device_count FROM crash_groups
		WHERE model_id = $1 AND first_version = $2 AND first_seen_at >= $3 ORDER BY device_count DESC, id`, modelID, version, since.UTC())
	if err != nil {
		return nil, db.Err("list new crash groups", err)
	}
	defer rows.Close()
	out := []NewGroup{}
	for rows.Next() {
		var g NewGroup
		if err := rows.Scan(&g.ID, &g.Title, &g.Devices); err != nil {
			return nil, db.Err("list new crash groups", err)
		}
		out = append(out, g)
	}
	return out, db.Err("list new crash groups", rows.Err())
}
