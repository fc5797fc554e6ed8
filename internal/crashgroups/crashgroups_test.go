package crashgroups_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// The same crash from 5 devices is one group with 5 dumps and 5 devices; the same crash
// from another build of the source (every address moved, other version) joins it; the
// same dumps on another model are that model's own group; a new group queues one event.
func TestOneGroupPerCrash(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		var ids []int64
		for range 5 {
			d := h.device(t, h.model)
			id := h.upload(t, d, "esp32c3", "1.0.0")
			h.decode(t, id)
			ids = append(ids, id)
		}
		g := h.only(t, h.model.ID)
		if g.DumpCount != 5 || g.DeviceCount != 5 || g.Status != crashgroups.StatusOpen || g.FirstVersion != "1.0.0" || g.LastVersion != "1.0.0" {
			t.Fatalf("group %+v", g)
		}
		if g.Title != "abort() in fail_once ← app_main" || g.Culprit != "fail_once (test_core_dump.c:14)" || g.Fault != "abort()" {
			t.Fatalf("title %q culprit %q fault %q", g.Title, g.Culprit, g.Fault)
		}
		if ev := h.jobs.events("crash_group_mqtt"); len(ev) != 1 || ev[0]["event"] != "new" || ev[0]["model"] != "lamp" ||
			ev[0]["title"] != g.Title || ev[0]["version"] != "1.0.0" || int64(ev[0]["group_id"].(float64)) != g.ID {
			t.Fatalf("events %v", ev)
		}
		if n := len(h.jobs.events("crash_group_webhook")); n != 1 {
			t.Fatalf("%d webhook jobs", n)
		}
		for _, id := range ids {
			dev, err := h.dumps.DecodeTarget(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			c, err := h.dumps.Get(ctx, dev.DeviceID, id)
			if err != nil || c.CrashGroupID == nil || *c.CrashGroupID != g.ID {
				t.Fatalf("dump %d crash_group_id %v %v", id, c.CrashGroupID, err)
			}
		}

		// Another build of the same source, uploaded as 1.1.0: every address differs.
		h.firmware(t, h.model, "esp32c3_bin", "1.1.0")
		d := h.device(t, h.model)
		h.decode(t, h.upload(t, d, "esp32c3_bin", "1.1.0"))
		g = h.only(t, h.model.ID)
		if g.DumpCount != 6 || g.DeviceCount != 6 || g.FirstVersion != "1.0.0" || g.LastVersion != "1.1.0" {
			t.Fatalf("after the rebuild: %+v", g)
		}
		det := h.detail(t, g.ID)
		if len(det.Versions) != 2 || det.Versions[0] != (crashgroups.VersionCount{Version: "1.0.0", Dumps: 5, Devices: 5}) ||
			det.Versions[1] != (crashgroups.VersionCount{Version: "1.1.0", Dumps: 1, Devices: 1}) {
			t.Fatalf("versions %+v", det.Versions)
		}
		if len(det.Daily) != 1 || det.Daily[0].Dumps != 6 || det.Daily[0].Devices != 6 || len(det.SampleCoredumpIDs) != 6 ||
			det.SampleCoredumpIDs[0] <= det.SampleCoredumpIDs[5] {
			t.Fatalf("daily %+v samples %v", det.Daily, det.SampleCoredumpIDs)
		}

		// Grouping is per model.
		other := h.newModel(t, "fan")
		h.firmware(t, other, "esp32c3", "1.0.0")
		h.decode(t, h.upload(t, h.device(t, other), "esp32c3", "1.0.0"))
		if o := h.only(t, other.ID); o.ID == g.ID || o.Fingerprint != g.Fingerprint || o.DumpCount != 1 {
			t.Fatalf("other model's group %+v", o)
		}
		if len(h.jobs.events("crash_group_mqtt")) != 2 {
			t.Fatalf("events %v", h.jobs.events("crash_group_mqtt"))
		}
	})
}

// A dump without its firmware ends in ERROR and is grouped nowhere.
func TestErrorNotGrouped(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		d := h.device(t, h.model)
		id := h.upload(t, d, "esp32c3", "1.0.0")
		h.decode(t, id)
		c, err := h.dumps.Get(ctx, d.ID, id)
		if err != nil || c.ParseStatus != "ERROR" || c.CrashGroupID != nil {
			t.Fatalf("%s %v %v", c.ParseStatus, c.CrashGroupID, err)
		}
		p, _ := h.groups.List(ctx, crashgroups.Filter{})
		if p.Count != 0 {
			t.Fatalf("%d groups", p.Count)
		}
	})
}

