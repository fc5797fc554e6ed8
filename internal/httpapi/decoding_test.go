package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/elfsym"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/jobs"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// caseDump reads a test case's dump (UART base64 text) and its expected crashed task.
func caseDump(t *testing.T, name string) (dump []byte, tcb uint64, task string) {
	t.Helper()
	dir := filepath.Dir(espimagetest.ELFPath(t, name))
	dump, err := os.ReadFile(filepath.Join(dir, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	exp, err := os.ReadFile(filepath.Join(dir, "expected_output"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Crashed task handle: 0x([0-9a-f]+), name: '([^']*)'`).FindSubmatch(exp)
	if m == nil {
		t.Fatalf("%s: no crashed task line in expected_output", name)
	}
	tcb, _ = strconv.ParseUint(string(m[1]), 16, 64)
	return dump, tcb, string(m[2])
}

func uploadDump(t *testing.T, s *apitest.Server, key, secret string, dump []byte, chip, version string) int {
	t.Helper()
	r := s.Basic(key, secret).Expect(201, "POST", "/api/iot/coredump?chip="+chip+"&firmware_version="+version, dump)
	return int(r.Map(t)["coredump_id"].(float64))
}

func waitStatus(t *testing.T, s *apitest.Server, deviceID, id int, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		d := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", deviceID, id), nil).Map(t)
		if d["parse_status"] == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("core dump %d: status %v (%v), want %s", id, d["parse_status"], d["parse_error"], want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func deviceIDByKey(t *testing.T, s *apitest.Server, key string) int {
	for _, d := range s.Expect(200, "GET", "/api/devices", nil).Map(t)["devices"].([]any) {
		if d.(map[string]any)["key"] == key {
			return int(d.(map[string]any)["id"].(float64))
		}
	}
	t.Fatalf("device %s not listed", key)
	return 0
}

func startWorkers(t *testing.T, s *apitest.Server) {
	t.Helper()
	stop, err := s.App.StartBackground(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

var chipOf = map[string]string{"esp32": "esp32", "esp32_bin": "esp32", "esp32c3": "esp32c3", "esp32c3_bin": "esp32c3", "esp32c6": "esp32c6"}

func TestEveryTestDumpDecodesEndToEnd(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		startWorkers(t, s)
		for _, tc := range espimagetest.Cases {
			code := "m_" + tc
			mid := newModel(t, s, code)
			key, secret := newDevice(t, s, mid)
			s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, code, tc, bundletest.Options{Version: "1.0.0"}))
			dump, tcb, task := caseDump(t, tc)
			id := uploadDump(t, s, key, secret, dump, chipOf[tc], "1.0.0")
			d := waitStatus(t, s, deviceIDByKey(t, s, key), id, "PARSED")
			var rep espcore.Report
			b, _ := json.Marshal(d["report"])
			if err := json.Unmarshal(b, &rep); err != nil || rep.CrashedTask == nil {
				t.Fatalf("%s: report %s: %v", tc, b, err)
			}
			if uint64(rep.CrashedTask.TCB) != tcb || rep.CrashedTask.Name != task {
				t.Fatalf("%s: crashed task %#x %q, want %#x %q", tc, rep.CrashedTask.TCB, rep.CrashedTask.Name, tcb, task)
			}
			// The first frames equal what the decoder gives for the same dump and ELF directly.
			ix, err := elfsym.New(bytesReader(t, espimagetest.ELFPath(t, tc)))
			if err != nil {
				t.Fatal(err)
			}
			direct, err := espcore.Decode(dump, ix, espcore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			crashed := func(r *espcore.Report) espcore.Thread {
				for _, th := range r.Threads {
					if th.Crashed {
						return th
					}
				}
				return r.Threads[0]
			}
			got, want := crashed(&rep), crashed(direct)
			if len(got.Frames) == 0 || len(got.Frames) != len(want.Frames) {
				t.Fatalf("%s: %d frames, want %d", tc, len(got.Frames), len(want.Frames))
			}
			for i := 0; i < 3 && i < len(want.Frames); i++ {
				if got.Frames[i].PC != want.Frames[i].PC || got.Frames[i].Function != want.Frames[i].Function {
					t.Fatalf("%s frame %d: %+v, want %+v", tc, i, got.Frames[i], want.Frames[i])
				}
			}
			if out, _ := d["parsed_output"].(string); !strings.Contains(out, task) {
				t.Fatalf("%s: text report lacks the task name", tc)
			}
		}
	})
}

func bytesReader(t *testing.T, p string) *strings.Reader {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReader(string(b))
}

func TestLateFirmwareRequeuesWaitingDumps(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		startWorkers(t, s)
		mid := newModel(t, s, "lamp")
		key, secret := newDevice(t, s, mid)
		did := deviceIDByKey(t, s, key)
		dump, _, task := caseDump(t, "esp32c3")
		// The device reports a version that differs from the build's; the SHA prefix finds it anyway.
		id := uploadDump(t, s, key, secret, dump, "esp32c3", "9.9.9")
		d := waitStatus(t, s, did, id, "ERROR")
		if d["parse_error"] != "no_firmware" {
			t.Fatalf("before firmware: %v", d["parse_error"])
		}
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "2.0.0"}))
		d = waitStatus(t, s, did, id, "PARSED")
		if out := d["parsed_output"].(string); !strings.Contains(out, task) || !strings.Contains(out, "reported firmware 9.9.9") {
			t.Fatalf("report after late firmware: %.300s", out)
		}
		// Re-parse through the API: back to PENDING, then PARSED again.
		s.Role("viewer").Expect(403, "POST", fmt.Sprintf("/api/devices/%d/coredumps/%d/reparse", did, id), nil)
		s.Role("editor").Expect(202, "POST", fmt.Sprintf("/api/devices/%d/coredumps/%d/reparse", did, id), nil)
		waitStatus(t, s, did, id, "PARSED")
		s.Expect(404, "POST", fmt.Sprintf("/api/devices/%d/coredumps/%d/reparse", did, id+1000), nil)
	})
}

