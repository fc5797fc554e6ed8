// Package rollouts owns staged rollouts and per-device firmware pins (tables rollouts
// and device_firmware_pins): a stored version reaches a growing cohort of a model's
// devices stage by stage, advancing when the fleet view says it is healthy and halting
// by itself when it crashes more than the version before it. firmware answers devices
// from these tables (reads only); every change here tells it which answers changed.
package rollouts

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/cohort"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// States of a rollout.
const (
	Active    = "active"
	Paused    = "paused"
	Halted    = "halted"
	Completed = "completed"
	Aborted   = "aborted"
)

// What cohort devices run after a halt.
const (
	OnHaltRevert = "revert"
	OnHaltHold   = "hold"
)

// Stage is one step of a rollout: the share of devices in the cohort and how long it
// runs, at least, before advancing.
type Stage struct {
	Percent    int `json:"percent"`
	MinMinutes int `json:"min_minutes" required:"false" doc:"Least time in this stage before it advances (default 0)"`
}

// Rollout is one staged rollout of a model's stored version.
type Rollout struct {
	ID               int64      `json:"id"`
	ModelID          int64      `json:"model_id"`
	Version          string     `json:"version"`
	PreviousVersion  *string    `json:"previous_version"`
	State            string     `json:"state"`
	Stages           []Stage    `json:"stages"`
	Stage            int        `json:"stage"`
	Percent          int        `json:"percent"`
	MaxCrashFreeDrop float64    `json:"max_crash_free_drop"`
	MinDevices       int        `json:"min_devices"`
	MaxNewGroupDevs  int        `json:"max_new_group_devices"`
	OnHalt           string     `json:"on_halt"`
	Reason           string     `json:"reason"`
	StartedAt        time.Time  `json:"started_at"`
	StageStartedAt   time.Time  `json:"stage_started_at"`
	EvaluatedAt      *time.Time `json:"evaluated_at"`
	FinishedAt       *time.Time `json:"finished_at"`
	CreatedBy        string     `json:"created_by"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

// serves reports whether the cohort gets the rollout's version in this state.
func (r *Rollout) serves() bool {
	return r.State == Active || r.State == Paused || (r.State == Halted && r.OnHalt == OnHaltHold)
}

func (r *Rollout) unfinished() bool {
	return r.State == Active || r.State == Paused || r.State == Halted
}

// Input starts a rollout. Nil limits take the defaults (2.0 points, 20 devices, 3 devices).
type Input struct {
	Version            string   `json:"version"`
	Stages             []Stage  `json:"stages"`
	MaxCrashFreeDrop   *float64 `json:"max_crash_free_drop,omitempty"`
	MinDevices         *int     `json:"min_devices,omitempty"`
	MaxNewGroupDevices *int     `json:"max_new_group_devices,omitempty"`
	OnHalt             string   `json:"on_halt,omitempty"`
}

// Firmware is what rollouts needs of the firmware owner (firmware.Service).
type Firmware interface {
	HasVersionTx(ctx context.Context, tx *sql.Tx, modelID int64, version string) (bool, error)
	CurrentTx(ctx context.Context, tx *sql.Tx, modelID int64) (string, error)
	MakeCurrentTx(ctx context.Context, tx *sql.Tx, modelID int64, version string) error
	AnswersChanged(ctx context.Context, byVersion map[string][]string)
}

// Fleet answers the fleet view over a stage (fleet.Service).
type Fleet interface {
	ViewSince(ctx context.Context, modelID int64, since time.Time, label string) (*fleet.View, error)
}

// Groups lists crash groups first seen on a version (crashgroups.Service).
type Groups interface {
	NewGroupsOn(ctx context.Context, modelID int64, version string, since time.Time) ([]crashgroups.NewGroup, error)
}

// Models resolves models and devices (devices.Service).
type Models interface {
	GetModel(ctx context.Context, id int64) (*devices.Model, error)
	GetDevice(ctx context.Context, id int64) (*devices.Device, error)
}

// Audit records the evaluator's own decisions (auth.Audit); API changes are audited by
// the HTTP layer like every write.
type Audit interface {
	Record(ctx context.Context, e auth.AuditEntry) error
}

// Options are the rollout settings.
type Options struct {
	// EvalInterval is how often active rollouts are evaluated (ROLLOUT_EVAL_INTERVAL).
	EvalInterval time.Duration
	// Now is the clock (tests); db.Now by default.
	Now func() time.Time
}

// Service starts, evaluates and changes rollouts and pins.
type Service struct {
	db     *db.DB
	fw     Firmware
	fleet  Fleet
	groups Groups
	models Models
	audit  Audit
	events Events
	opts   Options
	log    *slog.Logger
}

// NewService returns the rollouts service. Every argument is required.
func NewService(d *db.DB, fw Firmware, fl Fleet, groups Groups, models Models, audit Audit, events Events, opts Options, log *slog.Logger) *Service {
	if d == nil || fw == nil || fl == nil || groups == nil || models == nil || audit == nil || events == nil || log == nil {
		panic("rollouts.NewService: every dependency is required")
	}
	if opts.EvalInterval <= 0 {
		opts.EvalInterval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = db.Now
	}
	return &Service{db: d, fw: fw, fleet: fl, groups: groups, models: models, audit: audit, events: events, opts: opts, log: log}
}

func (s *Service) now() time.Time { return s.opts.Now().UTC().Truncate(time.Microsecond) }

func validate(in *Input) error {
	if !naming.ValidVersion(in.Version) {
		return apperr.Validationf("version must be 1 to 32 of A-Z a-z 0-9 . _ + - (got %q)", in.Version)
	}
	if len(in.Stages) == 0 || len(in.Stages) > 20 {
		return apperr.Validationf("stages: from 1 to 20 stages are needed")
	}
	last := 0
	for i, st := range in.Stages {
		if st.Percent <= last || st.Percent > 100 {
			return apperr.Validationf("stages[%d].percent must grow, from 1 to 100 (got %d)", i, st.Percent)
		}
		if st.MinMinutes < 0 || st.MinMinutes > 60*24*90 {
			return apperr.Validationf("stages[%d].min_minutes must be from 0 to 129600 (got %d)", i, st.MinMinutes)
		}
		last = st.Percent
	}
	if last != 100 {
		return apperr.Validationf("the last stage must reach 100 percent (got %d)", last)
	}
	if in.MaxCrashFreeDrop == nil {
		v := 2.0
		in.MaxCrashFreeDrop = &v
	}
	if *in.MaxCrashFreeDrop < 0 || *in.MaxCrashFreeDrop > 100 {
		return apperr.Validationf("max_crash_free_drop must be from 0 to 100 (got %g)", *in.MaxCrashFreeDrop)
	}
	if in.MinDevices == nil {
		v := 20
		in.MinDevices = &v
	}
	if *in.MinDevices < 1 || *in.MinDevices > 1_000_000 {
		return apperr.Validationf("min_devices must be from 1 to 1000000 (got %d)", *in.MinDevices)
	}
	if in.MaxNewGroupDevices == nil {
		v := 3
		in.MaxNewGroupDevices = &v
	}
	if *in.MaxNewGroupDevices < 0 || *in.MaxNewGroupDevices > 1_000_000 {
		return apperr.Validationf("max_new_group_devices must be from 0 to 1000000 (got %d)", *in.MaxNewGroupDevices)
	}
	switch in.OnHalt {
	case "":
		in.OnHalt = OnHaltRevert
	case OnHaltRevert, OnHaltHold:
	default:
		return apperr.Validationf("on_halt must be revert or hold (got %q)", in.OnHalt)
	}
	return nil
}

const rolloutColumns = `id, model_id, version, previous_version, state, stages, stage, percent, max_crash_free_drop, min_devices,
	max_new_group_devices, on_halt, reason, started_at, stage_started_at, evaluated_at, finished_at, created_by, updated_at`

type scanner interface{ Scan(...any) error }

func scanRollout(sc scanner) (*Rollout, error) {
	var (
		r         Rollout
		prev      sql.NullString
		stages    string
		eval, fin sql.NullTime
	)
	if err := sc.Scan(&r.ID, &r.ModelID, &r.Version, &prev, &r.State, &stages, &r.Stage, &r.Percent, &r.MaxCrashFreeDrop,
		&r.MinDevices, &r.MaxNewGroupDevs, &r.OnHalt, &r.Reason, &r.StartedAt, &r.StageStartedAt, &eval, &fin, &r.CreatedBy, &r.UpdatedAt); err != nil {
		return nil, err
	}
	if prev.Valid {
		r.PreviousVersion = &prev.String
	}
	if err := json.Unmarshal([]byte(stages), &r.Stages); err != nil {
		return nil, fmt.Errorf("rollout %d stages: %w", r.ID, err)
	}
	r.StartedAt, r.StageStartedAt, r.UpdatedAt = r.StartedAt.UTC(), r.StageStartedAt.UTC(), r.UpdatedAt.UTC()
	if eval.Valid {
		t := eval.Time.UTC()
		r.EvaluatedAt = &t
	}
	if fin.Valid {
		t := fin.Time.UTC()
		r.FinishedAt = &t
	}
	return &r, nil
}

// Start begins a rollout of a stored version: its first stage's cohort gets it at once.
// One unfinished (active, paused or halted) rollout per model.
func (s *Service) Start(ctx context.Context, modelID int64, in Input, actor string) (*Rollout, error) {
	if err := validate(&in); err != nil {
		return nil, err
	}
	m, err := s.models.GetModel(ctx, modelID)
	if err != nil {
		return nil, err
	}
	stages, _ := json.Marshal(in.Stages)
	var out *Rollout
	var changed map[string][]string
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := firmware.LockModel(ctx, s.db, tx, m.ID); err != nil {
			return err
		}
		ok, err := s.fw.HasVersionTx(ctx, tx, m.ID, in.Version)
		if err != nil {
			return err
		}
		if !ok {
			return apperr.NotFoundf("FirmwareVersion %s %s was not found", m.Code, in.Version)
		}
		current, err := s.fw.CurrentTx(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		if current == in.Version {
			return apperr.InvalidOperationf("Cannot roll out %s because it is already the current version of %s", in.Version, m.Code)
		}
		var busy int64
		err = tx.QueryRowContext(ctx, `SELECT id FROM rollouts WHERE model_id = $1 AND state IN ('active', 'paused', 'halted')`, m.ID).Scan(&busy)
		if err == nil {
			return apperr.InvalidOperationf("Cannot start a rollout of %s because rollout %d is not finished (abort or complete it)", m.Code, busy)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		before, err := s.answers(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		now := s.now()
		var prev any
		if current != "" {
			prev = current
		}
		var id int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO rollouts (model_id, version, previous_version, state, stages, stage, percent,
			max_crash_free_drop, min_devices, max_new_group_devices, on_halt, reason, started_at, stage_started_at, created_by, updated_at)
			VALUES ($1, $2, $3, 'active', $4, 0, $5, $6, $7, $8, $9, '', $10, $10, $11, $10) RETURNING id`,
			m.ID, in.Version, prev, string(stages), in.Stages[0].Percent, *in.MaxCrashFreeDrop, *in.MinDevices, *in.MaxNewGroupDevices,
			in.OnHalt, now, actor).Scan(&id); err != nil {
			return err
		}
		if out, err = s.get(ctx, tx, m.ID, id); err != nil {
			return err
		}
		if err := s.queueEvent(ctx, tx, nil, out); err != nil {
			return err
		}
		changed, err = s.changedSince(ctx, tx, m.ID, before)
		return err
	})
	if err != nil {
		return nil, db.Err("start rollout", err)
	}
	s.fw.AnswersChanged(ctx, changed)
	return out, nil
}

