package bench_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/bench"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func testdataDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "testdata")
	if _, err := os.Stat(filepath.Join(dir, "esp-coredump", "esp32", "app.elf")); err != nil {
		t.Skipf("shared test data not found: %v", err)
	}
	return dir
}

// runBench runs the bench command with environ and args (plus --json and the test data)
// and returns its report.
func runBench(t *testing.T, environ []string, args ...string) bench.Report {
	t.Helper()
	td := testdataDir(t)
	cmd := exec.Command(proctest.Binary(t), append(append([]string{"bench"}, args...), "--json", "--testdata", td)...)
	cmd.Dir = t.TempDir()
	cmd.Env = environ
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	return rep
}

// TestBenchSmoke runs every scenario briefly through the real command on
// SQLite + local storage and checks that the report is complete. It never
// asserts speed.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and runs every scenario")
	}
	rep := runBench(t, append(os.Environ(), "DATABASE_URL=", "STORAGE_BACKEND="), "--duration", "1s", "--concurrency", "2")
	if rep.SyncedRounds <= 0 {
		t.Errorf("no round started with a sync")
	}
	if rep.IdleRSS <= 0 || rep.ServerHWM < rep.IdleRSS || rep.Machine == "" || rep.Database != "sqlite" || rep.Storage != "local" {
		t.Errorf("report header: idle %d, hwm %d, machine %q, db %q, storage %q", rep.IdleRSS, rep.ServerHWM, rep.Machine, rep.Database, rep.Storage)
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		name, _, _ := strings.Cut(r.Scenario, "/")
		name, _, _ = strings.Cut(name, "-")
		seen[name] = true
		s := r.Server
		if s.Requests <= 0 || s.PerSecond <= 0 || s.P50 <= 0 || s.P90 < s.P50 || s.P99 < s.P90 || s.Errors != 0 || r.Concurrency != 2 {
			t.Errorf("%s: incomplete stats %+v (concurrency %d)", r.Scenario, s, r.Concurrency)
		}
		if name == "decode" {
			continue
		}
		if r.PeakRSS <= 0 {
			t.Errorf("%s: no peak RSS", r.Scenario)
		}
		if r.Baseline == nil || r.Baseline.Requests <= 0 || r.Baseline.Errors != 0 || r.Ratio <= 0 {
			t.Errorf("%s: baseline %+v, ratio %v", r.Scenario, r.Baseline, r.Ratio)
		}
		// Downloads compare with a plain static file server over loopback HTTP (the ratio's
		// baseline) and with reading the stored file in-process.
		if (name == "download" || name == "ranged") && (!strings.Contains(r.Note, "http.FileServer") || len(r.Other) != 1 ||
			!strings.Contains(r.Other[0].Name, "in-process") || r.Other[0].Baseline.Requests <= 0 || r.Other[0].Baseline.Errors != 0 || r.Other[0].Ratio <= 0) {
			t.Errorf("%s: baselines %q %+v", r.Scenario, r.Note, r.Other)
		}
		if name == "ingest" && (len(r.Other) != 1 || r.Other[0].Baseline.Requests <= 0 || r.Other[0].Baseline.Errors != 0 || r.Other[0].Ratio <= 0) {
			t.Errorf("ingest: other baselines %+v", r.Other)
		}
	}
	for _, s := range bench.Scenarios {
		if !seen[s] {
			t.Errorf("scenario %s missing from the report", s)
		}
	}
	for _, want := range []string{"checkin+headers", "download-1MiB", "download-16MiB", "decode/esp32c6"} {
		found := false
		for _, r := range rep.Results {
			found = found || r.Scenario == want
		}
		if !found {
			t.Errorf("row %s missing", want)
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"req/s", "p50", "p90", "p99", "errors", "peak RSS", "baseline p99", "ratio", "idle RSS", "ingest: against", "synced to disk before each of",
		"download-1MiB: baseline: the same file over loopback HTTP from Go's http.FileServer", "ranged: against the stored file read in-process"} {
		if !strings.Contains(table.String(), col) {
			t.Errorf("table lacks %q:\n%s", col, table.String())
		}
	}
	for _, r := range rep.Results {
		if r.Baseline == nil {
			continue
		}
		if p99 := fmt.Sprintf("%.2fms", float64(r.Baseline.P99)/1e6); !strings.Contains(table.String(), p99) {
			t.Errorf("table lacks %s's baseline p99 %s:\n%s", r.Scenario, p99, table.String())
		}
	}
}

