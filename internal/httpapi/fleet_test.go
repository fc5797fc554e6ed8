package httpapi_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

type fleetDevice struct {
	ID          int
	Key, Secret string
}

func newFleetModel(t *testing.T, s *apitest.Server, code string, n int) (int, []fleetDevice) {
	t.Helper()
	var m struct{ ID int }
	s.Expect(201, "POST", "/api/device-models", map[string]any{"code": code, "name": code}).JSON(t, &m)
	devs := make([]fleetDevice, n)
	for i := range devs {
		s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m.ID, "config": "{}"}).JSON(t, &devs[i])
	}
	return m.ID, devs
}

// checkin polls the firmware version as d, with telemetry headers (name, value, …).
func checkin(t *testing.T, s *apitest.Server, d fleetDevice, hdr ...string) {
	t.Helper()
	r := s.Basic(d.Key, d.Secret).Do("GET", "/api/iot/firmware-version", nil, hdr...)
	if r.Status != 200 && r.Status != 404 { // 404: the model has no firmware yet
		t.Fatalf("check-in of %s: %d %s", d.Key, r.Status, r.Body)
	}
}

type fleetVersion struct {
	Version          string         `json:"version"`
	Current          bool           `json:"current"`
	DevicesRunning   int            `json:"devices_running"`
	DevicesSeen      int            `json:"devices_seen"`
	CrashedDevices   int            `json:"crashed_devices"`
	CrashFreePercent *float64       `json:"crash_free_percent"`
	BootsByReason    map[string]int `json:"boots_by_reason"`
	CoreDumps        int            `json:"core_dumps"`
	CrashGroupsNew   int            `json:"crash_groups_new"`
}

type fleetView struct {
	Window       string         `json:"window"`
	Devices      int            `json:"devices"`
	DevicesSeen  int            `json:"devices_seen"`
	StaleDevices int            `json:"stale_devices"`
	Versions     []fleetVersion `json:"versions"`
}

func getFleet(t *testing.T, s *apitest.Server, model int, window string) (fleetView, map[string]fleetVersion) {
	t.Helper()
	var v fleetView
	s.Role("viewer").Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/fleet?window=%s", model, window), nil).JSON(t, &v)
	by := map[string]fleetVersion{}
	for _, x := range v.Versions {
		by[x.Version] = x
	}
	return v, by
}

