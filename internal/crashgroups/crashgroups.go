// Package crashgroups turns decoded core dumps into crash groups: one problem per crash
// signature and device model, with how many dumps and devices, on which versions and
// days, and its status (open, resolved, ignored). It owns the crash_group* tables. A dump
// is assigned inside the decode job's transaction (AssignTx); counts live in their own
// rows, so retention pruning dumps never changes them.
package crashgroups

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

// Statuses of a group.
const (
	StatusOpen     = "open"
	StatusResolved = "resolved"
	StatusIgnored  = "ignored"
)

// Versions is what grouping needs of the firmware owner (firmware.Service): the order of a
// model's uploaded versions, for regressions.
type Versions interface {
	UploadedAfter(ctx context.Context, q db.Querier, modelID int64, version, than string) (bool, error)
}

// Jobs inserts River jobs inside the caller's transaction (jobs.Inserter): events and the
// backfill are durable and start only after the commit.
type Jobs interface {
	InsertTx(ctx context.Context, tx *sql.Tx, args river.JobArgs, opts *river.InsertOpts) error
}

// Service assigns dumps to groups and serves the groups.
type Service struct {
	db       *db.DB
	versions Versions
	jobs     Jobs
	dumps    Dumps
	log      *slog.Logger
	opts     Options
	now      func() time.Time
}

// Options tune the service.
type Options struct {
	// WebhookAttempts is how often an event's webhook delivery is tried (WEBHOOK_MAX_ATTEMPTS);
	// 0 queues none (WEBHOOK_URL unset).
	WebhookAttempts int
	// MQTTEvents queues each event's MQTT publication (MQTT_URL set); without it none is queued.
	MQTTEvents bool
	// BackfillBatch is how many dumps one backfill transaction groups (default 100).
	BackfillBatch int
}

