// Package bench is `iotsupport bench`: named load scenarios against a running
// server (started as a child `serve` process unless a URL is given), each
// measured next to a baseline in the same run — a constant HTTP handler, or
// the same work done straight through the db and blob packages — so the
// ratio shows the service's own overhead. It also samples the child's RSS
// from /proc.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/notify"
)

// Scenarios lists the scenario names in run order.
var Scenarios = []string{"checkin", "download", "ranged", "ingest", "bundle", "decode", "console"}

// defaultConcurrency per scenario when Options.Concurrency is 0.
var defaultConcurrency = map[string]int{"checkin": 32, "download": 50, "ranged": 16, "ingest": 32, "bundle": 2, "decode": 1, "console": 1}

// Options configure a run.
type Options struct {
	// URL of a running server; empty starts a child `serve` on a temp dir.
	URL, Token, DeviceKey, DeviceSecret string
	// Scenarios to run (default: all).
	Scenarios []string
	// Duration of each measured run (server and baseline each).
	Duration time.Duration
	// Requests bounds each run's operation count (0: only Duration).
	Requests int64
	// Concurrency overrides every scenario's default (0: defaults).
	Concurrency int
	// IngestDevices is how many devices the ingest clients upload for, in turn (0: DefaultIngestDevices).
	// As few as the concurrency makes every device crash-loop: retention then deletes a
	// dump per upload and the upload log grows by hundreds per device.
	IngestDevices int
	// Testdata is the shared test data directory (esp-coredump/<case>/app.elf).
	Testdata string
	// Env is added to the child's environment and to the configuration the
	// baselines open the database and store with (DATABASE_URL, STORAGE_*, S3_*).
	Env []string
	// Exe is the iotsupport binary (default: os.Executable()).
	Exe string
	// ProfileDir, when set and the server is started here, receives a CPU
	// and a heap profile of the server for each scenario (<scenario>.cpu.pprof).
	ProfileDir string
	// Log receives progress lines (nil: none).
	Log io.Writer
	// KeepDirty skips the sync(2) before every round (see settle).
	KeepDirty bool
}

// Result is one row of the report.
type Result struct {
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	Server      Stats   `json:"server"`
	Baseline    *Stats  `json:"baseline,omitempty"`
	Ratio       float64 `json:"ratio,omitempty"`
	// Other baselines measured in the same rounds, for comparison (the ratio above is the
	// one the targets are stated against).
	Other []OtherBaseline `json:"other_baselines,omitempty"`
	// PeakRSS of the server process during the run (0 when it was not started here).
	PeakRSS int64  `json:"peak_rss_bytes"`
	Note    string `json:"note,omitempty"`
}

// OtherBaseline is a further baseline of a scenario.
type OtherBaseline struct {
	Name     string  `json:"name"`
	Baseline Stats   `json:"baseline"`
	Ratio    float64 `json:"ratio,omitempty"`
}

// Report is the whole run.
type Report struct {
	Started   time.Time `json:"started"`
	Machine   string    `json:"machine"`
	Database  string    `json:"database"`
	Storage   string    `json:"storage"`
	IdleRSS   int64     `json:"idle_rss_bytes"`
	ServerHWM int64     `json:"server_vm_hwm_bytes"`
	// SyncedRounds counts the rounds that started with sync(2) (none with KeepDirty).
	SyncedRounds int      `json:"synced_rounds"`
	Results      []Result `json:"results"`
}

// env is the benchmark's view of the server's settings.
type env struct {
	vars map[string]string
}

func (e env) lookup(k string) (string, bool) {
	if v, ok := e.vars[k]; ok {
		return v, true
	}
	return os.LookupEnv(k)
}

// runner holds a run's shared state.
type runner struct {
	opts  Options
	rep   *Report
	api   *api
	hc    *http.Client
	child *child
	cfg   *config.Config
	db    *db.DB
	store blob.Store
	// svc is the service graph over db and store (app.Assemble): baselines write through
	// the tables' owners.
	svc    *app.Services
	fx     *fixtures
	logf   func(format string, args ...any)
	tmpDir string
	runID  string // suffix of the model codes, so a database can be reused
	pprof  string // base URL of the child's pprof listener
}

