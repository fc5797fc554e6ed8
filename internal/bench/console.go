package bench

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/fleet"
)

// Console fleet size: the "10 000 devices and 100 000 dumps".
const (
	consoleDevices = 10000
	consoleDumps   = 100000
)

// consoleFleet is what the console scenario seeded.
type consoleFleet struct {
	model, device, dump int64
}

// seedConsole writes a model with consoleDevices devices and consoleDumps decoded dumps
// spread over the last 30 days, through the owners (devices.CreateDevices,
// coredumps.WriteUploadRowsTx and RecordResult), in batches. One dump gets a real
// decoded report (the esp32c3 test case) for the core dump page.
func (r *runner) seedConsole(ctx context.Context) (*consoleFleet, error) {
	m, err := r.svc.Devices.CreateModel(ctx, devices.ModelInput{Code: "bench_console_" + r.runID, Name: ptr("bench console")})
	if err != nil {
		return nil, err
	}
	var ids []int64
	for len(ids) < consoleDevices {
		err := r.svc.Devices.CreateDevices(ctx, m.ID, min(1000, consoleDevices-len(ids)), "{}", func(devs []devices.NewDevice) error {
			for _, d := range devs {
				ids = append(ids, d.Device.ID)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("seed devices: %w", err)
		}
	}
	dump, err := readCoredump(r.opts.Testdata, "esp32c3")
	if err != nil {
		return nil, err
	}
	h := coredumps.Inspect(dump)
	now := time.Now().UTC()
	const batch = 2000
	var last int64
	for done := 0; done < consoleDumps; done += batch {
		err := r.db.Tx(ctx, func(tx *sql.Tx) error {
			for i := done; i < min(done+batch, consoleDumps); i++ {
				at := now.Add(-time.Duration(i) * (30 * 24 * time.Hour / consoleDumps)) // (i × 30 d overflows int64)
				r.svc.Coredumps.SetClock(func() time.Time { return at })
				id, err := r.svc.Coredumps.WriteUploadRowsTx(ctx, tx, ids[i%len(ids)], "esp32c3", "1.0.0", dump, h, false)
				if err != nil {
					return err
				}
				// and the fleet view's rows a real upload writes with it (the overview counts those)
				if err := r.db.Batch(ctx, tx, fleet.Dumps{}.DumpQueries(ids[i%len(ids)], "1.0.0", at)...); err != nil {
					return err
				}
				if err := r.svc.Coredumps.RecordResult(ctx, tx, id, coredumps.Result{Status: coredumps.StatusParsed, Output: "bench"}); err != nil {
					return err
				}
				if i == 0 {
					last = id
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("seed dumps: %w", err)
		}
	}
	r.svc.Coredumps.SetClock(func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) })
	elfBytes, err := os.ReadFile(testELF(r.opts.Testdata, "esp32c3"))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(elfBytes)
	out, rep, err := decoding.NewNative(64<<20).Decode(ctx, decoding.Input{Dump: dump, ELF: elfBytes, ELFSHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, fmt.Errorf("decode the page's dump: %w", err)
	}
	repJSON, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	if err := r.svc.Coredumps.RecordResult(ctx, nil, last, coredumps.Result{Status: coredumps.StatusParsed, Output: out, Report: repJSON}); err != nil {
		return nil, err
	}
	return &consoleFleet{model: m.ID, device: ids[0], dump: last}, nil
}

func ptr[T any](v T) *T { return &v }

// console measures server-side rendering of the web console's pages over a fleet of
// 10 000 devices and 100 000 dumps, one request at a time (render latency, not
// throughput), each against the JSON API request that reads the same data.
func (r *runner) console(ctx context.Context) ([]Result, error) {
	if r.child == nil || r.svc == nil {
		return []Result{{Scenario: "console", Note: "skipped: needs a server started by bench (seeds 10 000 devices)"}}, nil
	}
	t0 := time.Now()
	f, err := r.seedConsole(ctx)
	if err != nil {
		return nil, err
	}
	r.logf("console: seeded %d devices and %d dumps in %s", consoleDevices, consoleDumps, time.Since(t0).Round(time.Second))
	cookie, err := r.consoleSignIn(ctx)
	if err != nil {
		return nil, err
	}
	pages := []struct{ name, page, api string }{
		{"overview", "/", "/api/device-models"},
		{"model", fmt.Sprintf("/models/%d", f.model), fmt.Sprintf("/api/device-models/%d/firmware-versions", f.model)},
		{"devices", fmt.Sprintf("/devices?model=%d&page=3", f.model), fmt.Sprintf("/api/devices?model_id=%d", f.model)},
		{"device", fmt.Sprintf("/devices/%d", f.device), fmt.Sprintf("/api/devices/%d/coredumps?limit=50", f.device)},
		{"coredump", fmt.Sprintf("/devices/%d/coredumps/%d", f.device, f.dump), fmt.Sprintf("/api/devices/%d/coredumps/%d", f.device, f.dump)},
	}
	conc := r.concurrency("console")
	var out []Result
	for _, p := range pages {
		srv := func(ctx context.Context, _ int) (int64, error) { return r.getPage(ctx, p.page, "Cookie", cookie) }
		base := func(ctx context.Context, _ int) (int64, error) {
			return r.getPage(ctx, p.api, "Authorization", "Bearer "+r.api.token)
		}
		st, bs, peak := r.compare(ctx, "console-"+p.name, conc, srv, base)
		out = append(out, Result{Scenario: "console/" + p.name, Concurrency: conc, Server: st, PeakRSS: peak, Baseline: bs,
			Note: fmt.Sprintf("GET %s rendered, against GET %s (JSON, same data) as the baseline; %d devices, %d dumps", p.page, p.api, consoleDevices, consoleDumps)})
	}
	return out, nil
}

// consoleSignIn signs in with the bench's token and returns the session cookie.
func (r *runner) consoleSignIn(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.api.base+"/login", strings.NewReader(url.Values{"token": {r.api.token}}.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hc := *r.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "iotsupport_session" {
			return c.Name + "=" + c.Value, nil
		}
	}
	return "", fmt.Errorf("console sign-in: status %d, no session cookie", resp.StatusCode)
}

// get reads a page whole and fails on any status but 200.
func (r *runner) getPage(ctx context.Context, path, hk, hv string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.api.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set(hk, hv)
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return n, err
}
