package rollouts

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/cohort"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
)

// Health is a rollout's current stage as the fleet view and crash groups see it.
type Health struct {
	// Targeted is the cohort of the stage (pinned devices are not in it).
	Targeted int `json:"targeted"`
	// Confirmed is the cohort devices whose latest report names the rollout's version.
	Confirmed int `json:"confirmed"`
	// Seen and CrashFree are the rollout version's devices seen since the stage
	// started and their crash-free share; Previous… the same for the previous version.
	Seen              int                    `json:"devices_seen"`
	CrashFree         *float64               `json:"crash_free_percent"`
	PreviousSeen      int                    `json:"previous_devices_seen"`
	PreviousCrashFree *float64               `json:"previous_crash_free_percent"`
	NewGroups         []crashgroups.NewGroup `json:"new_groups"`
}

// StageFigures is one stage with its cohort: how many devices it targets and how many
// of them report running the version.
type StageFigures struct {
	Stage
	State     string `json:"state"` // done, current, pending
	Targeted  int    `json:"targeted"`
	Confirmed int    `json:"confirmed"`
}

// Status is a rollout with its live figures.
type Status struct {
	*Rollout
	Health *Health        `json:"health"`
	Figure []StageFigures `json:"stage_figures"`
}

// health measures r's current stage.
func (s *Service) health(ctx context.Context, r *Rollout) (*Health, []StageFigures, error) {
	devs, err := fleetOf(ctx, s.db, r.ModelID)
	if err != nil {
		return nil, nil, err
	}
	figs := make([]StageFigures, len(r.Stages))
	for i, st := range r.Stages {
		figs[i] = StageFigures{Stage: st, State: "pending"}
		switch {
		case r.State == Completed || i < r.Stage:
			figs[i].State = "done"
		case i == r.Stage:
			figs[i].State = "current"
		}
	}
	h := &Health{NewGroups: []crashgroups.NewGroup{}}
	for _, d := range devs {
		if d.pin.Valid {
			continue
		}
		pos := cohort.Position(d.key, r.ID)
		running := d.running.Valid && d.running.String == r.Version
		for i, st := range r.Stages {
			if pos < float64(st.Percent) {
				figs[i].Targeted++
				if running {
					figs[i].Confirmed++
				}
			}
		}
		if pos < float64(r.Percent) {
			h.Targeted++
			if running {
				h.Confirmed++
			}
		}
	}
	view, err := s.fleet.ViewSince(ctx, r.ModelID, r.StageStartedAt, "stage "+strconv.Itoa(r.Stage+1))
	if err != nil {
		return nil, nil, err
	}
	for _, v := range view.Versions {
		switch {
		case v.Version == r.Version:
			h.Seen, h.CrashFree = v.DevicesSeen, v.CrashFreePercent
		case r.PreviousVersion != nil && v.Version == *r.PreviousVersion:
			h.PreviousSeen, h.PreviousCrashFree = v.DevicesSeen, v.CrashFreePercent
		}
	}
	if h.NewGroups, err = s.groups.NewGroupsOn(ctx, r.ModelID, r.Version, r.StartedAt); err != nil {
		return nil, nil, err
	}
	return h, figs, nil
}

// Status returns one rollout with its live figures.
func (s *Service) Status(ctx context.Context, modelID, id int64) (*Status, error) {
	r, err := s.Get(ctx, modelID, id)
	if err != nil {
		return nil, err
	}
	h, figs, err := s.health(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("rollout %d figures: %w", id, err)
	}
	return &Status{Rollout: r, Health: h, Figure: figs}, nil
}

// Decision is what an evaluation concluded.
type Decision struct {
	Action string // "", "advance", "complete", "halt"
	Reason string
}

