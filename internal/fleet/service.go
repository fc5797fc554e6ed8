package fleet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotsupport/iotsupport/internal/db"
)

// Options are the fleet settings.
type Options struct {
	// FlushInterval is how often coalesced check-ins are written (FLEET_FLUSH_INTERVAL).
	FlushInterval time.Duration
	// HistoryDays is how long per-day history, boots and dumps are kept (FLEET_HISTORY_DAYS).
	HistoryDays int
	// PruneBatch is how many history rows one pruning statement deletes (FLEET_PRUNE_BATCH).
	PruneBatch int
	// MaxUnsavedBoots bounds the boots held in memory while the database refuses them
	// (FLEET_MAX_UNSAVED_BOOTS); past it the oldest are dropped and counted.
	MaxUnsavedBoots int
	// Now is the clock (tests); db.Now by default.
	Now func() time.Time
}

// CrashGroups counts, per version, a model's crash groups first seen on it since a
// moment (crashgroups.Service).
type CrashGroups interface {
	NewGroupsByVersion(ctx context.Context, modelID int64, since time.Time) (map[string]int, error)
}

// Service records device telemetry and answers the fleet view. It owns device_status,
// fleet_device_days, fleet_boots and fleet_dumps.
type Service struct {
	db     *db.DB
	log    *slog.Logger
	opts   Options
	groups CrashGroups

	mu      sync.Mutex
	pending map[int64]*sighting // check-ins since the last flush, by device
	booted  map[int64]string    // the boot id last stored per device (skips re-writing it)
	unsaved []boot              // boots the database refused, retried at each flush

	invalid   *prometheus.CounterVec
	failures  *prometheus.CounterVec
	dropped   prometheus.Counter
	lastPrune time.Time
}

// dayKey is one row of fleet_device_days for a device.
type dayKey struct {
	day     int64
	version string
}

// sighting is what one replica saw of a device since its last flush.
type sighting struct {
	modelID  int64
	lastSeen time.Time
	// version is the newest version the device claimed, first claimed at since and last
	// at at (the merge keeps the later claim).
	version   string
	since, at time.Time
	days      map[dayKey]time.Time
}

type boot struct {
	deviceID, modelID   int64
	id, reason, version string
	at                  time.Time
}

// NewService returns the fleet service; reg may be nil.
func NewService(d *db.DB, groups CrashGroups, opts Options, log *slog.Logger, reg prometheus.Registerer) *Service {
	if d == nil || groups == nil || log == nil {
		panic("fleet: NewService needs a database, the crash groups and a logger")
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 10 * time.Second
	}
	if opts.HistoryDays <= 0 {
		opts.HistoryDays = 90
	}
	if opts.PruneBatch <= 0 {
		opts.PruneBatch = 1000
	}
	if opts.MaxUnsavedBoots <= 0 {
		opts.MaxUnsavedBoots = 100000
	}
	if opts.Now == nil {
		opts.Now = db.Now
	}
	s := &Service{db: d, groups: groups, log: log, opts: opts, pending: map[int64]*sighting{}, booted: map[int64]string{},
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotsupport_fleet_invalid_headers_total",
			Help: "Device telemetry headers ignored because their value was invalid, by header."}, []string{"header"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotsupport_fleet_write_failures_total",
			Help: "Failed fleet writes (kept in memory and retried), by what was written."}, []string{"what"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "iotsupport_fleet_dropped_boots_total",
			Help: "Boots dropped because more than FLEET_MAX_UNSAVED_BOOTS waited for the database."}),
	}
	if reg != nil {
		reg.MustRegister(s.invalid, s.failures, s.dropped, &collector{s: s})
	}
	return s
}

func (s *Service) now() time.Time { return s.opts.Now().UTC().Truncate(time.Microsecond) }

// Day is the day number (days since 1970-01-01 UTC) history rows are kept by.
func Day(t time.Time) int64 { return t.UTC().Unix() / 86400 }

