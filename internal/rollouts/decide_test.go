package rollouts

import (
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/crashgroups"
)

func f(v float64) *float64 { return &v }

// TestDecide: the rules of one evaluation, each on its boundary.
func TestDecide(t *testing.T) {
	prev := "1.4.2"
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := &Rollout{Version: "1.4.3", PreviousVersion: &prev, Stages: []Stage{{5, 720}, {100, 60}}, MaxCrashFreeDrop: 2, MinDevices: 20,
		MaxNewGroupDevs: 3, StageStartedAt: t0}
	last := *r
	last.Stage = 1
	for _, c := range []struct {
		name   string
		r      *Rollout
		h      Health
		at     time.Duration
		action string
		reason string
	}{
		{"the issue's example halts", r, Health{Confirmed: 34, Seen: 34, CrashFree: f(91.2), PreviousCrashFree: f(99.1)}, time.Hour,
			"halt", "crash-free 91.2 % vs 99.1 % on 1.4.2 (drop 7.9 > 2.0), 34 devices"},
		{"a drop of exactly the limit does not halt", r, Health{Confirmed: 20, CrashFree: f(97), PreviousCrashFree: f(99)}, time.Hour, "", ""},
		{"too few confirmed devices decide nothing", r, Health{Confirmed: 19, CrashFree: f(50), PreviousCrashFree: f(99)}, 24 * time.Hour, "", ""},
		{"a new group on 4 devices halts even with few devices", r, Health{Confirmed: 2, NewGroups: []crashgroups.NewGroup{{ID: 9, Title: "t", Devices: 4}}},
			time.Hour, "halt", `new crash group 9 "t" first seen on 1.4.3, 4 devices (> 3)`},
		{"a new group on 3 devices does not", r, Health{Confirmed: 2, NewGroups: []crashgroups.NewGroup{{ID: 9, Devices: 3}}}, time.Hour, "", ""},
		{"healthy before min_minutes waits", r, Health{Confirmed: 30, CrashFree: f(99), PreviousCrashFree: f(99)}, 719 * time.Minute, "", ""},
		{"healthy after min_minutes advances", r, Health{Confirmed: 30, CrashFree: f(99), PreviousCrashFree: f(99)}, 720 * time.Minute, "advance", ""},
		{"no previous figures: healthy", r, Health{Confirmed: 30, CrashFree: f(80)}, 720 * time.Minute, "advance", ""},
		{"the last stage completes", &last, Health{Confirmed: 30, CrashFree: f(99), PreviousCrashFree: f(99)}, time.Hour, "complete", ""},
	} {
		d := Decide(c.r, &c.h, t0.Add(c.at))
		if d.Action != c.action || (c.reason != "" && d.Reason != c.reason) {
			t.Errorf("%s: %q %q", c.name, d.Action, d.Reason)
		}
	}
}

// FuzzParseStages: any text either parses into stages or is refused, never a panic; what
// parses round-trips through the validation without a panic either.
func FuzzParseStages(f *testing.F) {
	for _, s := range []string{"5:720,25:720,100", "100", "", ":", "5:-1,100", "1,2,3,100:99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseStages(s)
		if err != nil {
			return
		}
		in := Input{Version: "1.0.0", Stages: st}
		if err := validate(&in); err == nil && (len(st) == 0 || st[len(st)-1].Percent != 100) {
			t.Fatalf("%q validated: %+v", s, st)
		}
	})
}