// otherCrash is a real decoded report with another caller: another crash.
func otherCrash(t *testing.T, h *harness, d int64, id int64) []byte {
	t.Helper()
	var rep []byte
	if err := h.env.DB.QueryRowContext(context.Background(), `SELECT report FROM coredumps WHERE id = $1`, id).Scan(&rep); err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(rep), `"app_main"`, `"other_main"`))
}

func assign(t *testing.T, h *harness, d crashgroups.Dump, report []byte) crashgroups.Assignment {
	t.Helper()
	var a crashgroups.Assignment
	var rep *espcore.Report
	if report != nil {
		if err := json.Unmarshal(report, &rep); err != nil {
			t.Fatal(err)
		}
	}
	err := h.env.DB.Tx(context.Background(), func(tx *sql.Tx) error {
		var err error
		a, err = h.groups.AssignTx(context.Background(), tx, d, rep)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Decoding a dump again counts it once; a re-decode into another crash moves it, and one
// into no report takes it out (with its device when it was the device's only dump).
func TestReassign(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		d1, d2 := h.device(t, h.model), h.device(t, h.model)
		a := h.upload(t, d1, "esp32c3", "1.0.0")
		b := h.upload(t, d2, "esp32c3", "1.0.0")
		h.decode(t, a)
		h.decode(t, b)
		if err := h.dumps.Reparse(ctx, d1.ID, a); err != nil {
			t.Fatal(err)
		}
		h.decode(t, a)
		g := h.only(t, h.model.ID)
		if g.DumpCount != 2 || g.DeviceCount != 2 {
			t.Fatalf("after reparse: %+v", g)
		}

		target, _ := h.dumps.DecodeTarget(ctx, a)
		dump := crashgroups.Dump{ID: a, DeviceID: d1.ID, ModelID: h.model.ID, ModelCode: "lamp", Version: "1.0.0", UploadedAt: target.UploadedAt}
		moved := assign(t, h, dump, otherCrash(t, h, d1.ID, a))
		if !moved.New || moved.GroupID == g.ID {
			t.Fatalf("moved %+v", moved)
		}
		old, now := h.detail(t, g.ID), h.detail(t, moved.GroupID)
		if old.DumpCount != 1 || old.DeviceCount != 1 || old.Versions[0].Devices != 1 || now.DumpCount != 1 || now.DeviceCount != 1 ||
			now.Title != "abort() in fail_once ← other_main" {
			t.Fatalf("after the move: %+v %+v", old.Group, now.Group)
		}
		assign(t, h, dump, nil)
		det := h.detail(t, moved.GroupID)
		if det.DumpCount != 0 || det.DeviceCount != 0 || len(det.Versions) != 0 || len(det.SampleCoredumpIDs) != 0 {
			t.Fatalf("emptied group %+v", det)
		}
	})
}

// Resolved in 1.0.0: a dump of 1.0.0 keeps it resolved, one of 1.1.0 (uploaded after)
// reopens it with regressed_at and a regressed event. Ignored groups stay ignored and count.
func TestRegression(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		d := h.device(t, h.model)
		h.decode(t, h.upload(t, d, "esp32c3", "1.0.0"))
		g := h.only(t, h.model.ID)
		v := "1.0.0"
		if _, err := h.groups.Update(ctx, g.ID, crashgroups.StatusResolved, &v); err != nil {
			t.Fatal(err)
		}
		h.decode(t, h.upload(t, d, "esp32c3", "1.0.0"))
		if g = h.only(t, h.model.ID); g.Status != crashgroups.StatusResolved || g.RegressedAt != nil || g.DumpCount != 2 {
			t.Fatalf("a dump of the resolved version: %+v", g)
		}
		h.firmware(t, h.model, "esp32c3_bin", "1.1.0")
		h.decode(t, h.upload(t, d, "esp32c3_bin", "1.1.0"))
		if g = h.only(t, h.model.ID); g.Status != crashgroups.StatusOpen || g.RegressedAt == nil || g.DumpCount != 3 || g.DeviceCount != 1 {
			t.Fatalf("a dump of a later version: %+v", g)
		}
		ev := h.jobs.events("crash_group_mqtt")
		if len(ev) != 2 || ev[1]["event"] != "regressed" || ev[1]["version"] != "1.1.0" {
			t.Fatalf("events %v", ev)
		}

		if _, err := h.groups.Update(ctx, g.ID, crashgroups.StatusIgnored, nil); err != nil {
			t.Fatal(err)
		}
		h.decode(t, h.upload(t, d, "esp32c3_bin", "1.1.0"))
		if g = h.only(t, h.model.ID); g.Status != crashgroups.StatusIgnored || g.DumpCount != 4 {
			t.Fatalf("ignored: %+v", g)
		}
		// Resolved without a version: any later dump reopens it.
		if _, err := h.groups.Update(ctx, g.ID, crashgroups.StatusResolved, nil); err != nil {
			t.Fatal(err)
		}
		h.decode(t, h.upload(t, d, "esp32c3", "1.0.0"))
		if g = h.only(t, h.model.ID); g.Status != crashgroups.StatusOpen {
			t.Fatalf("resolved without version: %+v", g)
		}
		for _, bad := range []struct {
			status string
			v      *string
		}{{"closed", nil}, {crashgroups.StatusOpen, &v}, {crashgroups.StatusResolved, ptr("../x")}} {
			if _, err := h.groups.Update(ctx, g.ID, bad.status, bad.v); apperr.KindOf(err) != apperr.Validation {
				t.Errorf("%s %v: %v", bad.status, bad.v, err)
			}
		}
		if _, err := h.groups.Update(ctx, g.ID+100, crashgroups.StatusOpen, nil); apperr.KindOf(err) != apperr.NotFound {
			t.Errorf("missing group: %v", err)
		}
	})
}