// NewService returns the service; every dependency is required.
func NewService(d *db.DB, versions Versions, jobs Jobs, dumps Dumps, opts Options, log *slog.Logger) *Service {
	if versions == nil || jobs == nil || dumps == nil {
		panic("crashgroups.NewService: the firmware and core dump owners and a job inserter are required")
	}
	if log == nil {
		log = slog.Default()
	}
	if opts.BackfillBatch <= 0 {
		opts.BackfillBatch = 100
	}
	return &Service{db: d, versions: versions, jobs: jobs, dumps: dumps, opts: opts, log: log, now: db.Now}
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Dump is a decoded dump to assign.
type Dump struct {
	ID         int64
	DeviceID   int64
	ModelID    int64
	ModelCode  string
	Version    string
	UploadedAt time.Time
}

// Assignment is what AssignTx did.
type Assignment struct {
	GroupID   int64 // 0 when the dump is in no group
	New       bool  // the group was created by this dump
	Regressed bool  // the dump reopened a resolved group
}

// AssignTx puts a decoded dump into its group inside tx, the transaction that records
// the decode: rep is the decoded report (nil when the dump ended in ERROR, which is grouped
// nowhere). A dump decoded again (reparse) moves to its new group, or stays counted once
// in the same one. A new group and a regression queue their events. tx must hold the
// dump's row (the decode's RecordResult updated it), so two decodes of one dump count it
// one after the other, the second seeing the first's place.
func (s *Service) AssignTx(ctx context.Context, tx *sql.Tx, d Dump, rep *espcore.Report) (Assignment, error) {
	a, err := s.assign(ctx, tx, d, rep, true)
	if err != nil {
		return a, fmt.Errorf("assign core dump %d to a crash group: %w", d.ID, err)
	}
	return a, nil
}

// placement is where a dump is and where its signature goes (place).
type placement struct {
	old        assignment // the dump's former place (groupID 0: none)
	groupID    int64      // the signature's group, 0 when it has none yet
	status     string
	resolvedIn sql.NullString
}

func (s *Service) assign(ctx context.Context, tx *sql.Tx, d Dump, rep *espcore.Report, events bool) (Assignment, error) {
	var sig Signature
	ok := false
	if rep != nil {
		sig, ok = ComputeReport(rep)
	}
	if !ok {
		old, err := assigned(ctx, tx, d.ID)
		if err != nil || old == nil {
			return Assignment{}, err
		}
		if err := s.unassign(ctx, tx, old, true); err != nil {
			return Assignment{}, err
		}
		return Assignment{}, nil
	}
	at := d.UploadedAt.UTC()
	if at.IsZero() {
		at = s.now()
	}
	c, err := s.place(ctx, tx, d, sig)
	if err != nil {
		return Assignment{}, err
	}
	a := Assignment{GroupID: c.groupID}
	if c.groupID == 0 {
		// The first dump of this signature: create its group.
		if a.GroupID, a.New, err = s.group(ctx, tx, d, sig, at); err != nil {
			return a, err
		}
		c.status = StatusOpen
	}
	if c.old.groupID == a.GroupID && c.old.groupingVersion == GroupingVersion {
		return a, nil // decoded again into the same group: counted once, nothing else changes
	}
	if err := s.count(ctx, tx, d, sig, a.GroupID, at); err != nil {
		return a, err
	}
	if c.old.groupID != 0 {
		if err := s.unassign(ctx, tx, &c.old, false); err != nil {
			return a, err
		}
	}
	if c.status == StatusResolved {
		// Resolved in V: a dump of a version uploaded after V reopens it; without a V, any dump does.
		a.Regressed = !c.resolvedIn.Valid
		if c.resolvedIn.Valid && d.Version != c.resolvedIn.String {
			if a.Regressed, err = s.versions.UploadedAfter(ctx, tx, d.ModelID, d.Version, c.resolvedIn.String); err != nil {
				return a, err
			}
		}
		if a.Regressed {
			if _, err := tx.ExecContext(ctx, `UPDATE crash_groups SET status = 'open', regressed_at = $2 WHERE id = $1`, a.GroupID, s.now()); err != nil {
				return a, fmt.Errorf("reopen crash group %d: %w", a.GroupID, err)
			}
		}
	}
	if events && (a.New || a.Regressed) {
		kind := EventNew
		if !a.New {
			kind = EventRegressed
		}
		if err := s.queueEvent(ctx, tx, Event{Event: kind, GroupID: a.GroupID, Model: d.ModelCode, Title: sig.Title, Version: d.Version}); err != nil {
			return a, err
		}
	}
	return a, nil
}

// place reads the group of the dump's signature, locking its row (before any device row,
// as Merge does) and reading its status under the lock, and where the dump is now. With no
// group yet, it reads only the latter.
func (s *Service) place(ctx context.Context, tx *sql.Tx, d Dump, sig Signature) (placement, error) {
	c := placement{old: assignment{coredumpID: d.ID}}
	err := tx.QueryRowContext(ctx, `SELECT g.id, g.status, g.resolved_in_version, COALESCE(a.group_id, 0), COALESCE(a.device_id, 0),
		COALESCE(a.version, ''), COALESCE(a.day, ''), COALESCE(a.grouping_version, 0)
		FROM crash_group_fingerprints f JOIN crash_groups g ON g.id = f.group_id LEFT JOIN crash_group_dumps a ON a.coredump_id = $1
		WHERE f.model_id = $2 AND f.fingerprint = $3`+s.db.LockOf(db.ForUpdate, "g"), d.ID, d.ModelID, sig.Fingerprint).
		Scan(&c.groupID, &c.status, &c.resolvedIn, &c.old.groupID, &c.old.deviceID, &c.old.version, &c.old.day, &c.old.groupingVersion)
	if errors.Is(err, sql.ErrNoRows) {
		old, err := assigned(ctx, tx, d.ID)
		if old != nil {
			c.old = *old
		}
		return c, err
	}
	if err != nil {
		return c, fmt.Errorf("read crash group of core dump %d: %w", d.ID, err)
	}
	return c, nil
}

// count counts the dump in group g, whose row the caller holds, and records its place, in
// one batch (one round trip on PostgreSQL). The group's device_count grows when this dump is its device's first there: the device row's
// count is then 1 (rows that fall to 0 are deleted), and the row stays locked to the end.
func (s *Service) count(ctx context.Context, tx *sql.Tx, d Dump, sig Signature, g int64, at time.Time) error {
	day := at.Format(time.DateOnly)
	err := s.db.Batch(ctx, tx,
		db.Query{SQL: `INSERT INTO crash_group_devices (group_id, device_id, dump_count, first_seen_at, last_seen_at, last_version)
			VALUES ($1, $2, 1, $3, $3, $4) ON CONFLICT (group_id, device_id) DO UPDATE SET dump_count = crash_group_devices.dump_count + 1,
			first_seen_at = CASE WHEN excluded.first_seen_at < crash_group_devices.first_seen_at THEN excluded.first_seen_at ELSE crash_group_devices.first_seen_at END,
			last_version = CASE WHEN excluded.last_seen_at >= crash_group_devices.last_seen_at THEN excluded.last_version ELSE crash_group_devices.last_version END,
			last_seen_at = CASE WHEN excluded.last_seen_at >= crash_group_devices.last_seen_at THEN excluded.last_seen_at ELSE crash_group_devices.last_seen_at END`,
			Args: []any{g, d.DeviceID, at, d.Version}},
		db.Query{SQL: `INSERT INTO crash_group_daily (group_id, version, day, device_id, dumps) VALUES ($1, $2, $3, $4, 1)
			ON CONFLICT (group_id, version, day, device_id) DO UPDATE SET dumps = crash_group_daily.dumps + 1`,
			Args: []any{g, d.Version, day, d.DeviceID}},
		db.Query{SQL: `UPDATE crash_groups SET dump_count = dump_count + 1,
			device_count = device_count + (SELECT COUNT(*) FROM crash_group_devices WHERE group_id = $1 AND device_id = $2 AND dump_count = 1),
			first_version = CASE WHEN $3 < first_seen_at THEN $4 ELSE first_version END,
			first_seen_at = CASE WHEN $3 < first_seen_at THEN $3 ELSE first_seen_at END,
			last_version = CASE WHEN $3 >= last_seen_at THEN $4 ELSE last_version END,
			culprit = CASE WHEN $3 >= last_seen_at THEN $5 ELSE culprit END,
			last_seen_at = CASE WHEN $3 >= last_seen_at THEN $3 ELSE last_seen_at END
			WHERE id = $1`, Args: []any{g, d.DeviceID, at, d.Version, sig.Culprit}},
		db.Query{SQL: `INSERT INTO crash_group_dumps (coredump_id, group_id, device_id, version, day, grouping_version) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (coredump_id) DO UPDATE SET group_id = excluded.group_id, device_id = excluded.device_id, version = excluded.version,
			day = excluded.day, grouping_version = excluded.grouping_version`,
			Args: []any{d.ID, g, d.DeviceID, d.Version, day, GroupingVersion}},
	)
	if err != nil {
		return fmt.Errorf("count core dump %d in crash group %d: %w", d.ID, g, err)
	}
	return nil
}

// group finds the group of a signature (its own or the one it was merged into) or creates
// it. A concurrent creator's row is found once it commits: the insert waits on the unique key.
func (s *Service) group(ctx context.Context, tx *sql.Tx, d Dump, sig Signature, at time.Time) (id int64, created bool, err error) {
	lookup := func() (int64, error) {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT group_id FROM crash_group_fingerprints WHERE model_id = $1 AND fingerprint = $2`,
			d.ModelID, sig.Fingerprint).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil
		}
		return id, err
	}
	now := s.now()
	err = tx.QueryRowContext(ctx, `INSERT INTO crash_groups (model_id, fingerprint, grouping_version, title, fault, culprit,
		first_seen_at, last_seen_at, first_version, last_version, status, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $8, 'open', $9, $9) ON CONFLICT (model_id, fingerprint) DO NOTHING RETURNING id`,
		d.ModelID, sig.Fingerprint, GroupingVersion, sig.Title, sig.Fault, sig.Culprit, at, d.Version, now).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows): // created meanwhile by another decode, which committed
		id, err = lookup()
		if err == nil && id == 0 {
			err = fmt.Errorf("crash group of fingerprint %s exists without its fingerprint row", sig.Fingerprint)
		}
		if err == nil { // held before any device row, as place does
			err = s.db.LockRow(ctx, tx, db.ForUpdate, "crash_groups", "id", id)
		}
		return id, false, err
	case err != nil:
		return 0, false, fmt.Errorf("create crash group: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO crash_group_fingerprints (model_id, fingerprint, group_id) VALUES ($1, $2, $3)`,
		d.ModelID, sig.Fingerprint, id); err != nil {
		return 0, false, fmt.Errorf("record fingerprint: %w", err)
	}
	return id, true, nil
}

// assignment is a dump's current place.
type assignment struct {
	coredumpID, groupID, deviceID int64
	version, day                  string
	groupingVersion               int
}

func assigned(ctx context.Context, tx *sql.Tx, coredumpID int64) (*assignment, error) {
	a := assignment{coredumpID: coredumpID}
	err := tx.QueryRowContext(ctx, `SELECT group_id, device_id, version, day, grouping_version FROM crash_group_dumps WHERE coredump_id = $1`,
		coredumpID).Scan(&a.groupID, &a.deviceID, &a.version, &a.day, &a.groupingVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read crash group of core dump %d: %w", coredumpID, err)
	}
	return &a, nil
}

// unassign takes a dump out of its former group's counts (it was decoded again into another
// group, or into no report); drop removes its place too (when it has no new one).
func (s *Service) unassign(ctx context.Context, tx *sql.Tx, a *assignment, drop bool) error {
	var goneDevice int64
	err := s.db.Batch(ctx, tx,
		db.Query{SQL: `UPDATE crash_group_daily SET dumps = dumps - 1 WHERE group_id = $1 AND version = $2 AND day = $3 AND device_id = $4`,
			Args: []any{a.groupID, a.version, a.day, a.deviceID}},
		db.Query{SQL: `DELETE FROM crash_group_daily WHERE group_id = $1 AND version = $2 AND day = $3 AND device_id = $4 AND dumps <= 0`,
			Args: []any{a.groupID, a.version, a.day, a.deviceID}},
		db.Query{SQL: `UPDATE crash_group_devices SET dump_count = dump_count - 1 WHERE group_id = $1 AND device_id = $2`,
			Args: []any{a.groupID, a.deviceID}},
		db.Query{SQL: `SELECT COUNT(*) FROM crash_group_devices WHERE group_id = $1 AND device_id = $2 AND dump_count <= 0`,
			Args: []any{a.groupID, a.deviceID}, Scan: func(r db.Row) error { return r.Scan(&goneDevice) }},
		db.Query{SQL: `DELETE FROM crash_group_devices WHERE group_id = $1 AND device_id = $2 AND dump_count <= 0`,
			Args: []any{a.groupID, a.deviceID}},
	)
	if err == nil && drop {
		_, err = tx.ExecContext(ctx, `DELETE FROM crash_group_dumps WHERE coredump_id = $1`, a.coredumpID)
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `UPDATE crash_groups SET dump_count = dump_count - 1, device_count = device_count - $2, updated_at = $3
			WHERE id = $1`, a.groupID, goneDevice, s.now())
	}
	if err != nil {
		return fmt.Errorf("take core dump %d out of crash group %d: %w", a.coredumpID, a.groupID, err)
	}
	return nil
}
