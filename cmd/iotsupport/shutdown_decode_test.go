package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestShutdownDuringDecode: SIGTERM while decode jobs run (a sidecar decoder the test
// controls). A decode that finishes within SHUTDOWN_TIMEOUT is recorded before the process
// exits; one that does not is cancelled and goes back to the queue: its dump stays PENDING
// (not ERROR) and the next server decodes it.
func TestShutdownDuringDecode(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		var mode atomic.Int32 // 0: hold until released or cancelled, 1: answer at once
		release := make(chan struct{})
		got := make(chan struct{}, 10)
		sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- struct{}{}
			if mode.Load() == 0 {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"output": "SIDECAR OK"})
		}))
		defer sidecar.Close()
		base := proctest.Env(env, "DECODE_WORKERS=1", "FSCK_INTERVAL=0", "DECODER=sidecar", "PARSE_SIDECAR_URL="+sidecar.URL,
			"PARSE_SIDECAR_XFER_DIR="+t.TempDir(), "PARSE_SIDECAR_TIMEOUT=60s", "DECODE_TIMEOUT=120s", "SHUTDOWN_TIMEOUT=3s")
		p := proctest.Start(t, base)
		c := &client{t: t, url: p.URL, token: adminToken(t, p)}
		seed(t, c, 0) // model 1 with firmware 1.0.0
		d := c.do("POST", "/api/devices", []byte(`{"device_model_id":1,"config":"{}"}`), "", 201)
		did := int(d["id"].(float64))
		req, _ := http.NewRequest("POST", "", nil)
		req.SetBasicAuth(d["key"].(string), d["secret"].(string))
		devAuth := req.Header.Get("Authorization")
		// A real dump: a body that is none ends corrupt without asking the decoder.
		dump, err := os.ReadFile(filepath.Join(filepath.Dir(espimagetest.ELFPath(t, "esp32c3")), "coredump.b64"))
		if err != nil {
			t.Fatal(err)
		}
		upload := func() int {
			r := c.do("POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", dump, devAuth, 201)
			return int(r["coredump_id"].(float64))
		}
		status := func(id int) string {
			return c.do("GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", did, id), nil, "", 200)["parse_status"].(string)
		}
		waitCall := func() {
			t.Helper()
			select {
			case <-got:
			case <-time.After(60 * time.Second):
				t.Fatal("the decoder was never called")
			}
		}

		// 1. The decoder answers 1 s after SIGTERM, within SHUTDOWN_TIMEOUT: recorded as PARSED.
		first := upload()
		waitCall()
		stopped := make(chan error, 1)
		go func() { stopped <- p.Stop(30 * time.Second) }()
		time.Sleep(time.Second)
		close(release)
		if err := <-stopped; err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
		var st string
		if err := env.DB.QueryRow(`SELECT parse_status FROM coredumps WHERE id = $1`, first).Scan(&st); err != nil || st != "PARSED" {
			t.Fatalf("decode finishing during shutdown: status %q %v, want PARSED", st, err)
		}

		// 2. The decoder never answers: cut off at SHUTDOWN_TIMEOUT, back to the queue.
		release = make(chan struct{})
		p = proctest.Start(t, base)
		c.url = p.URL
		second := upload()
		waitCall()
		sigterm := time.Now()
		if err := p.Stop(30 * time.Second); err != nil {
			t.Fatalf("exit with a decode running: %v", err)
		}
		took := time.Since(sigterm)
		if err := env.DB.QueryRow(`SELECT parse_status FROM coredumps WHERE id = $1`, second).Scan(&st); err != nil || st != "PENDING" {
			t.Fatalf("decode cancelled by shutdown: status %q %v, want PENDING", st, err)
		}
		var jobs int
		if err := env.DB.QueryRow(`SELECT COUNT(*) FROM river_job WHERE state IN ('available', 'retryable', 'scheduled')`).Scan(&jobs); err != nil || jobs != 1 {
			t.Fatalf("queued decode jobs after the cancelled one: %d %v, want 1", jobs, err)
		}
		mode.Store(1)
		p = proctest.Start(t, base)
		c.url = p.URL
		deadline := time.Now().Add(90 * time.Second)
		for status(second) != "PARSED" {
			if time.Now().After(deadline) {
				t.Fatalf("cancelled decode not redone after restart: %s", status(second))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("decode cut off %v after SIGTERM (SHUTDOWN_TIMEOUT=3s), PENDING, decoded after the restart", took.Round(time.Millisecond))
	})
}