// Run runs the selected scenarios and returns the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Duration <= 0 {
		opts.Duration = 20 * time.Second
	}
	if len(opts.Scenarios) == 0 {
		opts.Scenarios = Scenarios
	}
	for _, s := range opts.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	if opts.Testdata == "" {
		opts.Testdata = filepath.Join("..", "shared", "testdata")
	}
	if _, err := os.Stat(testELF(opts.Testdata, "esp32")); err != nil {
		return nil, fmt.Errorf("test data not found (set --testdata): %w", err)
	}
	r := &runner{opts: opts, rep: &Report{Started: time.Now().UTC(), Machine: machine()}, runID: fmt.Sprintf("%x", time.Now().Unix()&0xffffff)}
	r.logf = func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}
	defer r.close()
	maxConc := 64
	r.hc = &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}, Timeout: 5 * time.Minute}

	vars := map[string]string{}
	for _, kv := range opts.Env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	if opts.URL == "" {
		dir, err := os.MkdirTemp("", "iotsupport-bench-")
		if err != nil {
			return nil, err
		}
		r.tmpDir = dir
		if v, _ := (env{vars}).lookup("DATABASE_URL"); v == "" {
			vars["DATABASE_URL"] = "sqlite:" + filepath.Join(dir, "iotsupport.db")
		}
		if b, _ := (env{vars}).lookup("STORAGE_BACKEND"); b != "s3" {
			vars["STORAGE_BACKEND"] = "local"
			vars["STORAGE_DIR"] = filepath.Join(dir, "blobs")
		}
		// Many devices upload from one host at a high rate: lift the per-device guards.
		vars["COREDUMP_UPLOADS_PER_HOUR"] = "100000"
		vars["DEVICE_AUTH_FAILURES_PER_MINUTE"] = "100000"
		vars["MAX_FIRMWARES"] = "3"
		vars["TEMP_DIR"] = dir
		exe := opts.Exe
		if exe == "" {
			var err error
			if exe, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		var childEnv []string
		if opts.ProfileDir != "" {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			childEnv = append(childEnv, "IOTSUPPORT_PPROF_ADDR="+addr)
			r.pprof = "http://" + addr
			if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
				return nil, err
			}
		}
		for k, v := range vars {
			childEnv = append(childEnv, k+"="+v)
		}
		r.logf("starting %s serve (%s, %s)", exe, scheme(vars["DATABASE_URL"]), backendOf(env{vars}))
		c, err := startChild(ctx, exe, childEnv, dir)
		if err != nil {
			return nil, err
		}
		r.child = c
		tok, err := createToken(ctx, exe, childEnv, dir)
		if err != nil {
			return nil, err
		}
		opts.URL, opts.Token = c.url, tok
		time.Sleep(2 * time.Second) // let start-up garbage settle before the idle sample
		r.rep.IdleRSS, _, _ = procStatus(c.pid())
	}
	cfg, err := config.Load(env{vars}.lookup)
	if err == nil && (r.child != nil || vars["DATABASE_URL"] != "") {
		r.cfg = cfg
		r.rep.Database = scheme(cfg.DatabaseURL)
		r.rep.Storage = cfg.StorageBackend
		if r.db, err = db.OpenWith(ctx, cfg.DatabaseURL, db.Options{MaxConns: cfg.DatabaseMaxConns}); err != nil {
			return nil, fmt.Errorf("baseline database: %w", err)
		}
		if r.store, err = app.OpenStore(ctx, cfg); err != nil {
			return nil, fmt.Errorf("baseline store: %w", err)
		}
		if r.svc, err = app.Assemble(cfg, slog.New(slog.DiscardHandler), r.db, r.store, notify.Nop{}, nil); err != nil {
			return nil, fmt.Errorf("baseline services: %w", err)
		}
	} else {
		r.logf("no --database-url/storage settings for %s: baselines that read the db or store are skipped", opts.URL)
	}
	r.opts = opts
	r.api = &api{base: strings.TrimRight(opts.URL, "/"), token: opts.Token, hc: r.hc}

	need := func(names ...string) bool {
		for _, n := range names {
			if slices.Contains(opts.Scenarios, n) {
				return true
			}
		}
		return false
	}
	if need("checkin", "download", "ranged", "ingest", "bundle") {
		conc := maxConc
		if opts.Concurrency > 0 {
			conc = min(opts.Concurrency, maxConc)
		}
		if r.fx, err = r.setup(ctx, conc, need); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	for _, s := range Scenarios {
		if !slices.Contains(opts.Scenarios, s) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return r.rep, err
		}
		r.logf("scenario %s", s)
		var res []Result
		switch s {
		case "checkin":
			res, err = r.checkin(ctx)
		case "download":
			res, err = r.download(ctx)
		case "ranged":
			res, err = r.ranged(ctx)
		case "ingest":
			res, err = r.ingest(ctx)
		case "bundle":
			res, err = r.bundle(ctx)
		case "decode":
			res, err = r.decode(ctx)
		case "console":
			res, err = r.console(ctx)
		}
		if err != nil {
			return r.rep, fmt.Errorf("scenario %s: %w", s, err)
		}
		for _, x := range res {
			if x.Baseline != nil {
				x.Ratio = ratio(x.Server, *x.Baseline)
			}
			for i := range x.Other {
				x.Other[i].Ratio = ratio(x.Server, x.Other[i].Baseline)
			}
			r.rep.Results = append(r.rep.Results, x)
		}
	}
	if r.child != nil {
		_, r.rep.ServerHWM, _ = procStatus(r.child.pid())
	}
	return r.rep, nil
}