func ptr(s string) *string { return &s }

// Retention (MAX_COREDUMPS 2) prunes dumps, not counts.
func TestRetentionKeepsCounts(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 2)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		d := h.device(t, h.model)
		for range 5 {
			h.decode(t, h.upload(t, d, "esp32c3", "1.0.0"))
		}
		page, err := h.dumps.List(ctx, d.ID, 100, 0)
		if err != nil || page.Total != 2 {
			t.Fatalf("stored dumps %d %v", page.Total, err)
		}
		g := h.only(t, h.model.ID)
		det := h.detail(t, g.ID)
		if g.DumpCount != 5 || g.DeviceCount != 1 || det.Versions[0].Dumps != 5 || det.Daily[0].Dumps != 5 || len(det.SampleCoredumpIDs) != 2 {
			t.Fatalf("group %+v versions %+v daily %+v samples %v", g, det.Versions, det.Daily, det.SampleCoredumpIDs)
		}
		devs, err := h.groups.Devices(ctx, g.ID, 10, 0)
		if err != nil || devs.Count != 1 || devs.Devices[0].DumpCount != 5 || devs.Devices[0].DeviceKey != d.Key {
			t.Fatalf("devices %+v %v", devs, err)
		}
	})
}

// Merge: the source's dumps, devices and counts move into the target, the source is
// gone, and a later dump of the source's signature lands in the target.
func TestMerge(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		d1, d2 := h.device(t, h.model), h.device(t, h.model)
		a := h.upload(t, d1, "esp32c3", "1.0.0")
		h.decode(t, a)
		h.decode(t, h.upload(t, d2, "esp32c3", "1.0.0"))
		g := h.only(t, h.model.ID)
		// Two dumps of "another" crash: one from d1 (shared device), one from d2.
		target, _ := h.dumps.DecodeTarget(ctx, a)
		other := otherCrash(t, h, d1.ID, a)
		x := h.upload(t, d1, "esp32c3", "1.0.0")
		y := h.upload(t, d2, "esp32c3", "1.0.0")
		src := assign(t, h, crashgroups.Dump{ID: x, DeviceID: d1.ID, ModelID: h.model.ID, Version: "1.0.0", UploadedAt: target.UploadedAt}, other)
		assign(t, h, crashgroups.Dump{ID: y, DeviceID: d2.ID, ModelID: h.model.ID, Version: "1.0.0", UploadedAt: target.UploadedAt}, other)

		m, err := h.groups.Merge(ctx, src.GroupID, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != g.ID || m.DumpCount != 4 || m.DeviceCount != 2 {
			t.Fatalf("merged %+v", m)
		}
		if _, err := h.groups.Get(ctx, src.GroupID); apperr.KindOf(err) != apperr.NotFound {
			t.Fatalf("source after merge: %v", err)
		}
		det := h.detail(t, g.ID)
		if len(det.SampleCoredumpIDs) != 4 || det.Versions[0].Dumps != 4 || det.Versions[0].Devices != 2 {
			t.Fatalf("detail %+v", det)
		}
		z := h.upload(t, d1, "esp32c3", "1.0.0")
		if got := assign(t, h, crashgroups.Dump{ID: z, DeviceID: d1.ID, ModelID: h.model.ID, Version: "1.0.0", UploadedAt: target.UploadedAt}, other); got.GroupID != g.ID || got.New {
			t.Fatalf("later dump of the merged signature: %+v", got)
		}
		if g = h.only(t, h.model.ID); g.DumpCount != 5 || g.DeviceCount != 2 {
			t.Fatalf("after: %+v", g)
		}
		fan := h.newModel(t, "fan")
		h.firmware(t, fan, "esp32c3", "1.0.0")
		h.decode(t, h.upload(t, h.device(t, fan), "esp32c3", "1.0.0"))
		fg := h.only(t, fan.ID)
		for _, c := range [][2]int64{{g.ID, g.ID}, {fg.ID, g.ID}} {
			if _, err := h.groups.Merge(ctx, c[0], c[1]); apperr.KindOf(err) != apperr.Validation {
				t.Errorf("merge %v: %v", c, err)
			}
		}
		if _, err := h.groups.Merge(ctx, g.ID+1000, g.ID); apperr.KindOf(err) != apperr.NotFound {
			t.Errorf("merge of a missing group: %v", err)
		}
	})
}