func flush(t *testing.T, ss ...*apitest.Server) {
	t.Helper()
	for _, s := range ss {
		if err := s.App.Fleet.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func pct(p *float64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatFloat(*p, 'f', -1, 64)
}

// TestFleetThroughTwoReplicas: check-ins, boots and a core dump through two replicas over
// one database and store; after both flush, the fleet view, the device JSON and the
// device filters are exact, boots are counted once however often and wherever retried,
// and invalid headers are ignored (the device still gets its answer) and counted.
func TestFleetThroughTwoReplicas(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		a := apitest.Start(t, env, "FLEET_FLUSH_INTERVAL", "5m")
		b := apitest.Start(t, env, "FLEET_FLUSH_INTERVAL", "5m")
		model, devs := newFleetModel(t, a, "fleetmodel", 4)
		start := time.Now().UTC().Add(-time.Second)

		// d0: v1, booted normally; the same boot retried through both replicas.
		for range 3 {
			checkin(t, a, devs[0], "X-Firmware-Version", "1.0.0", "X-Boot-Id", "boot-a", "X-Reset-Reason", "POWERON")
			checkin(t, b, devs[0], "X-Firmware-Version", "1.0.0", "X-Boot-Id", "boot-a", "X-Reset-Reason", "POWERON")
		}
		// d1: booted after a panic on v2, then a later boot on v2 after a brownout.
		checkin(t, b, devs[1], "X-Firmware-Version", "2.0.0", "X-Boot-Id", "p1", "X-Reset-Reason", "PANIC")
		checkin(t, a, devs[1], "X-Firmware-Version", "2.0.0", "X-Boot-Id", "p1", "X-Reset-Reason", "PANIC")
		checkin(t, a, devs[1], "X-Firmware-Version", "2.0.0", "X-Boot-Id", "p2", "X-Reset-Reason", "BROWNOUT")
		// d2: sends no headers at all: seen, but on no version.
		checkin(t, b, devs[2])
		// d3: invalid values everywhere, then a core dump naming v1.
		r := a.Basic(devs[3].Key, devs[3].Secret).Do("GET", "/api/iot/config", nil,
			"X-Firmware-Version", "not a version!", "X-Boot-Id", strings.Repeat("x", 65), "X-Reset-Reason", "ESP_RST_PANIC")
		if r.Status != 200 {
			t.Fatalf("a device with invalid telemetry headers got %d: %s", r.Status, r.Body)
		}
		if r := a.Basic(devs[3].Key, devs[3].Secret).Do("POST", "/api/iot/coredump?chip=esp32&firmware_version=1.0.0", []byte("dump")); r.Status != 201 {
			t.Fatalf("upload: %d %s", r.Status, r.Body)
		}
		flush(t, a, b)

		v, by := getFleet(t, a, model, "24h")
		if v.Window != "24h" || v.Devices != 4 || v.DevicesSeen != 4 || v.StaleDevices != 0 {
			t.Fatalf("fleet totals: %+v", v)
		}
		if len(v.Versions) != 2 {
			t.Fatalf("versions: %+v", v.Versions)
		}
		v1, v2 := by["1.0.0"], by["2.0.0"]
		if v1.DevicesRunning != 2 || v1.DevicesSeen != 2 || v1.CrashedDevices != 1 || pct(v1.CrashFreePercent) != "50" ||
			v1.CoreDumps != 1 || len(v1.BootsByReason) != 1 || v1.BootsByReason["POWERON"] != 1 || v1.Current {
			t.Fatalf("1.0.0: %+v (crash-free %s)", v1, pct(v1.CrashFreePercent))
		}
		if v2.DevicesRunning != 1 || v2.DevicesSeen != 1 || v2.CrashedDevices != 1 || pct(v2.CrashFreePercent) != "0" ||
			v2.CoreDumps != 0 || v2.BootsByReason["PANIC"] != 1 || v2.BootsByReason["BROWNOUT"] != 1 {
			t.Fatalf("2.0.0: %+v (crash-free %s)", v2, pct(v2.CrashFreePercent))
		}

		// The device JSON carries what the device reported.
		var d1 map[string]any
		a.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", devs[1].ID), nil).JSON(t, &d1)
		if d1["running_version"] != "2.0.0" || d1["last_reset_reason"] != "BROWNOUT" || d1["last_seen_at"] == nil ||
			d1["running_since"] == nil || d1["last_boot_at"] == nil {
			t.Fatalf("device 1: %v", d1)
		}
		var d2 map[string]any
		a.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", devs[2].ID), nil).JSON(t, &d2)
		if d2["running_version"] != nil || d2["last_seen_at"] == nil || d2["last_boot_at"] != nil {
			t.Fatalf("device 2 (no headers): %v", d2)
		}

		// Filters.
		keys := func(q string) []string {
			var out struct {
				Devices []struct{ Key string }
			}
			a.Expect(200, "GET", "/api/devices?"+q, nil).JSON(t, &out)
			var ks []string
			for _, d := range out.Devices {
				ks = append(ks, d.Key)
			}
			return ks
		}
		mq := fmt.Sprintf("model_id=%d&", model)
		if got := keys(mq + "running_version=1.0.0"); len(got) != 2 {
			t.Fatalf("running_version=1.0.0: %v", got)
		}
		if got := keys(mq + "running_version=2.0.0"); len(got) != 1 || got[0] != devs[1].Key {
			t.Fatalf("running_version=2.0.0: %v", got)
		}
		if got := keys(mq + "seen_after=" + url.QueryEscape(start.Format(time.RFC3339Nano))); len(got) != 4 {
			t.Fatalf("seen_after: %v", got)
		}
		if got := keys(mq + "seen_before=" + url.QueryEscape(start.Format(time.RFC3339Nano))); len(got) != 0 {
			t.Fatalf("seen_before the check-ins: %v", got)
		}
		if got := keys(mq + "seen_before=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339))); len(got) != 4 {
			t.Fatalf("seen_before later: %v", got)
		}
		for _, bad := range []string{"running_version=..", "seen_after=yesterday", "seen_before=2026-13-01T00:00:00Z"} {
			if r := a.Do("GET", "/api/devices?"+bad, nil); r.Status != 400 && r.Status != 422 {
				t.Fatalf("%s: %d %s", bad, r.Status, r.Body)
			}
		}
		for _, bad := range []string{"0h", "30m", "91d", "24", "1w", "-1h"} {
			if r := a.Role("viewer").Do("GET", fmt.Sprintf("/api/device-models/%d/fleet?window=%s", model, bad), nil); r.Status != 400 && r.Status != 422 {
				t.Fatalf("window=%s: %d %s", bad, r.Status, r.Body)
			}
		}
		a.Role("viewer").Expect(404, "GET", "/api/device-models/99999/fleet", nil)

		// Invalid headers were counted, one per header, on the replica that saw them.
		metrics := scrape(t, a)
		for _, h := range []string{"X-Firmware-Version", "X-Boot-Id", "X-Reset-Reason"} {
			want := fmt.Sprintf(`iotsupport_fleet_invalid_headers_total{header=%q} 1`, h)
			if !strings.Contains(metrics, want) {
				t.Fatalf("metrics lack %s:\n%s", want, grepLines(metrics, "iotsupport_fleet"))
			}
		}
	})
}

