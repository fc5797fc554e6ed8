package main_test

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// crashFigures are the totals reported at the end of the crash test.
type crashFigures struct {
	kills, acked, bytesVerified, violations, orphansLeft int64
}

const (
	crashCycles       = 20
	crashMaxFirmwares = 3
	crashMaxDumps     = 3
)

type crashModel struct {
	id, code string
	chip     string
	bundles  map[string][]byte            // version -> bundle (deterministic per version)
	members  map[string]map[string][]byte // version -> artifact -> bytes
	mu       sync.Mutex
	acked    map[string]int // version -> upload sequence of the last acknowledged upload
	uploadNo map[string]int // version -> uploads sent before its last acknowledged one
	uploads  int            // uploads sent
	deleted  map[string]int // version -> sequence of the last delete request sent
	seq      int
}

type crashDump struct {
	body  []byte
	id    int64 // 0 when not acknowledged
	seq   int
	acked bool
}

type crashDevice struct {
	id, key, secret string
	mu              sync.Mutex
	sent            []*crashDump  // in send order
	deleteAfter     map[int64]int // coredump id -> send index at which a delete was requested
}

// TestCrashConsistency starts `serve` as a subprocess, runs a mixed load (bundle uploads for
// 3 models, core dump uploads from 20 devices, deletions, retention with MAX_FIRMWARES=3 and
// MAX_COREDUMPS=3), SIGKILLs it at a random moment and restarts it, 20 times. Then, after
// the outbox has drained:
//
//   - every row's objects exist: `fsck` must find zero dangling rows, zero size/SHA-256
//     mismatches and zero stuck deletions, with no repair at all (docs/ARCHITECTURE.md, rule 1);
//   - every acknowledged upload (HTTP 2xx) is present with the exact bytes sent, unless a
//     later deletion or retention explains its absence;
//   - `fsck` with the default grace (1h) is clean: no orphan older than the grace period.
//
// Orphans: a SIGKILL between an upload's object write and its commit leaves objects that no
// row owns. That is the documented, expected leftover of a crash (the row never committed, so
// rule 1 holds); such objects are younger than the grace period here. We then run the
// product's documented recovery, `fsck --grace 0s --repair`, and require it to remove them
// and leave a clean `fsck --grace 0s`. The number of such leftovers is logged.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("crash harness skipped in -short")
	}
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		fig := runCrashHarness(t, env)
		t.Logf("FIGURES %s: kills survived %d, operations acknowledged %d, bytes verified %d, invariant violations %d, crash orphans repaired %d",
			env.Name, fig.kills, fig.acked, fig.bytesVerified, fig.violations, fig.orphansLeft)
	})
}