func TestSidecarDecoder(t *testing.T) {
	var calls, failFirst atomic.Int32
	var hang atomic.Bool
	xfer := t.TempDir()
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if hang.Load() {
			<-r.Context().Done()
			return
		}
		if n <= failFirst.Load() {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		q := r.URL.Query()
		if !regexp.MustCompile(`^coredump_\d+\.dmp$`).MatchString(q.Get("core")) || !regexp.MustCompile(`^coredump_\d+\.elf$`).MatchString(q.Get("elf")) {
			http.Error(w, "bad names", http.StatusBadRequest)
			return
		}
		dump, err1 := os.ReadFile(filepath.Join(xfer, q.Get("core")))
		elfBytes, err2 := os.ReadFile(filepath.Join(xfer, q.Get("elf")))
		if err1 != nil || err2 != nil {
			http.Error(w, "missing transfer files", http.StatusInternalServerError)
			return
		}
		ix, err := elfsym.New(strings.NewReader(string(elfBytes)))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		rep, err := espcore.Decode(dump, ix, espcore.Options{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"output": "SIDECAR " + q.Get("chip") + "\n" + rep.Text()})
	}))
	defer sidecar.Close()

	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env, "DECODER", "sidecar", "PARSE_SIDECAR_URL", sidecar.URL, "PARSE_SIDECAR_XFER_DIR", xfer,
		"PARSE_SIDECAR_TIMEOUT", "1s", "DECODE_TIMEOUT", "20s")
	startWorkers(t, s)
	mid := newModel(t, s, "lamp")
	key, secret := newDevice(t, s, mid)
	did := deviceIDByKey(t, s, key)
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32", bundletest.Options{Version: "1.0.0"}))
	dump, _, task := caseDump(t, "esp32")

	// Fails twice, then answers: PARSED with the sidecar's text.
	failFirst.Store(2)
	id := uploadDump(t, s, key, secret, dump, "esp32", "1.0.0")
	d := waitStatus(t, s, did, id, "PARSED")
	if out := d["parsed_output"].(string); !strings.HasPrefix(out, "SIDECAR esp32\n") || !strings.Contains(out, task) {
		t.Fatalf("sidecar output: %.200s", out)
	}
	if calls.Load() != 3 {
		t.Fatalf("sidecar calls %d, want 3", calls.Load())
	}
	// Transfer files are removed.
	if left, _ := os.ReadDir(xfer); len(left) != 0 {
		t.Fatalf("transfer files left: %v", left)
	}
	// A sidecar that never answers: each request times out, the job retries, and on its
	// last attempt the dump ends in ERROR (here: attempts exhausted quickly by a short run).
	hang.Store(true)
	id2 := uploadDump(t, s, key, secret, dump, "esp32", "1.0.0")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var status string
		_ = env.DB.QueryRowContext(context.Background(), `SELECT parse_status FROM coredumps WHERE id = $1`, id2).Scan(&status)
		if status != "PENDING" {
			t.Fatalf("hanging sidecar: status %s before retries were exhausted", status)
		}
		var attempts int
		_ = env.DB.QueryRowContext(context.Background(), `SELECT COALESCE(MAX(attempt), 0) FROM river_job`).Scan(&attempts)
		if attempts >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Stop the background retries, then run the job's last attempt (run here directly rather than waiting out the backoff)
	// turns the still-failing sidecar into a permanent ERROR.
	if err := s.App.Jobs.StopAndCancel(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := decoding.NewWorker(s.App.Decoding)
	last := &river.Job[jobs.DecodeArgs]{JobRow: &rivertype.JobRow{Attempt: 8, MaxAttempts: 8}, Args: jobs.DecodeArgs{CoredumpID: int64(id2)}}
	if err := w.Work(context.Background(), last); err != nil {
		t.Fatalf("last attempt: %v", err)
	}
	d = s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", did, id2), nil).Map(t)
	if d["parse_status"] != "ERROR" || d["parse_error"] != "decoder_failed" {
		t.Fatalf("%v", d)
	}
	if left, _ := os.ReadDir(xfer); len(left) != 0 {
		t.Fatalf("transfer files left after failures: %v", left)
	}
}