// ratio is server throughput over baseline throughput (0 when the baseline failed).
func ratio(srv, base Stats) float64 {
	if base.PerSecond > 0 && base.Errors < base.Requests {
		return srv.PerSecond / base.PerSecond
	}
	return 0
}

func (r *runner) close() {
	if r.child != nil {
		r.child.stop()
	}
	if r.db != nil {
		r.db.Close()
	}
	if r.tmpDir != "" {
		_ = os.RemoveAll(r.tmpDir)
	}
}

func (r *runner) concurrency(s string) int {
	if r.opts.Concurrency > 0 {
		return r.opts.Concurrency
	}
	return defaultConcurrency[s]
}

// rounds is how many alternating server/baseline rounds compareAll runs.
const rounds = 2

// compare measures srv (requests to the server) and base (the baseline; nil
// for none) in alternating rounds of Duration/rounds each — S B S B — so a
// change of machine load during the run affects both alike. It samples the
// server's RSS during the server rounds and, with ProfileDir, profiles the
// first one as name.
func (r *runner) compare(ctx context.Context, name string, conc int, srv, base op) (Stats, *Stats, int64) {
	var bases []op
	if base != nil {
		bases = []op{base}
	}
	st, bs, peak := r.compareAll(ctx, name, conc, srv, bases...)
	if len(bs) == 0 {
		return st, nil, peak
	}
	return st, &bs[0], peak
}

// settle writes the machine's dirty page cache back to disk (sync(2)) before a round.
// The object store and the database may share a disk with gigabytes of page cache:
// without it, a round that pushes the dirty data over the kernel's background threshold
// pays for writing back what earlier rounds (the server's or a baseline's) wrote, and
// every fsync of its commits waits behind that (ingest p99 ~120 ms against ~60 ms on
// the development machine, always in the same round).
func (r *runner) settle() {
	if !r.opts.KeepDirty {
		syscall.Sync()
		r.rep.SyncedRounds++
	}
}

// compareAll measures the server and each baseline in alternating rounds (server, each
// baseline in turn, server, ...), each for Duration/rounds.
func (r *runner) compareAll(ctx context.Context, name string, conc int, srv op, bases ...op) (Stats, []Stats, int64) {
	pid := 0
	if r.child != nil {
		pid = r.child.pid()
	}
	d := max(r.opts.Duration/rounds, 250*time.Millisecond)
	maxOps := r.opts.Requests
	if maxOps > 0 {
		maxOps = max(1, maxOps/rounds)
	}
	var srvParts []sample
	baseParts := make([][]sample, len(bases))
	var peak int64
	for i := range rounds {
		r.settle()
		s := sampleRSS(pid)
		var wg sync.WaitGroup
		if r.pprof != "" && i == 0 {
			secs := max(1, int(d/time.Second)-1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.fetchProfile(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), name+".cpu.pprof")
			}()
		}
		srvParts = append(srvParts, run(ctx, conc, d, maxOps, srv))
		wg.Wait()
		peak = max(peak, s.Peak())
		if r.pprof != "" && i == 0 {
			r.fetchProfile(ctx, "/debug/pprof/heap", name+".heap.pprof")
		}
		for j, base := range bases {
			r.settle()
			baseParts[j] = append(baseParts[j], run(ctx, conc, d, maxOps, base))
		}
	}
	out := make([]Stats, len(bases))
	for j := range bases {
		out[j] = summarize(baseParts[j]...)
	}
	return summarize(srvParts...), out, peak
}

func (r *runner) fetchProfile(ctx context.Context, path, file string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.pprof+path, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.logf("profile %s: %v", file, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode == http.StatusOK {
		err = os.WriteFile(filepath.Join(r.opts.ProfileDir, file), b, 0o644)
	}
	if err != nil {
		r.logf("profile %s: %v", file, err)
	}
}

func createToken(ctx context.Context, exe string, env []string, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, exe, "token", "create", "--name", fmt.Sprintf("bench-%d", time.Now().UnixNano()), "--role", "admin")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("token create: %w: %s", err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if tok == "" || strings.ContainsAny(tok, " \n") {
		return "", errors.New("token create printed no token")
	}
	return tok, nil
}

func scheme(dsn string) string {
	if s, _, ok := strings.Cut(dsn, ":"); ok {
		if s == "postgresql" {
			return "postgres"
		}
		return s
	}
	return dsn
}

func backendOf(e env) string {
	if b, _ := e.lookup("STORAGE_BACKEND"); b == "s3" {
		return "s3"
	}
	return "local"
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]); len(f) >= 2 {
			mem = f[1] + " kB RAM"
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = "load " + strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%s, %d CPUs, %s, %s", model, numCPU(), mem, load)
}