// Observe records one authenticated device request: the device was seen now, running
// the version it names, and a boot id not seen before is stored at once. Invalid
// headers are counted and ignored. It never fails: telemetry must not cost a device
// its answer.
func (s *Service) Observe(ctx context.Context, deviceID, modelID int64, h http.Header) {
	rep, invalid := ReadHeaders(h)
	for _, name := range invalid {
		s.invalid.WithLabelValues(name).Inc()
	}
	now := s.now()
	s.mu.Lock()
	s.note(deviceID, modelID, rep.Version, now)
	newBoot := rep.BootID != "" && s.booted[deviceID] != rep.BootID
	s.mu.Unlock()
	if newBoot {
		reason := rep.Reason
		if reason == "" {
			reason = "UNKNOWN"
		}
		s.saveBoot(ctx, boot{deviceID: deviceID, modelID: modelID, id: rep.BootID, reason: reason, version: rep.Version, at: now})
	}
}

// note merges one sighting into pending; s.mu is held.
func (s *Service) note(deviceID, modelID int64, version string, at time.Time) {
	p := s.pending[deviceID]
	if p == nil {
		p = &sighting{modelID: modelID}
		s.pending[deviceID] = p
	}
	if at.After(p.lastSeen) {
		p.lastSeen = at
	}
	if version == "" {
		return
	}
	if version != p.version {
		if at.Before(p.at) {
			return // an older claim than the one held
		}
		p.version, p.since = version, at
	}
	if at.After(p.at) {
		p.at = at
	}
	if p.days == nil {
		p.days = make(map[dayKey]time.Time, 1)
	}
	k := dayKey{Day(at), version}
	if at.After(p.days[k]) {
		p.days[k] = at
	}
}

// saveBoot writes a boot now; when the database refuses, the boot waits in memory for the
// next flush.
func (s *Service) saveBoot(ctx context.Context, b boot) {
	err := s.writeBoot(ctx, b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failures.WithLabelValues("boot").Inc()
		s.log.Warn("fleet: boot not stored yet, retried at the next flush", "device_id", b.deviceID, "error", err)
		s.keepUnsaved(b)
		return
	}
	s.booted[b.deviceID] = b.id
}

// keepUnsaved queues a boot for retry; s.mu is held.
func (s *Service) keepUnsaved(b boot) {
	if len(s.unsaved) >= s.opts.MaxUnsavedBoots {
		s.unsaved = s.unsaved[1:]
		s.dropped.Inc()
	}
	s.unsaved = append(s.unsaved, b)
}

// errDeviceGone marks a write for a device deleted since it was seen: dropped, not retried.
var errDeviceGone = errors.New("device deleted")

// writeBoot stores a boot (once per device and boot id, whichever replica or retry comes
// first) with the device's status and day row, in one transaction.
func (s *Service) writeBoot(ctx context.Context, b boot) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var found bool
		var version any
		if b.version != "" {
			version = b.version
		}
		qs := []db.Query{
			{SQL: `SELECT id FROM devices WHERE id = $1` + s.db.Lock(db.ForShare), Args: []any{b.deviceID},
				Scan: func(row db.Row) error {
					var id int64
					err := row.Scan(&id)
					found = err == nil
					return err
				}},
			{SQL: `INSERT INTO fleet_boots (device_id, boot_id, model_id, version, reason, booted_at) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (device_id, boot_id) DO NOTHING`, Args: []any{b.deviceID, b.id, b.modelID, version, b.reason, b.at}},
			// The status takes the device's latest stored boot, not this one: a replica that
			// restarted, or a late request of an earlier boot, must not move last_boot_at.
			{SQL: upsertStatusLatestBoot, Args: statusRow{deviceID: b.deviceID, seen: b.at, version: b.version, since: b.at, at: b.at}.args()[:5]},
		}
		if b.version != "" {
			qs = append(qs, db.Query{SQL: upsertDays(1), Args: []any{b.modelID, Day(b.at), b.version, b.deviceID, b.at}})
		}
		err := s.db.Batch(ctx, tx, qs...)
		if !found && errors.Is(err, sql.ErrNoRows) {
			return errDeviceGone
		}
		return err
	})
	if errors.Is(err, errDeviceGone) {
		return nil
	}
	return err
}