func runCrashHarness(t *testing.T, env *testenv.Env) *crashFigures {
	fig := &crashFigures{}
	base := proctest.Env(env, fmt.Sprintf("MAX_FIRMWARES=%d", crashMaxFirmwares), fmt.Sprintf("MAX_COREDUMPS=%d", crashMaxDumps),
		"COREDUMP_UPLOADS_PER_HOUR=100000", "DECODE_WORKERS=0", "FSCK_INTERVAL=0", "LOG_LEVEL=warn")
	p := proctest.Start(t, base)
	c := &client{t: t, url: p.URL, token: adminToken(t, p)}

	// 3 models (three chips), 8 versions each, built in parallel; a version always has the same bundle.
	chips := []string{"esp32", "esp32c3", "esp32c6"}
	models := make([]*crashModel, len(chips))
	var wg sync.WaitGroup
	for i, chip := range chips {
		code := "crash_" + chip
		m := c.do("POST", "/api/device-models", []byte(fmt.Sprintf(`{"code":%q,"name":%q}`, code, code)), "", 201)
		cm := &crashModel{id: fmt.Sprint(int(m["id"].(float64))), code: code, chip: chip, bundles: map[string][]byte{},
			members: map[string]map[string][]byte{}, acked: map[string]int{}, uploadNo: map[string]int{}, deleted: map[string]int{}}
		models[i] = cm
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := 1; v <= 8; v++ {
				ver := fmt.Sprintf("1.%d.0", v)
				b := bundletest.BuildCase(t, code, chip, bundletest.Options{Version: ver, GitCommit: fmt.Sprintf("%040d", v)})
				cm.bundles[ver] = b
				cm.members[ver] = bundleMembers(t, code, b)
			}
		}()
	}
	wg.Wait()
	devs := make([]*crashDevice, 20)
	for i := range devs {
		m := models[i%len(models)]
		d := c.do("POST", "/api/devices", []byte(fmt.Sprintf(`{"device_model_id":%s,"config":"{}"}`, m.id)), "", 201)
		devs[i] = &crashDevice{id: fmt.Sprint(int(d["id"].(float64))), key: d["key"].(string), secret: d["secret"].(string), deleteAfter: map[int64]int{}}
	}

	httpc := &http.Client{Timeout: 30 * time.Second}
	var (
		acked, errs5xx atomic.Int64
		statusMu       sync.Mutex
		statuses       = map[string]int{}
	)
	count := func(op string, code int) {
		statusMu.Lock()
		statuses[fmt.Sprintf("%s %d", op, code)]++
		statusMu.Unlock()
		if code >= 500 {
			errs5xx.Add(1)
		}
	}
	do := func(url, method, path string, body []byte, auth string) (int, []byte, error) {
		req, _ := http.NewRequest(method, url+path, bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		if method == "POST" && strings.Contains(path, "/firmware") {
			req.Header.Set("Content-Type", "application/zip")
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	admin := "Bearer " + c.token

	for cycle := 0; cycle < crashCycles; cycle++ {
		url := p.URL
		stop := make(chan struct{})
		var lw sync.WaitGroup
		// Firmware uploads, one stream per model, versions in a random order.
		for _, m := range models {
			lw.Add(1)
			go func() {
				defer lw.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ver := fmt.Sprintf("1.%d.0", 1+mrand.IntN(8))
					m.mu.Lock()
					m.seq++
					seq, no := m.seq, m.uploads
					m.uploads++
					m.mu.Unlock()
					code, _, err := do(url, "POST", "/api/device-models/"+m.id+"/firmware", m.bundles[ver], admin)
					if err != nil {
						continue // the kill: not acknowledged
					}
					count("firmware upload", code)
					if code == 200 || code == 201 {
						acked.Add(1)
						m.mu.Lock()
						m.acked[ver] = seq
						m.uploadNo[ver] = no
						m.mu.Unlock()
					}
				}
			}()
		}
		// Core dumps from 20 devices.
		for _, d := range devs {
			lw.Add(1)
			go func() {
				defer lw.Done()
				auth := "Basic " + basic(d.key, d.secret)
				for {
					select {
					case <-stop:
						return
					default:
					}
					body := make([]byte, 512+mrand.IntN(16<<10))
					_, _ = rand.Read(body)
					cd := &crashDump{body: body}
					d.mu.Lock()
					cd.seq = len(d.sent)
					d.sent = append(d.sent, cd)
					d.mu.Unlock()
					code, b, err := do(url, "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.1.0", body, auth)
					if err != nil {
						continue
					}
					count("coredump upload", code)
					if code == 201 {
						var r struct {
							ID int64 `json:"coredump_id"`
						}
						if json.Unmarshal(b, &r) != nil || r.ID == 0 {
							t.Errorf("201 without coredump_id: %s", b)
							continue
						}
						acked.Add(1)
						d.mu.Lock()
						cd.id, cd.acked = r.ID, true
						d.mu.Unlock()
					}
					time.Sleep(time.Duration(20+mrand.IntN(60)) * time.Millisecond)
				}
			}()
		}
		// Deletions: a random acknowledged core dump, or a random firmware version.
		lw.Add(1)
		go func() {
			defer lw.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(30+mrand.IntN(70)) * time.Millisecond):
				}
				if mrand.IntN(3) == 0 {
					m := models[mrand.IntN(len(models))]
					ver := fmt.Sprintf("1.%d.0", 1+mrand.IntN(8))
					m.mu.Lock()
					m.seq++
					m.deleted[ver] = m.seq
					m.mu.Unlock()
					code, _, err := do(url, "DELETE", "/api/device-models/"+m.id+"/firmware-versions/"+ver, nil, admin)
					if err == nil {
						count("firmware delete", code)
						if code == 204 {
							acked.Add(1)
						}
					}
					continue
				}
				d := devs[mrand.IntN(len(devs))]
				d.mu.Lock()
				var id int64
				for i := len(d.sent) - 1; i >= 0; i-- {
					if d.sent[i].acked && mrand.IntN(2) == 0 {
						id = d.sent[i].id
						break
					}
				}
				if id != 0 {
					d.deleteAfter[id] = len(d.sent)
				}
				d.mu.Unlock()
				if id == 0 {
					continue
				}
				code, _, err := do(url, "DELETE", "/api/devices/"+d.id+"/coredumps/"+fmt.Sprint(id), nil, admin)
				if err == nil {
					count("coredump delete", code)
					if code == 204 {
						acked.Add(1)
					}
				}
			}
		}()
		time.Sleep(time.Duration(700+mrand.IntN(1000)) * time.Millisecond)
		p.Kill() // SIGKILL at a random moment of the load
		close(stop)
		lw.Wait()
		fig.kills++
		p = proctest.Start(t, base)
	}
	c.url = p.URL
	fig.acked = acked.Load()

	// The outbox drains after the last restart.
	deadline := time.Now().Add(90 * time.Second)
	for testenv.Count(t, env.DB, "blob_deletions") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox did not drain: %d entries", testenv.Count(t, env.DB, "blob_deletions"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("statuses: %v", statuses)
	if n := errs5xx.Load(); n > 0 {
		t.Errorf("%d responses were 5xx during the load", n)
		fig.violations += n
	}

	// Every acknowledged upload is present with the exact bytes sent, or its absence is
	// explained by a later delete request or by retention.
	for _, m := range models {
		var vs []struct {
			Version string `json:"version"`
		}
		raw := c.do("GET", "/api/device-models/"+m.id+"/firmware-versions", nil, "", 200)
		b, _ := json.Marshal(raw["firmware_versions"])
		if err := json.Unmarshal(b, &vs); err != nil || raw["firmware_versions"] == nil {
			b, _ := json.Marshal(raw)
			t.Fatalf("versions of %s: %v %s", m.code, err, b)
		}
		present := map[string]bool{}
		for _, v := range vs {
			present[v.Version] = true
			for art, want := range m.members[v.Version] {
				got := download(t, p.URL, admin, "/api/device-models/"+m.id+"/firmware-versions/"+v.Version+"/"+art)
				if !bytes.Equal(got, want) {
					t.Errorf("%s %s %s: %d bytes differ from the %d sent", m.code, v.Version, art, len(got), len(want))
					fig.violations++
				}
				fig.bytesVerified += int64(len(got))
			}
		}
		// Retention can only have pruned a version if at least MAX_FIRMWARES uploads were
		// sent after it (later deletions may have shrunk the history since).
		for ver, seq := range m.acked {
			if present[ver] || m.deleted[ver] > seq || m.uploads-1-m.uploadNo[ver] >= crashMaxFirmwares {
				continue
			}
			t.Errorf("acknowledged firmware %s %s is missing and nothing explains it (history %d, %d uploads after it)", m.code, ver, len(vs), m.uploads-1-m.uploadNo[ver])
			fig.violations++
		}
	}
	for _, d := range devs {
		raw := c.do("GET", "/api/devices/"+d.id+"/coredumps", nil, "", 200)
		var list []struct {
			ID     int64  `json:"id"`
			SHA256 string `json:"sha256"`
		}
		b, _ := json.Marshal(raw["coredumps"])
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatal(err)
		}
		bySHA := map[[32]byte]int{}
		for i, s := range d.sent {
			bySHA[sha256.Sum256(s.body)] = i
		}
		listed := map[int]int64{} // send index -> listed id
		for _, x := range list {
			got := download(t, p.URL, admin, fmt.Sprintf("/api/devices/%s/coredumps/%d/download", d.id, x.ID))
			i, ok := bySHA[sha256.Sum256(got)]
			if !ok {
				t.Errorf("device %s dump %d: %d bytes that were never sent", d.key, x.ID, len(got))
				fig.violations++
				continue
			}
			fig.bytesVerified += int64(len(got))
			listed[i] = x.ID
		}
		for i, s := range d.sent {
			if !s.acked {
				continue
			}
			if id, ok := listed[i]; ok {
				if id != s.id {
					t.Errorf("device %s: acknowledged dump %d is listed as %d", d.key, s.id, id)
					fig.violations++
				}
				continue
			}
			if _, del := d.deleteAfter[s.id]; del {
				continue
			}
			// Retention prunes a dump only when MAX_COREDUMPS newer ones were uploaded
			// (later deletions may have shrunk the list since).
			if len(d.sent)-1-i >= crashMaxDumps {
				continue
			}
			t.Errorf("device %s: acknowledged dump %d (upload #%d) is missing; listed %d dumps", d.key, s.id, i, len(list))
			fig.violations++
		}
	}

	// fsck: no dangling rows, mismatches or stuck deletions without any repair; with the
	// default grace, no orphans either.
	if err := p.Stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	rep := runFsck(t, base, 0, "--json")
	for _, k := range []string{"dangling", "size_mismatch", "sha256_mismatch", "stuck_outbox"} {
		if rep.Counts[k] != 0 {
			t.Errorf("fsck --grace 0s: %d %s: %s", rep.Counts[k], k, rep.raw)
			fig.violations += int64(rep.Counts[k])
		}
	}
	fig.orphansLeft = int64(rep.Counts["orphan"])
	if r := runFsck(t, base, 0, "--json", "--grace", "1h"); r.Remaining != 0 || r.code != 0 {
		t.Errorf("fsck (grace 1h) not clean: exit %d %s", r.code, r.raw)
		fig.violations += int64(r.Remaining)
	}
	if r := runFsck(t, base, 0, "--json", "--grace", "0s", "--repair"); r.Remaining != 0 || r.code != 0 {
		t.Errorf("fsck --repair left problems: exit %d %s", r.code, r.raw)
	}
	if r := runFsck(t, base, 0, "--json", "--grace", "0s"); r.Remaining != 0 || r.code != 0 {
		t.Errorf("fsck after repair not clean: exit %d %s", r.code, r.raw)
	}
	return fig
}