// Decide judges a stage: a new crash group on more than max_new_group_devices devices
// halts; with fewer than min_devices cohort devices confirmed nothing else is decided;
// a crash-free drop beyond max_crash_free_drop against the previous version halts;
// otherwise the stage advances (or the last completes) once min_minutes have passed.
func Decide(r *Rollout, h *Health, now time.Time) Decision {
	for _, g := range h.NewGroups {
		if g.Devices > r.MaxNewGroupDevs {
			return Decision{"halt", fmt.Sprintf("new crash group %d %q first seen on %s, %d devices (> %d)",
				g.ID, g.Title, r.Version, g.Devices, r.MaxNewGroupDevs)}
		}
	}
	if h.Confirmed < r.MinDevices {
		return Decision{}
	}
	if h.CrashFree != nil && h.PreviousCrashFree != nil && r.PreviousVersion != nil {
		if drop := *h.PreviousCrashFree - *h.CrashFree; drop > r.MaxCrashFreeDrop {
			return Decision{"halt", fmt.Sprintf("crash-free %.1f %% vs %.1f %% on %s (drop %.1f > %.1f), %d devices",
				*h.CrashFree, *h.PreviousCrashFree, *r.PreviousVersion, drop, r.MaxCrashFreeDrop, h.Seen)}
		}
	}
	if now.Sub(r.StageStartedAt) < time.Duration(r.Stages[r.Stage].MinMinutes)*time.Minute {
		return Decision{}
	}
	if r.Stage+1 >= len(r.Stages) {
		return Decision{"complete", fmt.Sprintf("stage %d of %d healthy for %d min, %d devices", r.Stage+1, len(r.Stages),
			r.Stages[r.Stage].MinMinutes, h.Confirmed)}
	}
	return Decision{"advance", fmt.Sprintf("stage %d of %d healthy for %d min, %d devices", r.Stage+1, len(r.Stages),
		r.Stages[r.Stage].MinMinutes, h.Confirmed)}
}

// Evaluate runs one evaluation of every active rollout this replica can claim and
// returns how many it evaluated.
func (s *Service) Evaluate(ctx context.Context) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, model_id FROM rollouts WHERE state = 'active' ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("list active rollouts: %w", err)
	}
	type ref struct{ id, model int64 }
	var refs []ref
	for rows.Next() {
		var r ref
		if err := rows.Scan(&r.id, &r.model); err != nil {
			rows.Close()
			return 0, err
		}
		refs = append(refs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range refs {
		ok, err := s.EvaluateOne(ctx, r.model, r.id)
		if err != nil {
			s.log.Warn("rollout evaluation failed", "rollout", r.id, "error", err)
			continue
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// EvaluateOne evaluates one active rollout unless another evaluation claimed it within
// the last half interval (false). The claim is one conditional UPDATE of evaluated_at,
// so of the replicas running the loop exactly one evaluates a rollout at a time; the
// decision is applied under the model's lock only if no change (a manual advance, a
// pause) happened since it was measured.
func (s *Service) EvaluateOne(ctx context.Context, modelID, id int64) (bool, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE rollouts SET evaluated_at = $1 WHERE id = $2 AND state = 'active'
		AND (evaluated_at IS NULL OR evaluated_at <= $3)`, now, id, now.Add(-s.opts.EvalInterval/2))
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	r, err := s.get(ctx, s.db, modelID, id)
	if err != nil {
		return false, err
	}
	h, _, err := s.health(ctx, r)
	if err != nil {
		return false, err
	}
	d := Decide(r, h, now)
	if d.Action == "" {
		return true, nil
	}
	after, err := s.change(ctx, modelID, id, "apply rollout evaluation", func(tx *sql.Tx, cur *Rollout, now time.Time) error {
		if cur.State != Active || cur.Stage != r.Stage || !cur.StageStartedAt.Equal(r.StageStartedAt) {
			d.Action = "" // changed meanwhile: the next evaluation judges it again
			return nil
		}
		switch d.Action {
		case "halt":
			return s.setState(ctx, tx, cur, Halted, d.Reason, now)
		case "advance", "complete":
			return s.advanceTx(ctx, tx, cur, now)
		}
		return nil
	})
	if err != nil || d.Action == "" {
		return true, err
	}
	s.log.Info("rollout "+d.Action, "rollout", id, "model", modelID, "version", r.Version, "reason", d.Reason, "state", after.State, "percent", after.Percent)
	path := fmt.Sprintf("/api/device-models/%d/rollouts/%d/%s", modelID, id, d.Action)
	if err := s.audit.Record(ctx, auth.AuditEntry{At: now, ActorKind: "system", Actor: "rollout-evaluator", Method: "POST",
		Path: path, Route: "/api/device-models/{model_id}/rollouts/{rollout_id}/" + d.Action, Status: 200}); err != nil {
		s.log.Warn("audit rollout decision", "rollout", id, "error", err)
	}
	return true, nil
}

// Run evaluates active rollouts every EvalInterval until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.EvalInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Evaluate(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("rollout evaluation failed", "error", err)
			}
		}
	}
}