// 32 decodes of one crash at once, from 24 devices (8 of them twice), the group created
// by whichever commits first: device_count and dump_count stay exact.
func TestConcurrentDecodesKeepCountsExact(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		var ids []int64
		for i := range 24 {
			d := h.device(t, h.model)
			ids = append(ids, h.upload(t, d, "esp32c3", "1.0.0"))
			if i < 8 {
				ids = append(ids, h.upload(t, d, "esp32c3", "1.0.0"))
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(ids))
		start := make(chan struct{})
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// A decode that lost a lock race is retried by its job; here, by the loop.
				var err error
				for range 5 {
					if err = h.dec.Decode(context.Background(), id); err == nil {
						return
					}
				}
				errs <- err
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		g := h.only(t, h.model.ID)
		if g.DumpCount != 32 || g.DeviceCount != 24 {
			t.Fatalf("group %+v", g)
		}
		devs, _ := h.groups.Devices(context.Background(), g.ID, 100, 0)
		if devs.Count != 24 {
			t.Fatalf("%d device rows", devs.Count)
		}
		if n := len(h.jobs.events("crash_group_mqtt")); n != 1 {
			t.Fatalf("%d new-group events", n)
		}
	})
}

// NewGroupsByVersion counts groups by the version they were first seen on, since a time.
func TestNewGroupsByVersion(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		d := h.device(t, h.model)
		a := h.upload(t, d, "esp32c3", "1.0.0")
		h.decode(t, a)
		target, _ := h.dumps.DecodeTarget(ctx, a)
		b := h.upload(t, d, "esp32c3", "1.1.0")
		assign(t, h, crashgroups.Dump{ID: b, DeviceID: d.ID, ModelID: h.model.ID, Version: "1.1.0", UploadedAt: target.UploadedAt}, otherCrash(t, h, d.ID, a))
		got, err := h.groups.NewGroupsByVersion(ctx, h.model.ID, target.UploadedAt.Add(-time.Minute))
		if err != nil || len(got) != 2 || got["1.0.0"] != 1 || got["1.1.0"] != 1 {
			t.Fatalf("%v %v", got, err)
		}
		if got, _ := h.groups.NewGroupsByVersion(ctx, h.model.ID, target.UploadedAt.Add(time.Minute)); len(got) != 0 {
			t.Fatalf("since later: %v", got)
		}
		if got, _ := h.groups.NewGroupsByVersion(ctx, h.model.ID+1, time.Time{}); len(got) != 0 {
			t.Fatalf("other model: %v", got)
		}
		// NewGroupsOn: the groups of one version, with their device counts (a rollout's halt rule).
		on, err := h.groups.NewGroupsOn(ctx, h.model.ID, "1.1.0", target.UploadedAt.Add(-time.Minute))
		if err != nil || len(on) != 1 || on[0].Devices != 1 || on[0].Title == "" {
			t.Fatalf("new groups on 1.1.0: %+v %v", on, err)
		}
		if on, _ := h.groups.NewGroupsOn(ctx, h.model.ID, "1.1.0", target.UploadedAt.Add(time.Minute)); len(on) != 0 {
			t.Fatalf("on 1.1.0 since later: %+v", on)
		}
	})
}