// statusRow is one device_status row to merge; its boot fields are NULL (boots set them
// from fleet_boots, see upsertStatusLatestBoot).
type statusRow struct {
	deviceID  int64
	seen      time.Time
	version   string // "" keeps the stored one
	since, at time.Time
}

func (r statusRow) args() []any {
	a := []any{r.deviceID, r.seen, nil, nil, nil, nil, nil, nil}
	if r.version != "" {
		a[2], a[3], a[4] = r.version, r.since, r.at
	}
	return a
}

const statusCols = 8

// upsertStatusLatestBoot merges one device_status row ($1–$5 as in upsertStatus) whose
// boot fields are those of the device's latest row in fleet_boots.
var upsertStatusLatestBoot = `INSERT INTO device_status (device_id, last_seen_at, running_version, running_since, version_seen_at,
		last_reset_reason, last_boot_at, last_boot_id)
	SELECT $1, $2, $3, $4, $5, b.reason, b.booted_at, b.boot_id FROM fleet_boots b WHERE b.device_id = $1
		ORDER BY b.booted_at DESC, b.boot_id DESC LIMIT 1` + statusMerge

// upsertStatus merges n device_status rows, whichever replica or writer comes first:
// the latest last_seen_at wins; the running version is the later claim (version_seen_at),
// and running_since moves only when that claim changes the version; the boot fields are
// the later boot's.
func upsertStatus(n int) string {
	return `INSERT INTO device_status (device_id, last_seen_at, running_version, running_since, version_seen_at,
		last_reset_reason, last_boot_at, last_boot_id) VALUES ` + placeholders(n, statusCols) + statusMerge
}

const statusMerge = `
	ON CONFLICT (device_id) DO UPDATE SET
		last_seen_at = CASE WHEN excluded.last_seen_at > device_status.last_seen_at THEN excluded.last_seen_at ELSE device_status.last_seen_at END,
		running_version = CASE WHEN ` + laterClaim + ` THEN excluded.running_version ELSE device_status.running_version END,
		running_since = CASE WHEN ` + laterClaim + ` AND (device_status.running_version IS NULL OR excluded.running_version <> device_status.running_version)
			THEN excluded.running_since ELSE device_status.running_since END,
		version_seen_at = CASE WHEN ` + laterClaim + ` THEN excluded.version_seen_at ELSE device_status.version_seen_at END,
		last_reset_reason = CASE WHEN ` + laterBoot + ` THEN excluded.last_reset_reason ELSE device_status.last_reset_reason END,
		last_boot_id = CASE WHEN ` + laterBoot + ` THEN excluded.last_boot_id ELSE device_status.last_boot_id END,
		last_boot_at = CASE WHEN ` + laterBoot + ` THEN excluded.last_boot_at ELSE device_status.last_boot_at END`

const (
	laterClaim = `(excluded.running_version IS NOT NULL AND (device_status.version_seen_at IS NULL OR excluded.version_seen_at >= device_status.version_seen_at))`
	laterBoot  = `(excluded.last_boot_at IS NOT NULL AND (device_status.last_boot_at IS NULL OR excluded.last_boot_at > device_status.last_boot_at))`
)

const dayCols = 5

// upsertDays merges n fleet_device_days rows (model_id, day, version, device_id, last_seen_at).
func upsertDays(n int) string {
	return `INSERT INTO fleet_device_days (model_id, day, version, device_id, last_seen_at) VALUES ` + placeholders(n, dayCols) + daysMerge
}

// daysMerge keeps a day row's latest last_seen_at, whichever writer comes first.
const daysMerge = `
	ON CONFLICT (model_id, day, version, device_id) DO UPDATE SET last_seen_at = CASE
		WHEN excluded.last_seen_at > fleet_device_days.last_seen_at THEN excluded.last_seen_at ELSE fleet_device_days.last_seen_at END`

