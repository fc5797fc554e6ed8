package fleet_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func newFleet(d *db.DB, c *clock, opts fleet.Options) *fleet.Service {
	opts.Now = c.Now
	return fleet.NewService(d, noGroups{}, opts, slog.New(slog.DiscardHandler), nil)
}

// fixture creates a model with n devices and returns the model id and device ids.
func fixture(t *testing.T, d *db.DB, code string, n int) (*devices.Service, int64, []int64) {
	t.Helper()
	ctx := context.Background()
	devs := devices.NewService(d, func(s string) string { return fmt.Sprintf("%064x", len(s)) }, firmware.ModelObjects{}, coredumps.DeviceObjects{}, notify.Nop{})
	m, err := devs.CreateModel(ctx, devices.ModelInput{Code: code, Name: &code})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	if err := devs.CreateDevices(ctx, m.ID, n, "{}", func(nd []devices.NewDevice) error {
		for _, x := range nd {
			ids = append(ids, x.Device.ID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return devs, m.ID, ids
}

func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// dump records a stored core dump the way the upload's batch does.
func dump(t *testing.T, d *db.DB, f *fleet.Service, device int64, version string, at time.Time) {
	t.Helper()
	if err := d.Tx(context.Background(), func(tx *sql.Tx) error {
		return d.Batch(context.Background(), tx, fleet.Dumps{}.DumpQueries(device, version, at)...)
	}); err != nil {
		t.Fatal(err)
	}
}

func mustFlush(t *testing.T, f *fleet.Service) {
	t.Helper()
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestFleetSimulation: 200 devices over three versions with different crash rates check
// in every hour for two days (each request carrying its boot id, as ESP-IDF's client
// does), some upgrading on the way; crashes are PANIC/watchdog boots, core dumps or both.
// The fleet view's figures per version equal the ones the simulation counts itself, for
// a 24 h window and a 90 d one.
func TestFleetSimulation(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		c := &clock{t: t0}
		f := newFleet(env.DB, c, fleet.Options{FlushInterval: time.Minute})
		_, model, ids := fixture(t, env.DB, "sim", 200)
		rng := rand.New(rand.NewPCG(20, 26))
		versions := []string{"1.0.0", "1.1.0", "2.0.0-rc1"}
		crashRate := map[string]float64{"1.0.0": 0.002, "1.1.0": 0.008, "2.0.0-rc1": 0.04} // per device and hour
		type dev struct {
			version, boot, reason string
			boots                 int
		}
		fleetDevs := make([]*dev, len(ids))
		for i := range ids {
			fleetDevs[i] = &dev{version: versions[i%3], boot: fmt.Sprintf("b%d-0", i), reason: "POWERON"}
		}
		const hours = 48
		end := t0.Add(hours * time.Hour)
		type want struct {
			seen, crashed map[int64]bool
			boots         map[string]int
			dumps         int
		}
		windows := map[string]time.Time{"24h": end.Add(-24 * time.Hour), "90d": end.Add(-90 * 24 * time.Hour)}
		expected := map[string]map[string]*want{}
		for w := range windows {
			expected[w] = map[string]*want{}
		}
		record := func(at time.Time, version string, fn func(*want)) {
			for w, since := range windows {
				if at.Before(since) {
					continue
				}
				x := expected[w][version]
				if x == nil {
					x = &want{seen: map[int64]bool{}, crashed: map[int64]bool{}, boots: map[string]int{}}
					expected[w][version] = x
				}
				fn(x)
			}
		}
		running := map[string]int{}
		dumped := map[int64]bool{}
		for h := 0; h < hours; h++ {
			for i, id := range ids {
				d := fleetDevs[i]
				at := t0.Add(time.Duration(h)*time.Hour + time.Duration(i)*7*time.Second)
				c.Set(at)
				// A third of the 1.0.0 devices upgrade to 1.1.0 at hour 30 (a SW reset).
				if h == 30 && d.version == "1.0.0" && i%9 == 0 {
					d.version, d.boots = "1.1.0", d.boots+1
					d.boot, d.reason = fmt.Sprintf("b%d-%d", i, d.boots), "SW"
				}
				isNewBoot := h == 0 || d.reason == "SW" && h == 30 && i%9 == 0
				crashed := false
				if h > 0 && rng.Float64() < crashRate[d.version] {
					// The device crashed in the last hour and rebooted: a crash boot, and
					// (two times out of three) a core dump.
					d.boots++
					d.boot, d.reason = fmt.Sprintf("b%d-%d", i, d.boots), []string{"PANIC", "TASK_WDT", "INT_WDT", "WDT"}[rng.IntN(4)]
					isNewBoot, crashed = true, true
				}
				f.Observe(context.Background(), id, model, headers(fleet.HeaderVersion, d.version, fleet.HeaderBootID, d.boot, fleet.HeaderReason, d.reason))
				version, reason := d.version, d.reason
				record(at, version, func(x *want) {
					x.seen[id] = true
					if isNewBoot {
						x.boots[reason]++
					}
					if crashed {
						x.crashed[id] = true
					}
				})
				if crashed && rng.IntN(3) > 0 {
					dump(t, env.DB, f, id, version, at.Add(time.Second))
					dumped[id] = true
					record(at.Add(time.Second), version, func(x *want) { x.dumps++; x.crashed[id] = true })
				}
				// A retry of the same request (same boot id) changes nothing.
				if rng.IntN(10) == 0 {
					f.Observe(context.Background(), id, model, headers(fleet.HeaderVersion, d.version, fleet.HeaderBootID, d.boot, fleet.HeaderReason, d.reason))
				}
			}
			if h%2 == 1 {
				mustFlush(t, f)
			}
		}
		for _, d := range fleetDevs {
			running[d.version]++
		}
		mustFlush(t, f)
		c.Set(end)
		for w := range windows {
			v, err := f.View(context.Background(), model, w)
			if err != nil {
				t.Fatal(err)
			}
			if v.Devices != 200 || v.DevicesSeen != 200 || v.StaleDevices != 0 {
				t.Fatalf("%s: totals %+v", w, v)
			}
			if len(v.Versions) != 3 {
				t.Fatalf("%s: versions %+v", w, v.Versions)
			}
			for _, got := range v.Versions {
				x := expected[w][got.Version]
				wantPct := fleet.CrashFree(len(x.seen), len(x.crashed))
				if got.DevicesSeen != len(x.seen) || got.CrashedDevices != len(x.crashed) || got.CoreDumps != x.dumps ||
					got.DevicesRunning != running[got.Version] || *got.CrashFreePercent != *wantPct || len(got.BootsByReason) != len(x.boots) {
					t.Fatalf("%s %s: got %+v (crash-free %v), want seen %d crashed %d dumps %d running %d crash-free %v boots %v",
						w, got.Version, got, *got.CrashFreePercent, len(x.seen), len(x.crashed), x.dumps, running[got.Version], *wantPct, x.boots)
				}
				for r, n := range x.boots {
					if got.BootsByReason[r] != n {
						t.Fatalf("%s %s: boots %v, want %v", w, got.Version, got.BootsByReason, x.boots)
					}
				}
				t.Logf("%s %s: seen %d crashed %d crash-free %.2f%% dumps %d boots %v", w, got.Version, got.DevicesSeen,
					got.CrashedDevices, *got.CrashFreePercent, got.CoreDumps, got.BootsByReason)
			}
			// The console's overview counts the same for every model at once.
			if w == "24h" {
				_, other, _ := fixture(t, env.DB, "other", 3) // never seen: no versions
				all, err := f.Overview(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				ov, err := f.View(context.Background(), other, w)
				if err != nil {
					t.Fatal(err)
				}
				o := all[model]
				if o == nil || len(o.Versions) != len(v.Versions) || o.StaleDevices != v.StaleDevices || all[other] == nil ||
					all[other].StaleDevices != ov.StaleDevices || len(all[other].Versions) != 0 {
					t.Fatalf("overview %+v (other %+v), view %+v", o, all[other], v)
				}
				week := 0
				for _, x := range expected["90d"] {
					week += x.dumps
				}
				if o.DumpsWeek != week || o.DevicesWeek != len(dumped) {
					t.Fatalf("overview week: %d dumps from %d devices, want %d from %d", o.DumpsWeek, o.DevicesWeek, week, len(dumped))
				}
				day := 0
				for i, got := range v.Versions {
					got.BootsByReason, got.CrashGroupsNew = nil, 0
					ov := o.Versions[i]
					if ov.Version != got.Version || ov.Current != got.Current || ov.DevicesRunning != got.DevicesRunning ||
						ov.DevicesSeen != got.DevicesSeen || ov.CrashedDevices != got.CrashedDevices || ov.CoreDumps != got.CoreDumps ||
						*ov.CrashFreePercent != *got.CrashFreePercent {
						t.Fatalf("overview %s: %+v, view %+v", got.Version, ov, got)
					}
					day += got.CoreDumps
				}
				if o.DumpsDay != day || day == 0 {
					t.Fatalf("overview: %d dumps in 24 h, view %d", o.DumpsDay, day)
				}
			}
			// The simulation's rates must make the versions differ, or it proves little.
			if w == "24h" {
				a, b := fleet.CrashFree(len(expected[w]["1.0.0"].seen), len(expected[w]["1.0.0"].crashed)),
					fleet.CrashFree(len(expected[w]["2.0.0-rc1"].seen), len(expected[w]["2.0.0-rc1"].crashed))
				if *a-*b < 20 {
					t.Fatalf("simulated crash-free rates too close: %v vs %v", *a, *b)
				}
			}
		}
	})
}

func count(t *testing.T, d *db.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := d.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFleetHistoryRetention: history older than FLEET_HISTORY_DAYS is pruned in batches
// (every row, however many batches it takes), newer history and device status stay.
func TestFleetHistoryRetention(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		c := &clock{t: t0}
		f := newFleet(env.DB, c, fleet.Options{HistoryDays: 3, PruneBatch: 7})
		_, model, ids := fixture(t, env.DB, "kept", 10)
		ctx := context.Background()
		// Old: days 0 and 1, every device, a crash boot and a dump each.
		for day := 0; day < 2; day++ {
			for i, id := range ids {
				at := t0.Add(time.Duration(day)*24*time.Hour + time.Duration(i)*time.Minute)
				c.Set(at)
				f.Observe(ctx, id, model, headers(fleet.HeaderVersion, "1.0.0", fleet.HeaderBootID, fmt.Sprintf("%d-%d", day, i), fleet.HeaderReason, "PANIC"))
				dump(t, env.DB, f, id, "1.0.0", at)
			}
			mustFlush(t, f)
		}
		// New: day 5, half the devices.
		recent := t0.Add(5 * 24 * time.Hour)
		for i, id := range ids[:5] {
			c.Set(recent.Add(time.Duration(i) * time.Minute))
			f.Observe(ctx, id, model, headers(fleet.HeaderVersion, "1.1.0", fleet.HeaderBootID, fmt.Sprintf("new-%d", i), fleet.HeaderReason, "SW"))
		}
		mustFlush(t, f)
		if n := count(t, env.DB, `SELECT COUNT(*) FROM fleet_device_days`); n != 25 {
			t.Fatalf("day rows before pruning: %d", n)
		}
		c.Set(recent.Add(time.Hour))
		n, err := f.Prune(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 20 day rows, 20 boots and 20 dumps were older than 3 days.
		if n != 60 {
			t.Fatalf("pruned %d rows, want 60", n)
		}
		for q, want := range map[string]int{
			`SELECT COUNT(*) FROM fleet_device_days`:                         5,
			`SELECT COUNT(*) FROM fleet_boots`:                               5,
			`SELECT COUNT(*) FROM fleet_dumps`:                               0,
			`SELECT COUNT(*) FROM device_status`:                             10,
			`SELECT COUNT(*) FROM fleet_device_days WHERE version = '1.0.0'`: 0,
		} {
			if got := count(t, env.DB, q); got != want {
				t.Fatalf("%s: %d, want %d", q, got, want)
			}
		}
		v, err := f.View(ctx, model, "90d")
		if err != nil {
			t.Fatal(err)
		}
		// Device status is not history: the 90-day window still sees every device last
		// seen within it, but no pruned version figures.
		if v.DevicesSeen != 10 || v.StaleDevices != 0 || len(v.Versions) != 2 {
			t.Fatalf("after pruning: %+v", v)
		}
		if v, err := f.View(ctx, model, "24h"); err != nil || v.DevicesSeen != 5 || v.StaleDevices != 5 {
			t.Fatalf("24h after pruning: %+v %v", v, err)
		}
		for _, x := range v.Versions {
			if x.Version == "1.0.0" && (x.DevicesSeen != 0 || x.CrashedDevices != 0 || x.DevicesRunning != 5 || x.CrashFreePercent != nil) {
				t.Fatalf("pruned version: %+v", x)
			}
		}
		if n, err := f.Prune(ctx); err != nil || n != 0 {
			t.Fatalf("second prune: %d %v", n, err)
		}
	})
}

// TestFleetReplicasMerge: two replicas flushing in either order converge on the latest
// report: last_seen_at is the later one, the running version is the later claim, and
// running_since stays when the other replica only confirms the same version.
func TestFleetReplicasMerge(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ca, cb := &clock{t: t0}, &clock{t: t0}
		a, b := newFleet(env.DB, ca, fleet.Options{}), newFleet(env.DB, cb, fleet.Options{})
		devs, model, ids := fixture(t, env.DB, "merged", 3)
		ctx := context.Background()
		// Device 0: A saw 1.0.0 at t0+1m, B saw 2.0.0 at t0+5m; A flushes last.
		ca.Set(t0.Add(time.Minute))
		a.Observe(ctx, ids[0], model, headers(fleet.HeaderVersion, "1.0.0"))
		cb.Set(t0.Add(5 * time.Minute))
		b.Observe(ctx, ids[0], model, headers(fleet.HeaderVersion, "2.0.0"))
		mustFlush(t, b)
		mustFlush(t, a)
		d, err := devs.GetDevice(ctx, ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if *d.RunningVersion != "2.0.0" || !d.LastSeenAt.Equal(t0.Add(5*time.Minute)) || !d.RunningSince.Equal(t0.Add(5*time.Minute)) {
			t.Fatalf("device 0: running %s since %s, seen %s", *d.RunningVersion, d.RunningSince, d.LastSeenAt)
		}
		// Later, A confirms 2.0.0: since stays, last seen moves.
		ca.Set(t0.Add(9 * time.Minute))
		a.Observe(ctx, ids[0], model, headers(fleet.HeaderVersion, "2.0.0"))
		mustFlush(t, a)
		d, _ = devs.GetDevice(ctx, ids[0])
		if *d.RunningVersion != "2.0.0" || !d.LastSeenAt.Equal(t0.Add(9*time.Minute)) || !d.RunningSince.Equal(t0.Add(5*time.Minute)) {
			t.Fatalf("device 0 confirmed: running %s since %s, seen %s", *d.RunningVersion, d.RunningSince, d.LastSeenAt)
		}
		// A request without a version header moves last seen only.
		ca.Set(t0.Add(10 * time.Minute))
		a.Observe(ctx, ids[0], model, http.Header{})
		mustFlush(t, a)
		d, _ = devs.GetDevice(ctx, ids[0])
		if *d.RunningVersion != "2.0.0" || !d.LastSeenAt.Equal(t0.Add(10*time.Minute)) {
			t.Fatalf("device 0 without headers: running %s seen %s", *d.RunningVersion, d.LastSeenAt)
		}
		// The same boot through both replicas is one boot; the later boot sets the reason.
		ca.Set(t0.Add(20 * time.Minute))
		cb.Set(t0.Add(20 * time.Minute))
		a.Observe(ctx, ids[1], model, headers(fleet.HeaderVersion, "2.0.0", fleet.HeaderBootID, "x", fleet.HeaderReason, "BROWNOUT"))
		b.Observe(ctx, ids[1], model, headers(fleet.HeaderVersion, "2.0.0", fleet.HeaderBootID, "x", fleet.HeaderReason, "BROWNOUT"))
		cb.Set(t0.Add(30 * time.Minute))
		b.Observe(ctx, ids[1], model, headers(fleet.HeaderVersion, "2.0.0", fleet.HeaderBootID, "y", fleet.HeaderReason, "TASK_WDT"))
		if n := count(t, env.DB, `SELECT COUNT(*) FROM fleet_boots WHERE device_id = $1`, ids[1]); n != 2 {
			t.Fatalf("boots of device 1: %d, want 2", n)
		}
		d, _ = devs.GetDevice(ctx, ids[1])
		if *d.LastResetReason != "TASK_WDT" || !d.LastBootAt.Equal(t0.Add(30*time.Minute)) {
			t.Fatalf("device 1: reason %s at %s", *d.LastResetReason, d.LastBootAt)
		}
		// A replica that restarted (knowing no boot) and a late request of the earlier boot
		// leave the latest boot as it is.
		restarted := newFleet(env.DB, ca, fleet.Options{})
		ca.Set(t0.Add(40 * time.Minute))
		restarted.Observe(ctx, ids[1], model, headers(fleet.HeaderVersion, "2.0.0", fleet.HeaderBootID, "y", fleet.HeaderReason, "TASK_WDT"))
		restarted.Observe(ctx, ids[1], model, headers(fleet.HeaderVersion, "2.0.0", fleet.HeaderBootID, "x", fleet.HeaderReason, "BROWNOUT"))
		mustFlush(t, restarted)
		d, _ = devs.GetDevice(ctx, ids[1])
		if *d.LastResetReason != "TASK_WDT" || !d.LastBootAt.Equal(t0.Add(30*time.Minute)) || !d.LastSeenAt.Equal(t0.Add(40*time.Minute)) {
			t.Fatalf("device 1 after a restart and a late request: reason %s at %s, seen %s", *d.LastResetReason, d.LastBootAt, d.LastSeenAt)
		}
		if n := count(t, env.DB, `SELECT COUNT(*) FROM fleet_boots WHERE device_id = $1`, ids[1]); n != 2 {
			t.Fatalf("boots of device 1 after the restart: %d, want 2", n)
		}
		// A device deleted between its check-in and the flush is skipped, not an error.
		a.Observe(ctx, ids[2], model, headers(fleet.HeaderVersion, "2.0.0"))
		a.Observe(ctx, ids[0], model, headers(fleet.HeaderVersion, "2.0.0"))
		if err := devs.DeleteDevice(ctx, ids[2]); err != nil {
			t.Fatal(err)
		}
		mustFlush(t, a)
		if n := count(t, env.DB, `SELECT COUNT(*) FROM device_status WHERE device_id = $1`, ids[2]); n != 0 {
			t.Fatalf("a deleted device got a status row")
		}
	})
}

// TestFleetFailedFlushKeepsSightings: a flush the database refuses keeps what it held,
// and the next flush writes it.
func TestFleetFailedFlushKeepsSightings(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	c := &clock{t: t0}
	f := newFleet(env.DB, c, fleet.Options{})
	devs, model, ids := fixture(t, env.DB, "retry", 1)
	f.Observe(context.Background(), ids[0], model, headers(fleet.HeaderVersion, "4.0.0"))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Flush(cancelled); err == nil {
		t.Fatal("a flush with a cancelled context succeeded")
	}
	mustFlush(t, f)
	d, err := devs.GetDevice(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if d.RunningVersion == nil || *d.RunningVersion != "4.0.0" || !d.LastSeenAt.Equal(t0) {
		t.Fatalf("after the retried flush: %+v", d)
	}
}

// noGroups is a model without crash groups (the fleet view's crash_groups_new is tested
// with real decoded dumps in internal/httpapi).
type noGroups struct{}

func (noGroups) NewGroupsByVersion(context.Context, int64, time.Time) (map[string]int, error) {
	return nil, nil
}