func (s *Service) get(ctx context.Context, q db.Querier, modelID, id int64) (*Rollout, error) {
	r, err := scanRollout(q.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = $1 AND model_id = $2`, id, modelID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFoundf("Rollout %d was not found", id)
	}
	return r, err
}

// List returns a model's rollouts, newest first.
func (s *Service) List(ctx context.Context, modelID int64) ([]*Rollout, error) {
	if _, err := s.models.GetModel(ctx, modelID); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE model_id = $1 ORDER BY id DESC`, modelID)
	if err != nil {
		return nil, db.Err("list rollouts", err)
	}
	defer rows.Close()
	out := []*Rollout{}
	for rows.Next() {
		r, err := scanRollout(rows)
		if err != nil {
			return nil, db.Err("list rollouts", err)
		}
		out = append(out, r)
	}
	return out, db.Err("list rollouts", rows.Err())
}

// Get returns one rollout of a model.
func (s *Service) Get(ctx context.Context, modelID, id int64) (*Rollout, error) {
	r, err := s.get(ctx, s.db, modelID, id)
	return r, db.Err("get rollout", err)
}

// device is what the cohort and the answer need of one device.
type device struct {
	id            int64
	key, clientID string
	pin, running  sql.NullString
}

// fleetOf reads the model's devices with their pins and running versions.
func fleetOf(ctx context.Context, q db.Querier, modelID int64) ([]device, error) {
	rows, err := q.QueryContext(ctx, `SELECT d.id, d.key, m.code, p.version, st.running_version
		FROM devices d JOIN device_models m ON m.id = d.device_model_id
		LEFT JOIN device_firmware_pins p ON p.device_id = d.id
		LEFT JOIN device_status st ON st.device_id = d.id
		WHERE d.device_model_id = $1 ORDER BY d.id`, modelID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []device
	for rows.Next() {
		var d device
		var code string
		if err := rows.Scan(&d.id, &d.key, &code, &d.pin, &d.running); err != nil {
			return nil, err
		}
		d.clientID = (&devices.Device{ModelCode: code, Key: d.key}).ClientID()
		out = append(out, d)
	}
	return out, rows.Err()
}

// answers is what every device of the model is to run, as firmware answers it (the same
// rule: pin, rollout cohort, current), by device id.
func (s *Service) answers(ctx context.Context, tx *sql.Tx, modelID int64) (map[int64]string, error) {
	current, err := s.fw.CurrentTx(ctx, tx, modelID)
	if err != nil {
		return nil, err
	}
	r, err := scanRollout(tx.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE model_id = $1
		AND state IN ('active', 'paused', 'halted')`, modelID))
	if errors.Is(err, sql.ErrNoRows) {
		r, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	devs, err := fleetOf(ctx, tx, modelID)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]string, len(devs))
	for _, d := range devs {
		switch {
		case d.pin.Valid:
			out[d.id] = d.pin.String
		case r != nil && r.serves() && cohort.In(d.key, r.ID, r.Percent):
			out[d.id] = r.Version
		default:
			out[d.id] = current
		}
	}
	return out, nil
}

// changedSince groups the devices whose answer differs from before by their new version
// (client ids, for the notification).
func (s *Service) changedSince(ctx context.Context, tx *sql.Tx, modelID int64, before map[int64]string) (map[string][]string, error) {
	after, err := s.answers(ctx, tx, modelID)
	if err != nil {
		return nil, err
	}
	devs, err := fleetOf(ctx, tx, modelID)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, d := range devs {
		if v := after[d.id]; v != "" && v != before[d.id] {
			out[v] = append(out[v], d.clientID)
		}
	}
	return out, nil
}

// change runs one change of a rollout under the model's lock: fn gets the rollout as it
// is and returns an error to refuse; devices whose answer changed are told after commit.
func (s *Service) change(ctx context.Context, modelID, id int64, op string, fn func(tx *sql.Tx, r *Rollout, now time.Time) error) (*Rollout, error) {
	var out *Rollout
	var changed map[string][]string
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := firmware.LockModel(ctx, s.db, tx, modelID); err != nil {
			return err
		}
		r, err := s.get(ctx, tx, modelID, id)
		if err != nil {
			return err
		}
		before, err := s.answers(ctx, tx, modelID)
		if err != nil {
			return err
		}
		if err := fn(tx, r, s.now()); err != nil {
			return err
		}
		if out, err = s.get(ctx, tx, modelID, id); err != nil {
			return err
		}
		if err := s.queueEvent(ctx, tx, r, out); err != nil {
			return err
		}
		changed, err = s.changedSince(ctx, tx, modelID, before)
		return err
	})
	if err != nil {
		return nil, db.Err(op, err)
	}
	s.fw.AnswersChanged(ctx, changed)
	return out, nil
}

func refuse(r *Rollout, what string) error {
	return apperr.InvalidOperationf("Cannot %s rollout %d because it is %s", what, r.ID, r.State)
}

// advanceTx moves r to its next stage, or completes it after the last one.
func (s *Service) advanceTx(ctx context.Context, tx *sql.Tx, r *Rollout, now time.Time) error {
	if r.Stage+1 >= len(r.Stages) {
		return s.completeTx(ctx, tx, r, now)
	}
	_, err := tx.ExecContext(ctx, `UPDATE rollouts SET stage = $1, percent = $2, stage_started_at = $3, updated_at = $3 WHERE id = $4`,
		r.Stage+1, r.Stages[r.Stage+1].Percent, now, r.ID)
	return err
}

func (s *Service) completeTx(ctx context.Context, tx *sql.Tx, r *Rollout, now time.Time) error {
	if err := s.fw.MakeCurrentTx(ctx, tx, r.ModelID, r.Version); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = 'completed', percent = 100, finished_at = $1, updated_at = $1 WHERE id = $2`, now, r.ID)
	return err
}

func (s *Service) setState(ctx context.Context, tx *sql.Tx, r *Rollout, state, reason string, now time.Time) error {
	var fin any
	if state == Completed || state == Aborted {
		fin = now
	}
	_, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = $1, reason = CASE WHEN $2 = '' THEN reason ELSE $2 END,
		finished_at = $3, updated_at = $4 WHERE id = $5`, state, reason, fin, now, r.ID)
	return err
}

// Advance moves an active or paused rollout to its next stage by hand (completing it
// after the last), whatever its health.
func (s *Service) Advance(ctx context.Context, modelID, id int64) (*Rollout, error) {
	return s.change(ctx, modelID, id, "advance rollout", func(tx *sql.Tx, r *Rollout, now time.Time) error {
		if r.State != Active && r.State != Paused {
			return refuse(r, "advance")
		}
		return s.advanceTx(ctx, tx, r, now)
	})
}

// Pause stops an active rollout's evaluation: its cohort keeps the version, no stage
// advances and no halt happens until it is resumed.
func (s *Service) Pause(ctx context.Context, modelID, id int64) (*Rollout, error) {
	return s.change(ctx, modelID, id, "pause rollout", func(tx *sql.Tx, r *Rollout, now time.Time) error {
		if r.State != Active {
			return refuse(r, "pause")
		}
		return s.setState(ctx, tx, r, Paused, "", now)
	})
}

// Resume makes a paused or halted rollout active again; its current stage starts over
// (health is judged from now on).
func (s *Service) Resume(ctx context.Context, modelID, id int64) (*Rollout, error) {
	return s.change(ctx, modelID, id, "resume rollout", func(tx *sql.Tx, r *Rollout, now time.Time) error {
		if r.State != Paused && r.State != Halted {
			return refuse(r, "resume")
		}
		_, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = 'active', stage_started_at = $1, updated_at = $1 WHERE id = $2`, now, r.ID)
		return err
	})
}