// placeholders is "($1, …, $cols), (…)" for n rows.
func placeholders(n, cols int) string {
	var b strings.Builder
	for r := 0; r < n; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := 0; c < cols; c++ {
			if c > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d", r*cols+c+1)
		}
		b.WriteByte(')')
	}
	return b.String()
}

// flushRows bounds the rows of one statement, under both dialects' parameter limits
// (SQLite's 32 766, PostgreSQL's 65 535).
const flushRows = 4000

// Flush writes what this replica saw since the last flush — one upsert statement per
// table (per 4 000 devices) in one transaction — and retries boots that were refused.
// On failure the sightings are merged back and written by the next flush.
func (s *Service) Flush(ctx context.Context) error {
	s.mu.Lock()
	batch, boots := s.pending, s.unsaved
	s.pending, s.unsaved = map[int64]*sighting{}, nil
	s.mu.Unlock()
	var errs []error
	for i, b := range boots {
		if err := s.writeBoot(ctx, b); err != nil {
			s.mu.Lock()
			for _, rest := range boots[i:] {
				s.keepUnsaved(rest)
			}
			s.mu.Unlock()
			errs = append(errs, fmt.Errorf("boots: %w", err))
			break
		}
		s.mu.Lock()
		s.booted[b.deviceID] = b.id
		s.mu.Unlock()
	}
	if len(batch) > 0 {
		if err := s.writeSightings(ctx, batch); err != nil {
			s.failures.WithLabelValues("check-ins").Inc()
			s.mu.Lock()
			for id, p := range batch {
				s.restore(id, p)
			}
			s.mu.Unlock()
			errs = append(errs, fmt.Errorf("check-ins: %w", err))
		}
	}
	return errors.Join(errs...)
}

// restore merges a sighting whose write failed back into pending; s.mu is held.
func (s *Service) restore(id int64, old *sighting) {
	cur := s.pending[id]
	if cur == nil {
		s.pending[id] = old
		return
	}
	if old.lastSeen.After(cur.lastSeen) {
		cur.lastSeen = old.lastSeen
	}
	if old.version != "" && (cur.version == "" || old.at.After(cur.at)) {
		cur.version, cur.since, cur.at = old.version, old.since, old.at
	} else if old.version == cur.version && old.since.Before(cur.since) {
		cur.since = old.since
	}
	for k, t := range old.days {
		if cur.days == nil {
			cur.days = map[dayKey]time.Time{}
		}
		if t.After(cur.days[k]) {
			cur.days[k] = t
		}
	}
}

func (s *Service) writeSightings(ctx context.Context, batch map[int64]*sighting) error {
	ids := make([]int64, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(ids); start += flushRows {
			chunk := ids[start:min(start+flushRows, len(ids))]
			// Devices deleted since they were seen are skipped; the rest are held (shared)
			// so a deletion cannot slip in before the rows referencing them are written.
			exists, err := s.existing(ctx, tx, chunk)
			if err != nil {
				return err
			}
			var status, days []any
			nStatus, nDays := 0, 0
			for _, id := range chunk {
				if !exists[id] {
					continue
				}
				p := batch[id]
				status = append(status, statusRow{deviceID: id, seen: p.lastSeen, version: p.version, since: p.since, at: p.at}.args()...)
				nStatus++
				for k, t := range p.days {
					days = append(days, p.modelID, k.day, k.version, id, t)
					nDays++
				}
			}
			if nStatus > 0 {
				if _, err := tx.ExecContext(ctx, upsertStatus(nStatus), status...); err != nil {
					return fmt.Errorf("write device status: %w", err)
				}
			}
			for off := 0; off < nDays; off += flushRows {
				n := min(flushRows, nDays-off)
				if _, err := tx.ExecContext(ctx, upsertDays(n), days[off*dayCols:(off+n)*dayCols]...); err != nil {
					return fmt.Errorf("write fleet days: %w", err)
				}
			}
		}
		return nil
	})
}