// TestFleetCrashLoopCountsOnce: a device stuck in a crash loop — a PANIC boot and a core
// dump each cycle — is one crashed device of its version, with every boot and dump
// counted.
func TestFleetCrashLoopCountsOnce(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "COREDUMP_UPLOADS_PER_HOUR", "100")
		model, devs := newFleetModel(t, s, "crashloop", 3)
		for i := range 6 {
			checkin(t, s, devs[0], "X-Firmware-Version", "3.1.0", "X-Boot-Id", fmt.Sprintf("loop-%d", i), "X-Reset-Reason", "PANIC")
			if r := s.Basic(devs[0].Key, devs[0].Secret).Do("POST", "/api/iot/coredump?chip=esp32&firmware_version=3.1.0", []byte("dump"),
				"X-Firmware-Version", "3.1.0", "X-Boot-Id", fmt.Sprintf("loop-%d", i)); r.Status != 201 {
				t.Fatalf("upload %d: %d %s", i, r.Status, r.Body)
			}
		}
		checkin(t, s, devs[1], "X-Firmware-Version", "3.1.0", "X-Boot-Id", "ok", "X-Reset-Reason", "POWERON")
		checkin(t, s, devs[2], "X-Firmware-Version", "3.1.0", "X-Boot-Id", "wd", "X-Reset-Reason", "TASK_WDT")
		flush(t, s)
		_, by := getFleet(t, s, model, "1h")
		v := by["3.1.0"]
		if v.DevicesSeen != 3 || v.CrashedDevices != 2 || v.CoreDumps != 6 || v.BootsByReason["PANIC"] != 6 ||
			v.BootsByReason["POWERON"] != 1 || v.BootsByReason["TASK_WDT"] != 1 || v.DevicesRunning != 3 {
			t.Fatalf("crash loop: %+v", v)
		}
		if want := 100 * 1.0 / 3; *v.CrashFreePercent != want {
			t.Fatalf("crash-free %v, want %v", *v.CrashFreePercent, want)
		}
	})
}

// TestFleetMetricsOnlyStoredVersions: the Prometheus gauges name the model's stored
// versions only, whatever versions devices claim.
func TestFleetMetricsOnlyStoredVersions(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env, "FLEET_FLUSH_INTERVAL", "100ms")
	model, devs := newFleetModel(t, s, "gauged", 3)
	zip := bundletest.BuildCase(t, "gauged", "esp32c3", bundletest.Options{Version: "1.0.0"})
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", model), zip)
	checkin(t, s, devs[0], "X-Firmware-Version", "1.0.0", "X-Boot-Id", "a", "X-Reset-Reason", "POWERON")
	checkin(t, s, devs[1], "X-Firmware-Version", "1.0.0", "X-Boot-Id", "b", "X-Reset-Reason", "INT_WDT")
	checkin(t, s, devs[2], "X-Firmware-Version", "0.9.9-unstored", "X-Boot-Id", "c", "X-Reset-Reason", "POWERON")
	flush(t, s)
	time.Sleep(150 * time.Millisecond) // the collector reuses figures for one flush interval
	m := scrape(t, s)
	for _, want := range []string{`iotsupport_fleet_devices{model="gauged",version="1.0.0"} 2`,
		`iotsupport_fleet_crash_free_ratio{model="gauged",version="1.0.0",window="24h"} 0.5`} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(m, "iotsupport_fleet"))
		}
	}
	if strings.Contains(m, "0.9.9-unstored") {
		t.Fatalf("an unstored version became a label:\n%s", grepLines(m, "iotsupport_fleet"))
	}
	_, by := getFleet(t, s, model, "24h")
	if !by["1.0.0"].Current || by["0.9.9-unstored"].Current || by["0.9.9-unstored"].DevicesRunning != 1 {
		t.Fatalf("fleet view: %+v", by)
	}
}

func scrape(t *testing.T, s *apitest.Server) string {
	t.Helper()
	return string(s.Expect(200, "GET", "/metrics", nil).Body)
}

// TestFleetCrashGroupsNew: a real dump decoded into a new crash group counts in its
// version's crash_groups_new; two more devices with the same crash add no group.
func TestFleetCrashGroupsNew(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		startWorkers(t, s)
		model, devs := newFleetModel(t, s, "grouped", 3)
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", model), bundletest.BuildCase(t, "grouped", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		dump, _, _ := caseDump(t, "esp32c3")
		for _, d := range devs {
			id := uploadDump(t, s, d.Key, d.Secret, dump, "esp32c3", "1.0.0")
			waitStatus(t, s, d.ID, id, "PARSED")
		}
		_, by := getFleet(t, s, model, "1h")
		v := by["1.0.0"]
		if v.CrashGroupsNew != 1 || v.CrashedDevices != 3 || v.CoreDumps != 3 || !v.Current {
			t.Fatalf("1.0.0: %+v", v)
		}
	})
}