// Paging through the list with before_id visits every group once, in the sort's order.
func TestListPaging(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 100)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		d := h.device(t, h.model)
		first := h.upload(t, d, "esp32c3", "1.0.0")
		h.decode(t, first)
		var rep []byte
		if err := env.DB.QueryRowContext(ctx, `SELECT report FROM coredumps WHERE id = $1`, first).Scan(&rep); err != nil {
			t.Fatal(err)
		}
		target, _ := h.dumps.DecodeTarget(ctx, first)
		// Groups 1..6 with i devices each (group 0 is the real one, with 1).
		for i := 1; i <= 6; i++ {
			r := []byte(strings.ReplaceAll(string(rep), `"app_main"`, `"main_`+string(rune('a'+i))+`"`))
			for range i {
				dev := h.device(t, h.model)
				id := h.upload(t, dev, "esp32c3", "1.0.0")
				assign(t, h, crashgroups.Dump{ID: id, DeviceID: dev.ID, ModelID: h.model.ID, Version: "1.0.0",
					UploadedAt: target.UploadedAt.Add(time.Duration(i) * time.Second)}, r)
			}
		}
		for _, sort := range []string{"last_seen", "devices", "dumps"} {
			var seen []*crashgroups.Group
			var before int64
			for {
				p, err := h.groups.List(ctx, crashgroups.Filter{ModelID: h.model.ID, Sort: sort, Limit: 2, BeforeID: before})
				if err != nil {
					t.Fatal(err)
				}
				if p.Count != 7 {
					t.Fatalf("count %d", p.Count)
				}
				if len(p.Groups) == 0 {
					break
				}
				seen = append(seen, p.Groups...)
				before = p.Groups[len(p.Groups)-1].ID
			}
			if len(seen) != 7 {
				t.Fatalf("%s: %d groups seen", sort, len(seen))
			}
			for i := 1; i < len(seen); i++ {
				a, b := seen[i-1], seen[i]
				key := map[string][2]int64{"last_seen": {a.LastSeenAt.UnixNano(), b.LastSeenAt.UnixNano()},
					"devices": {a.DeviceCount, b.DeviceCount}, "dumps": {a.DumpCount, b.DumpCount}}[sort]
				if key[0] < key[1] || (key[0] == key[1] && a.ID < b.ID) {
					t.Fatalf("%s: %+v before %+v", sort, a, b)
				}
			}
		}
		if _, err := h.groups.List(ctx, crashgroups.Filter{Sort: "size"}); apperr.KindOf(err) != apperr.Validation {
			t.Fatalf("bad sort: %v", err)
		}
	})
}

// TestNoEventJobsWithoutDestinations: without MQTT_URL and WEBHOOK_URL a new group queues
// no event job (nothing would deliver it).
func TestNoEventJobsWithoutDestinations(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	h := newHarness(t, env, 20)
	h.groups = crashgroups.NewService(env.DB, h.fw, h.jobs, h.dumps, crashgroups.Options{}, discard())
	h.dec = decoding.NewService(env.DB, h.dumps, h.fw, h.groups, nil, decoding.Config{}, discard(), nil)
	h.firmware(t, h.model, "esp32c3", "1.0.0")
	h.decode(t, h.upload(t, h.device(t, h.model), "esp32c3", "1.0.0"))
	h.only(t, h.model.ID)
	h.jobs.mu.Lock()
	defer h.jobs.mu.Unlock()
	if len(h.jobs.args) != 0 {
		t.Fatalf("queued %d event jobs with no destination", len(h.jobs.args))
	}
}