type fsckOut struct {
	Counts    map[string]int `json:"counts"`
	Remaining int            `json:"remaining"`
	Objects   int            `json:"objects"`
	code      int
	raw       string
}

func runFsck(t *testing.T, environ []string, _ int, args ...string) fsckOut {
	t.Helper()
	if len(args) == 1 {
		args = append(args, "--grace", "0s")
	}
	out, errOut, code := proctest.Run(t, environ, append([]string{"fsck"}, args...)...)
	var r fsckOut
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("fsck %v: exit %d: %v\n%s%s", args, code, err, out, errOut)
	}
	r.code, r.raw = code, out
	return r
}

func basic(user, pass string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func download(t *testing.T, base, auth, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", path, resp.StatusCode, err, b)
	}
	return b
}

// bundleMembers maps a bundle's ZIP members to the stored artifact names.
func bundleMembers(t *testing.T, code string, b []byte) map[string][]byte {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Error(err)
		return nil
	}
	names := map[string]string{code + ".bin": "firmware.bin", code + ".elf": "firmware.elf", code + ".map": "firmware.map",
		"sdkconfig": "sdkconfig", "version.json": "version.json"}
	out := map[string][]byte{}
	for _, f := range zr.File {
		art, ok := names[f.Name]
		if !ok {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Error(err)
			return nil
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		out[art] = data
	}
	return out
}