// TestBenchKeepDirty: --keep-dirty skips the sync before each round, and the report says so.
func TestBenchKeepDirty(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	rep := runBench(t, append(os.Environ(), "DATABASE_URL=", "STORAGE_BACKEND="), "--scenario", "checkin", "--duration", "1s", "--concurrency", "2", "--keep-dirty")
	if rep.SyncedRounds != 0 || len(rep.Results) != 2 || rep.Results[0].Server.Requests <= 0 || rep.Results[1].Server.Requests <= 0 {
		t.Fatalf("synced rounds %d, results %+v", rep.SyncedRounds, rep.Results)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "not synced (--keep-dirty)") {
		t.Errorf("table does not say the rounds were not synced:\n%s", table.String())
	}
}

// TestBenchIngestPostgres runs the ingest scenario on PostgreSQL + versitygw and checks
// what it leaves behind: every server upload as a row with its upload-log entry and its
// decode job, and nothing of the baselines (rows, log entries, audit entries, jobs).
func TestBenchIngestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	env := testenv.New(t, "postgres+s3")
	// 64 devices: at two uploads at a time for a second, none reaches MAX_COREDUMPS, so
	// every upload's row stays.
	rep := runBench(t, proctest.Env(env), "--scenario", "ingest", "--duration", "1s", "--concurrency", "2", "--ingest-devices", "64")
	if len(rep.Results) != 1 || rep.Database != "postgres" || rep.Storage != "s3" {
		t.Fatalf("report: %+v", rep)
	}
	// Two rounds of the server and both baselines, each after a sync.
	if rep.SyncedRounds != 6 {
		t.Errorf("%d synced rounds, want 6", rep.SyncedRounds)
	}
	r := rep.Results[0]
	if r.Server.Requests <= 0 || r.Server.Errors != 0 || r.Baseline == nil || r.Baseline.Requests <= 0 || r.Baseline.Errors != 0 ||
		len(r.Other) != 1 || r.Other[0].Baseline.Requests <= 0 || r.Other[0].Baseline.Errors != 0 {
		t.Fatalf("ingest: %+v", r)
	}
	uploads := int(r.Server.Requests)
	for _, c := range []struct {
		q    string
		want int
	}{
		{`SELECT COUNT(*) FROM coredumps`, uploads},
		{`SELECT COUNT(*) FROM coredump_uploads`, uploads},
		{`SELECT COUNT(*) FROM river_job WHERE kind = 'decode_coredump' AND queue = 'default'`, uploads},
		{`SELECT COUNT(*) FROM river_job WHERE queue NOT IN ('default', 'crash_group_events') AND kind <> 'crash_group_backfill'`, 0}, // crash group events and the backfill (queued once at the first start) are the server's own
		{`SELECT COUNT(*) FROM audit_log WHERE actor_kind = 'device' AND status = 201`, uploads},
		{`SELECT COUNT(*) FROM audit_log WHERE request_id = 'bench-baseline'`, 0},
	} {
		var n int
		if err := env.DB.QueryRowContext(t.Context(), c.q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != c.want {
			t.Errorf("%s = %d, want %d", c.q, n, c.want)
		}
	}
}

func TestUnknownScenario(t *testing.T) {
	if _, err := bench.Run(t.Context(), bench.Options{Scenarios: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "unknown scenario") {
		t.Fatalf("err = %v", err)
	}
}
