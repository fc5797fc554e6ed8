package rollouts_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/rollouts"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

const tick = 10 * time.Minute

func stages() []rollouts.Stage {
	return []rollouts.Stage{{Percent: 5, MinMinutes: 60}, {Percent: 25, MinMinutes: 60}, {Percent: 100, MinMinutes: 60}}
}

// fleetOf500 is a model of 500 devices running 1.0.0 with 1.1.0 stored, not current.
func fleetOf500(t *testing.T, env *testenv.Env, code string) *sim {
	s := newSim(t, env, code, 500)
	s.upload("1.0.0", true)
	s.upload("1.1.0", false)
	if a := s.answer(0); a != "1.0.0" {
		t.Fatalf("make_current=false changed the answer to %s", a)
	}
	s.tick(tick) // every device runs 1.0.0 and has checked in
	return s
}

// TestRolloutSimulation drives 500 devices checking in every 10 simulated minutes and
// crashing at configured rates per version, on both storage configurations.
func TestRolloutSimulation(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()

		t.Run("healthy version advances through every stage to 100 percent", func(t *testing.T) {
			s := fleetOf500(t, env, "healthy")
			s.crash = map[string]float64{"1.0.0": 0.0005, "1.1.0": 0}
			r := s.start(rollouts.Input{Version: "1.1.0", Stages: stages(), MinDevices: ptr(10)})
			in := map[int]bool{}
			percents := []int{r.Percent}
			for step := 0; step < 60 && s.get(r.ID).State == rollouts.Active; step++ {
				s.tick(tick)
				// Cohort stability: a device given 1.1.0 keeps it as the percentage grows.
				for i, a := range s.answers() {
					if in[i] && a != "1.1.0" {
						t.Fatalf("device %d left the cohort at %d %%", i, s.get(r.ID).Percent)
					}
					in[i] = in[i] || a == "1.1.0"
				}
				if p := s.get(r.ID).Percent; p != percents[len(percents)-1] {
					percents = append(percents, p)
				}
			}
			got := s.get(r.ID)
			if got.State != rollouts.Completed || !equal(percents, []int{5, 25, 100}) {
				t.Fatalf("state %s at %d %% (went through %v), reason %q", got.State, got.Percent, percents, got.Reason)
			}
			m, err := s.devs.GetModel(ctx, s.model.ID)
			if err != nil || m.FirmwareVersion == nil || *m.FirmwareVersion != "1.1.0" {
				t.Fatalf("the completed version is not current: %v %v", m, err)
			}
			if len(in) != 500 {
				t.Fatalf("%d devices got 1.1.0, want 500", len(in))
			}
		})

		t.Run("a crash-free drop of 5 points halts in the first stage and the cohort reverts", func(t *testing.T) {
			s := fleetOf500(t, env, "crashy")
			// 1 % per 10 minutes: a crash-free share 5 points lower within the first 50 minutes.
			// (Device keys are random, so the cohort differs per run: the rates leave no doubt.)
			s.crash = map[string]float64{"1.0.0": 0.0005, "1.1.0": 0.01}
			st := stages()
			st[0].MinMinutes = 240
			r := s.start(rollouts.Input{Version: "1.1.0", Stages: st, MinDevices: ptr(10), OnHalt: rollouts.OnHaltRevert})
			cohort := cohortOf(s, "1.1.0")
			if len(cohort) < 10 || len(cohort) > 45 {
				t.Fatalf("5 %% of 500 devices is %d", len(cohort))
			}
			s.notes.take()
			for step := 0; step < 60 && s.get(r.ID).State == rollouts.Active; step++ {
				s.tick(tick)
			}
			got := s.get(r.ID)
			if got.State != rollouts.Halted || got.Stage != 0 {
				t.Fatalf("state %s, stage %d, reason %q", got.State, got.Stage, got.Reason)
			}
			if !regexp.MustCompile(`^crash-free \d+\.\d % vs \d+\.\d % on 1\.0\.0 \(drop \d+\.\d > 2\.0\), \d+ devices$`).MatchString(got.Reason) {
				t.Fatalf("halt reason %q", got.Reason)
			}
			// The evaluator's decision is audited.
			var audited int
			if err := env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log WHERE actor_kind = 'system' AND actor = 'rollout-evaluator' AND path = $1`,
				fmt.Sprintf("/api/device-models/%d/rollouts/%d/halt", s.model.ID, r.ID)).Scan(&audited); err != nil || audited != 1 {
				t.Fatalf("halt audited %d times: %v", audited, err)
			}
			// The halt's event is queued for MQTT and the webhook, reason included.
			events := strings.Join(s.jobs.take(), "\n")
			for _, kind := range []string{"crash_group_mqtt", "crash_group_webhook"} {
				if !strings.Contains(events, kind+` {"event":{`) || !regexp.MustCompile(kind+` .*"payload":\{"event":"halted","rollout_id":`+fmt.Sprint(r.ID)+`,"model":"crashy","version":"1.1.0","state":"halted","stage":0,"percent":5,"reason":"crash-free`).MatchString(events) {
					t.Fatalf("no %s job for the halt in %s", kind, events)
				}
			}
			for i := range cohort {
				if a := s.answer(i); a != "1.0.0" {
					t.Fatalf("cohort device %d answers %s after the halt", i, a)
				}
			}
			reverted := 0
			for _, n := range s.notes.take() {
				if n.version == "1.0.0" {
					reverted += len(n.ids)
				}
			}
			if reverted != len(cohort) {
				t.Fatalf("%d devices notified of 1.0.0, want the cohort's %d", reverted, len(cohort))
			}
			// A halted rollout blocks another until it is aborted.
			if _, err := s.ro.Start(ctx, s.model.ID, rollouts.Input{Version: "1.1.0", Stages: stages()}, "test"); apperr.KindOf(err) != apperr.InvalidOperation {
				t.Fatalf("second rollout while halted: %v", err)
			}
		})

		t.Run("a new crash group on 4 devices halts", func(t *testing.T) {
			s := fleetOf500(t, env, "newgroup")
			r := s.start(rollouts.Input{Version: "1.1.0", Stages: stages(), MinDevices: ptr(15), MaxNewGroupDevices: ptr(3), OnHalt: rollouts.OnHaltHold})
			s.tick(tick)
			testenv.MustExec(t, env.DB, `INSERT INTO crash_groups (model_id, fingerprint, grouping_version, title, fault, first_seen_at, last_seen_at,
				dump_count, device_count, first_version, last_version, created_at, updated_at)
				VALUES ($1, $2, 1, 'LoadProhibited in app_main', 'LoadProhibited', $3, $3, 3, 3, '1.1.0', '1.1.0', $3, $3)`,
				s.model.ID, strings.Repeat("a", 64), s.c.Now())
			s.tick(tick)
			if got := s.get(r.ID); got.State != rollouts.Active {
				t.Fatalf("3 devices (not more than 3) halted it: %q", got.Reason)
			}
			testenv.MustExec(t, env.DB, `UPDATE crash_groups SET device_count = 4 WHERE model_id = $1`, s.model.ID)
			s.tick(tick)
			got := s.get(r.ID)
			if got.State != rollouts.Halted || !regexp.MustCompile(`^new crash group \d+ "LoadProhibited in app_main" first seen on 1\.1\.0, 4 devices \(> 3\)$`).MatchString(got.Reason) {
				t.Fatalf("state %s, reason %q", got.State, got.Reason)
			}
			// on_halt=hold: the cohort keeps the version.
			if c := cohortOf(s, "1.1.0"); len(c) == 0 {
				t.Fatal("on_halt=hold: no device kept 1.1.0")
			}
		})

		t.Run("too few reporting devices never advance nor halt", func(t *testing.T) {
			s := fleetOf500(t, env, "few")
			s.crash = map[string]float64{"1.0.0": 0, "1.1.0": 0.05}
			r := s.start(rollouts.Input{Version: "1.1.0", Stages: stages(), MinDevices: ptr(100)})
			for range 30 {
				s.tick(tick)
			}
			if got := s.get(r.ID); got.State != rollouts.Active || got.Stage != 0 {
				t.Fatalf("state %s, stage %d, reason %q", got.State, got.Stage, got.Reason)
			}
			st, err := s.ro.Status(ctx, s.model.ID, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if h := st.Health; h.Confirmed != h.Targeted || h.Confirmed >= 100 || h.CrashFree == nil || *h.CrashFree > 80 {
				t.Fatalf("figures: %+v", h)
			}
		})

		t.Run("manual advance, pause, resume, abort and pins", func(t *testing.T) {
			s := fleetOf500(t, env, "manual")
			pinNew, pinOld := -1, -1
			r := s.start(rollouts.Input{Version: "1.1.0", Stages: stages(), MinDevices: ptr(1000)})
			for i, a := range s.answers() {
				if a == "1.1.0" && pinOld < 0 {
					pinOld = i
				}
				if a == "1.0.0" && pinNew < 0 {
					pinNew = i
				}
			}
			for i, v := range map[int]string{pinNew: "1.1.0", pinOld: "1.0.0"} {
				if _, err := s.ro.SetPin(ctx, s.devices[i].id, &v); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.ro.SetPin(ctx, s.devices[0].id, ptr("9.9.9")); apperr.KindOf(err) != apperr.NotFound {
				t.Fatalf("pin to an unknown version: %v", err)
			}
			if _, err := s.ro.Pause(ctx, s.model.ID, r.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ro.Pause(ctx, s.model.ID, r.ID); apperr.KindOf(err) != apperr.InvalidOperation {
				t.Fatalf("pause twice: %v", err)
			}
			before := len(cohortOf(s, "1.1.0"))
			got, err := s.ro.Advance(ctx, s.model.ID, r.ID)
			if err != nil || got.Stage != 1 || got.Percent != 25 {
				t.Fatalf("advance: %+v %v", got, err)
			}
			if after := len(cohortOf(s, "1.1.0")); after <= before {
				t.Fatalf("advance to 25 %%: %d devices on 1.1.0, before %d", after, before)
			}
			if _, err := s.ro.Resume(ctx, s.model.ID, r.ID); err != nil {
				t.Fatal(err)
			}
			if s.answer(pinNew) != "1.1.0" || s.answer(pinOld) != "1.0.0" {
				t.Fatal("pins are not respected during the rollout")
			}
			// Retention (MAX_FIRMWARES=2) keeps what the rollout and pins use.
			s.upload("1.2.0", false)
			if _, err := s.fw.GetVersion(ctx, firmwareRef(s), "1.1.0"); err != nil {
				t.Fatalf("retention pruned the rollout's version: %v", err)
			}
			// Making the current version current again tells only the devices it answers
			// (no pinned one, none of the cohort).
			s.notes.take()
			if _, err := s.fw.SetCurrent(ctx, firmwareRef(s), "1.0.0"); err != nil {
				t.Fatal(err)
			}
			told := map[string]bool{}
			for _, n := range s.notes.take() {
				for _, id := range n.ids {
					told[id] = n.version == "1.0.0"
				}
			}
			for i, a := range s.answers() {
				if id := "iotdevice-manual-" + s.devices[i].key; told[id] != (a == "1.0.0" && i != pinOld) {
					t.Fatalf("device %d answering %s: notified of 1.0.0 %v", i, a, told[id])
				}
			}
			if _, err := s.ro.Abort(ctx, s.model.ID, r.ID); err != nil {
				t.Fatal(err)
			}
			for i, a := range s.answers() {
				want := "1.0.0"
				if i == pinNew {
					want = "1.1.0"
				}
				if a != want {
					t.Fatalf("after abort device %d answers %s, want %s", i, a, want)
				}
			}
			if _, err := s.ro.Advance(ctx, s.model.ID, r.ID); apperr.KindOf(err) != apperr.InvalidOperation {
				t.Fatalf("advance an aborted rollout: %v", err)
			}
			if err := s.fw.DeleteVersion(ctx, firmwareRef(s), "1.1.0"); apperr.KindOf(err) != apperr.InvalidOperation {
				t.Fatalf("delete a pinned version: %v", err)
			}
			if _, err := s.ro.SetPin(ctx, s.devices[pinNew].id, nil); err != nil {
				t.Fatal(err)
			}
			if a := s.answer(pinNew); a != "1.0.0" {
				t.Fatalf("unpinned device answers %s", a)
			}
		})
	})
}

func cohortOf(s *sim, version string) map[int]bool {
	out := map[int]bool{}
	for i, a := range s.answers() {
		if a == version {
			out[i] = true
		}
	}
	return out
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestOneEvaluationAtATime: two replicas evaluating the same rollout at once: exactly one
// evaluates it, neither again within half the interval, one again after it.
func TestOneEvaluationAtATime(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		s := newSim(t, env, "replicas", 10)
		s.upload("1.0.0", true)
		s.upload("1.1.0", false)
		r := s.start(rollouts.Input{Version: "1.1.0", Stages: stages()})
		other := rollouts.NewService(env.DB, s.fw, s.fleet, s.groups, s.devs, auth.NewAudit(env.DB), s.groups,
			rollouts.Options{EvalInterval: time.Minute, Now: s.c.Now}, slog.New(slog.DiscardHandler))
		for round := range 3 {
			results := make(chan bool, 2)
			for _, svc := range []*rollouts.Service{s.ro, other} {
				go func() {
					ok, err := svc.EvaluateOne(ctx, s.model.ID, r.ID)
					if err != nil {
						t.Error(err)
					}
					results <- ok
				}()
			}
			n := 0
			for range 2 {
				if <-results {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("round %d: %d evaluations at once", round, n)
			}
			for _, svc := range []*rollouts.Service{s.ro, other} {
				if ok, _ := svc.EvaluateOne(ctx, s.model.ID, r.ID); ok {
					t.Fatalf("round %d: evaluated again within half the interval", round)
				}
			}
			s.c.Add(time.Minute)
		}
	})
}