func TestStalePendingDumpsAreRequeued(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	mid := newModel(t, s, "lamp")
	key, secret := newDevice(t, s, mid)
	dump, _, _ := caseDump(t, "esp32c3")
	id := uploadDump(t, s, key, secret, dump, "esp32c3", "1.0.0")
	ctx := context.Background()
	if n, err := s.App.Coredumps.SweepStale(ctx, 30*time.Minute); err != nil || n != 0 {
		t.Fatalf("fresh dump swept: %d %v", n, err)
	}
	// Its job is gone (e.g. discarded after a crash in the last attempts) and it is old.
	testenv.MustExec(t, env.DB, `DELETE FROM river_job`)
	testenv.MustExec(t, env.DB, `UPDATE coredumps SET updated_at = $1 WHERE id = $2`, time.Now().UTC().Add(-time.Hour), id)
	if n, err := s.App.Coredumps.SweepStale(ctx, 30*time.Minute); err != nil || n != 1 {
		t.Fatalf("stale dump not re-queued: %d %v", n, err)
	}
	if n := testenv.Count(t, env.DB, "river_job"); n != 1 {
		t.Fatalf("jobs after sweep: %d", n)
	}
	startWorkers(t, s)
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}))
	waitStatus(t, s, deviceIDByKey(t, s, key), id, "PARSED")
}

// TestShutdownOnLastAttemptKeepsDumpQueued: a decode cancelled by shutdown (not by its own
// DECODE_TIMEOUT) is snoozed back into the queue without using an attempt, even on its last
// attempt, where any failure would otherwise end the dump in ERROR.
func TestShutdownOnLastAttemptKeepsDumpQueued(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	s := apitest.Start(t, env)
	mid := newModel(t, s, "lamp")
	key, secret := newDevice(t, s, mid)
	did := deviceIDByKey(t, s, key)
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}))
	dump, _, _ := caseDump(t, "esp32c3")
	id := uploadDump(t, s, key, secret, dump, "esp32c3", "1.0.0")
	w := decoding.NewWorker(s.App.Decoding)
	last := &river.Job[jobs.DecodeArgs]{JobRow: &rivertype.JobRow{Attempt: 8, MaxAttempts: 8}, Args: jobs.DecodeArgs{CoredumpID: int64(id)}}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // what River's StopAndCancel does to running jobs
	err := w.Work(ctx, last)
	var snooze *river.JobSnoozeError
	if !errors.As(err, &snooze) || snooze.Duration != 0 {
		t.Fatalf("cancelled last attempt returned %v, want JobSnooze(0)", err)
	}
	if d := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", did, id), nil).Map(t); d["parse_status"] != "PENDING" {
		t.Fatalf("after a shutdown on the last attempt: %v %v, want PENDING", d["parse_status"], d["parse_error"])
	}

	// Its own timeout on the last attempt still ends in ERROR/timeout.
	tctx, tcancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer tcancel()
	<-tctx.Done()
	if err := w.Work(tctx, last); err != nil {
		t.Fatalf("timed-out last attempt: %v", err)
	}
	if d := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", did, id), nil).Map(t); d["parse_status"] != "ERROR" || d["parse_error"] != "timeout" {
		t.Fatalf("after its own timeout on the last attempt: %v %v, want ERROR timeout", d["parse_status"], d["parse_error"])
	}
}