// Abort ends an unfinished rollout: every device returns to the model's current version.
func (s *Service) Abort(ctx context.Context, modelID, id int64) (*Rollout, error) {
	return s.change(ctx, modelID, id, "abort rollout", func(tx *sql.Tx, r *Rollout, now time.Time) error {
		if !r.unfinished() {
			return refuse(r, "abort")
		}
		return s.setState(ctx, tx, r, Aborted, "", now)
	})
}

// Complete makes the rollout's version current for every device (but pinned ones) now.
func (s *Service) Complete(ctx context.Context, modelID, id int64) (*Rollout, error) {
	return s.change(ctx, modelID, id, "complete rollout", func(tx *sql.Tx, r *Rollout, now time.Time) error {
		if !r.unfinished() {
			return refuse(r, "complete")
		}
		return s.completeTx(ctx, tx, r, now)
	})
}

// Pin is a device held on one version.
type Pin struct {
	DeviceID int64      `json:"device_id"`
	Version  *string    `json:"version"`
	PinnedAt *time.Time `json:"pinned_at"`
}

// SetPin holds a device on a stored version of its model whatever the model or a
// rollout says (nil removes the pin).
func (s *Service) SetPin(ctx context.Context, deviceID int64, version *string) (*Pin, error) {
	if version != nil {
		if !naming.ValidVersion(*version) {
			return nil, apperr.Validationf("version must be 1 to 32 of A-Z a-z 0-9 . _ + - (got %q)", *version)
		}
	}
	d, err := s.models.GetDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	out := &Pin{DeviceID: d.ID, Version: version}
	var changed map[string][]string
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := firmware.LockModel(ctx, s.db, tx, d.DeviceModelID); err != nil {
			return err
		}
		before, err := s.answers(ctx, tx, d.DeviceModelID)
		if err != nil {
			return err
		}
		if version == nil {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_firmware_pins WHERE device_id = $1`, d.ID); err != nil {
				return err
			}
		} else {
			ok, err := s.fw.HasVersionTx(ctx, tx, d.DeviceModelID, *version)
			if err != nil {
				return err
			}
			if !ok {
				return apperr.NotFoundf("FirmwareVersion %s %s was not found", d.ModelCode, *version)
			}
			now := s.now()
			out.PinnedAt = &now
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_firmware_pins (device_id, model_id, version, pinned_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (device_id) DO UPDATE SET version = excluded.version, pinned_at = excluded.pinned_at`, d.ID, d.DeviceModelID, *version, now); err != nil {
				return err
			}
		}
		changed, err = s.changedSince(ctx, tx, d.DeviceModelID, before)
		return err
	})
	if err != nil {
		return nil, db.Err("pin firmware", err)
	}
	s.fw.AnswersChanged(ctx, changed)
	return out, nil
}

// GetPin returns a device's pin (Version nil when it has none).
func (s *Service) GetPin(ctx context.Context, deviceID int64) (*Pin, error) {
	d, err := s.models.GetDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	out := &Pin{DeviceID: d.ID}
	var v string
	var at time.Time
	err = s.db.QueryRowContext(ctx, `SELECT version, pinned_at FROM device_firmware_pins WHERE device_id = $1`, d.ID).Scan(&v, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return nil, db.Err("get pin", err)
	}
	at = at.UTC()
	out.Version, out.PinnedAt = &v, &at
	return out, nil
}