// existing returns which of ids are still devices, holding their rows for the transaction.
func (s *Service) existing(ctx context.Context, tx *sql.Tx, ids []int64) (map[int64]bool, error) {
	args := make([]any, len(ids))
	ph := make([]string, len(ids))
	for i, id := range ids {
		args[i], ph[i] = id, fmt.Sprintf("$%d", i+1)
	}
	rows, err := tx.QueryContext(ctx, `SELECT id FROM devices WHERE id IN (`+strings.Join(ph, ", ")+`)`+s.db.Lock(db.ForShare), args...)
	if err != nil {
		return nil, fmt.Errorf("find devices: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]bool, len(ids))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// Dumps records stored core dumps in the fleet tables (coredumps.Fleet). It holds no
// state, so the core dump owner can take it before the fleet service exists.
type Dumps struct{}

// DumpQueries are the statements that record a stored core dump as a crash of its device
// on version, and the device as seen running it. They join the upload's own batch (the
// device row is already held), so they commit with the dump or not at all.
func (Dumps) DumpQueries(deviceID int64, version string, at time.Time) []db.Query {
	at = at.UTC()
	return []db.Query{
		{SQL: `INSERT INTO fleet_dumps (device_id, model_id, version, uploaded_at) SELECT id, device_model_id, $2, $3 FROM devices WHERE id = $1`,
			Args: []any{deviceID, version, at}},
		{SQL: upsertStatus(1), Args: statusRow{deviceID: deviceID, seen: at, version: version, since: at, at: at}.args()},
		{SQL: `INSERT INTO fleet_device_days (model_id, day, version, device_id, last_seen_at)
			SELECT device_model_id, $2, $3, id, $4 FROM devices WHERE id = $1` + daysMerge,
			Args: []any{deviceID, Day(at), version, at}},
	}
}

// Run flushes every FlushInterval and prunes history hourly until ctx ends, then flushes
// once more (bounded by a few seconds).
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := s.Flush(fctx); err != nil {
				s.log.Error("fleet: final flush failed; last-seen updates since the previous flush are lost", "error", err)
			}
			cancel()
			return
		case <-t.C:
		}
		if err := s.Flush(ctx); err != nil {
			s.log.Warn("fleet: flush failed, retried at the next interval", "error", err)
		}
		if s.now().Sub(s.lastPrune) >= time.Hour {
			if n, err := s.Prune(ctx); err != nil {
				s.log.Warn("fleet: pruning history failed", "error", err)
			} else {
				s.lastPrune = s.now()
				if n > 0 {
					s.log.Info("fleet: pruned history", "rows", n, "days_kept", s.opts.HistoryDays)
				}
			}
		}
	}
}

// Prune deletes history older than HistoryDays, PruneBatch rows per statement so no
// statement holds locks for long. It returns the rows deleted.
func (s *Service) Prune(ctx context.Context) (int, error) {
	cutoff := s.now().Add(-time.Duration(s.opts.HistoryDays) * 24 * time.Hour)
	stmts := []struct {
		sql string
		arg any
	}{
		{`DELETE FROM fleet_device_days WHERE (model_id, day, version, device_id) IN
			(SELECT model_id, day, version, device_id FROM fleet_device_days WHERE day < $1 LIMIT $2)`, Day(cutoff)},
		{`DELETE FROM fleet_boots WHERE (device_id, boot_id) IN
			(SELECT device_id, boot_id FROM fleet_boots WHERE booted_at < $1 LIMIT $2)`, cutoff},
		{`DELETE FROM fleet_dumps WHERE id IN (SELECT id FROM fleet_dumps WHERE uploaded_at < $1 LIMIT $2)`, cutoff},
	}
	total := 0
	for _, st := range stmts {
		for {
			res, err := s.db.ExecContext(ctx, st.sql, st.arg, s.opts.PruneBatch)
			if err != nil {
				return total, db.Err("prune fleet history", err)
			}
			n, _ := res.RowsAffected()
			total += int(n)
			if n < int64(s.opts.PruneBatch) {
				break
			}
		}
	}
	return total, nil
}
