package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/jobs"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

func numCPU() int { return runtime.NumCPU() }

// deviceGet is a device's GET with Basic auth; it drains the body and
// checks the status and, when want >= 0, the byte count.
func (r *runner) deviceGet(ctx context.Context, d device, path string, hdr http.Header, status int, want int64) (int64, error) {
	return r.get(ctx, r.api.base+path, path, &d, hdr, status, want)
}

// get sends a GET (with d's Basic auth unless d is nil), drains the body and checks the
// status and, when want >= 0, the byte count; errors name the request by label.
func (r *runner) get(ctx context.Context, url, label string, d *device, hdr http.Header, status int, want int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if d != nil {
		req.SetBasicAuth(d.Key, d.Secret)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, err
	}
	if resp.StatusCode != status {
		return n, fmt.Errorf("GET %s: %s", label, resp.Status)
	}
	if want >= 0 && n != want {
		return n, fmt.Errorf("GET %s: %d bytes, want %d", label, n, want)
	}
	return n, nil
}

func (r *runner) checkin(ctx context.Context) ([]Result, error) {
	conc := r.concurrency("checkin")
	devs := r.fx.fw1.devices
	srvOp := func(ctx context.Context, w int) (int64, error) {
		return r.deviceGet(ctx, devs[w%len(devs)], "/api/iot/firmware-version", nil, http.StatusOK, -1)
	}
	// Baseline: a handler on this machine that returns a constant.
	body := []byte(`{"firmware_version":"v1.0-56-g30082bf","size":1048576,"sha256":"` + hex.EncodeToString(make([]byte, 32)) + `"}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	url := "http://" + ln.Addr().String() + "/api/iot/firmware-version"
	baseOp := func(ctx context.Context, w int) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		d := devs[w%len(devs)]
		req.SetBasicAuth(d.Key, d.Secret)
		resp, err := r.hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return 0, err
	}
	// The variant sends the fleet telemetry headers ESP-IDF devices set on every request:
	// a fixed boot id per device (stored once, then known) and its running version. It
	// runs in the same alternating rounds, so both ratios share one baseline.
	telemetry := make([]http.Header, len(devs))
	for i := range devs {
		telemetry[i] = http.Header{"X-Firmware-Version": {r.fx.fw1.version}, "X-Boot-Id": {fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())},
			"X-Reset-Reason": {"POWERON"}}
	}
	hdrOp := func(ctx context.Context, w int) (int64, error) {
		i := w % len(devs)
		return r.deviceGet(ctx, devs[i], "/api/iot/firmware-version", telemetry[i], http.StatusOK, -1)
	}
	srv, bases, peak := r.compareAll(ctx, "checkin", conc, srvOp, baseOp, hdrOp)
	return []Result{{Scenario: "checkin", Concurrency: conc, Server: srv, PeakRSS: peak, Baseline: &bases[0]},
		{Scenario: "checkin+headers", Concurrency: conc, Server: bases[1], PeakRSS: peak, Baseline: &bases[0],
			Note: "devices send X-Firmware-Version, X-Boot-Id and X-Reset-Reason; measured in the same rounds as checkin"}}, nil
}

func (r *runner) download(ctx context.Context) ([]Result, error) {
	conc := r.concurrency("download")
	var out []Result
	for _, fw := range []*firmware{r.fx.fw1, r.fx.fw16} {
		name := fmt.Sprintf("download-%dMiB", fw.size>>20)
		want := fw.size
		if r.fx.external {
			name, want = "download", -1
		}
		devs := fw.devices
		srvOp := func(ctx context.Context, w int) (int64, error) {
			return r.deviceGet(ctx, devs[w%len(devs)], "/api/iot/firmware", nil, http.StatusOK, want)
		}
		var baseOp op
		note := "no baseline: blob store settings not given"
		if r.store != nil && fw.key != "" {
			note = ""
			baseOp = func(ctx context.Context, _ int) (int64, error) {
				rc, _, err := r.store.Get(ctx, fw.key, nil)
				if err != nil {
					return 0, err
				}
				defer rc.Close()
				return io.Copy(io.Discard, rc)
			}
		}
		if baseOp != nil {
			res, err := r.withFileServer(ctx, name, conc, fw.key, fw.size, srvOp, baseOp, func(url string) op {
				return func(ctx context.Context, _ int) (int64, error) {
					return r.plainGet(ctx, url, nil, http.StatusOK, want)
				}
			})
			if err != nil {
				return nil, err
			}
			out = append(out, res)
		} else {
			srv, base, peak := r.compare(ctx, name, conc, srvOp, baseOp)
			out = append(out, Result{Scenario: name, Concurrency: conc, Server: srv, PeakRSS: peak, Baseline: base, Note: note})
		}
		if r.fx.external {
			break
		}
	}
	return out, nil
}

func (r *runner) ranged(ctx context.Context) ([]Result, error) {
	conc := r.concurrency("ranged")
	fw := r.fx.fw2
	const chunk = 4096
	size := fw.size
	if r.fx.external {
		size = 1 << 20 // assume at least 1 MiB
	}
	chunks := size / chunk
	next := func(w int, i *int64) int64 {
		off := ((int64(w)*97 + *i) % chunks) * chunk
		*i++
		return off
	}
	var mu sync.Mutex
	pos := map[int]*int64{}
	counter := func(w int) *int64 {
		mu.Lock()
		defer mu.Unlock()
		if pos[w] == nil {
			pos[w] = new(int64)
		}
		return pos[w]
	}
	devs := fw.devices
	srvOp := func(ctx context.Context, w int) (int64, error) {
		off := next(w, counter(w))
		h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+chunk-1)}}
		return r.deviceGet(ctx, devs[w%len(devs)], "/api/iot/firmware", h, http.StatusPartialContent, chunk)
	}
	var baseOp op
	note := "no baseline: blob store settings not given"
	if r.store != nil && fw.key != "" {
		note = ""
		baseOp = func(ctx context.Context, w int) (int64, error) {
			off := next(w+1000, counter(w+1000)) // its own cursors, same walk
			rc, _, err := r.store.Get(ctx, fw.key, &blob.Range{Offset: off, Length: chunk})
			if err != nil {
				return 0, err
			}
			defer rc.Close()
			return io.Copy(io.Discard, rc)
		}
	}
	if baseOp != nil {
		res, err := r.withFileServer(ctx, "ranged", conc, fw.key, fw.size, srvOp, baseOp, func(url string) op {
			return func(ctx context.Context, w int) (int64, error) {
				off := next(w+2000, counter(w+2000)) // its own cursors, same walk
				h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+chunk-1)}}
				return r.plainGet(ctx, url, h, http.StatusPartialContent, chunk)
			}
		})
		if err != nil {
			return nil, err
		}
		return []Result{res}, nil
	}
	srv, base, peak := r.compare(ctx, "ranged", conc, srvOp, baseOp)
	return []Result{{Scenario: "ranged", Concurrency: conc, Server: srv, PeakRSS: peak, Baseline: base, Note: note}}, nil
}

func (r *runner) ingest(ctx context.Context) ([]Result, error) {
	conc := r.concurrency("ingest")
	devs := r.fx.ingestDevs
	path := "/api/iot/coredump?chip=esp32&firmware_version=" + r.fx.dumpVersion
	var turn atomic.Int64 // the devices take turns
	srvOp := func(ctx context.Context, w int) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.api.base+path, bytes.NewReader(r.fx.dump))
		if err != nil {
			return 0, err
		}
		d := devs[int(turn.Add(1)-1)%len(devs)]
		req.SetBasicAuth(d.Key, d.Secret)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := r.hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusCreated {
			return 0, fmt.Errorf("POST coredump: %s", resp.Status)
		}
		return int64(len(r.fx.dump)), nil
	}
	if r.db == nil || r.store == nil || len(r.fx.baseDevs) == 0 {
		srv, _, peak := r.compare(ctx, "ingest", conc, srvOp, nil)
		return []Result{{Scenario: "ingest", Concurrency: conc, Server: srv, PeakRSS: peak,
			Note: "no baseline: database/store settings not given"}}, nil
	}
	// Baselines: what an upload writes, one transaction per upload, by the owners' own
	// statements without the service's rules (coredumps.WriteUploadRowsTx, the audit
	// entry, a River job, blob.Put); and only its coredumps row and object.
	h := coredumps.Inspect(r.fx.dump)
	quiet := slog.New(slog.DiscardHandler)
	jc, err := jobs.New(r.db, nil, jobs.Config{Timeout: time.Minute}, quiet)
	if err != nil {
		return nil, err
	}
	ins, err := jobs.NewInserter(r.db, jc, quiet)
	if err != nil {
		return nil, err
	}
	audit, cores := r.svc.Audit, r.svc.Coredumps
	write := func(ctx context.Context, w int, all bool) (int64, error) {
		d := r.fx.baseDevs[w%len(r.fx.baseDevs)]
		var key string
		var id int64
		err := r.db.Tx(ctx, func(tx *sql.Tx) error {
			var err error
			if id, err = cores.WriteUploadRowsTx(ctx, tx, d.ID, "esp32", r.fx.dumpVersion, r.fx.dump, h, all); err != nil {
				return err
			}
			key = coredumps.Key(d.Key, id)
			if all {
				// The server's audit entry, written by the same code.
				pctx := auth.WithPending(ctx, &auth.Pending{Entry: auth.AuditEntry{ActorKind: "device", Actor: d.Key,
					Method: http.MethodPost, Path: path, Route: "/api/iot/coredump", RequestID: baselineRequestID}})
				if err := audit.RecordPendingTx(pctx, tx, http.StatusCreated); err != nil {
					return err
				}
				// The server's decode job, in a queue that no worker serves: the baseline pays
				// for inserting it and nothing else.
				if err := ins.InsertTx(ctx, tx, jobs.DecodeArgs{CoredumpID: id}, &river.InsertOpts{Queue: baselineQueue}); err != nil {
					return err
				}
			}
			return r.store.Put(ctx, key, bytes.NewReader(r.fx.dump), int64(len(r.fx.dump)), "application/octet-stream")
		})
		if err != nil {
			return 0, err
		}
		return int64(len(r.fx.dump)), nil
	}
	rowsOp := func(ctx context.Context, w int) (int64, error) { return write(ctx, w, true) }
	rowOp := func(ctx context.Context, w int) (int64, error) { return write(ctx, w, false) }
	srv, base, peak := r.compareAll(ctx, "ingest", conc, srvOp, rowsOp, rowOp)
	r.cleanupBaseline(context.WithoutCancel(ctx))
	r.cleanupIngestBaseline(context.WithoutCancel(ctx), jc)
	return []Result{{Scenario: "ingest", Concurrency: conc, Server: srv, PeakRSS: peak, Baseline: &base[0],
		Other: []OtherBaseline{{Name: "the coredumps row + object only", Baseline: base[1]}},
		Note:  r.decodeProgress(ctx)}}, nil
}

const (
	baselineQueue     = "bench_baseline"
	baselineRequestID = "bench-baseline"
)

// cleanupIngestBaseline removes what the ingest baseline wrote besides dumps and objects.
func (r *runner) cleanupIngestBaseline(ctx context.Context, jc *jobs.Client) {
	for {
		res, err := jc.JobDeleteMany(ctx, river.NewJobDeleteManyParams().Queues(baselineQueue).First(10000))
		if err != nil || len(res.Jobs) == 0 {
			break
		}
	}
	for _, d := range r.fx.baseDevs {
		_ = r.svc.Coredumps.ClearUploadLog(ctx, d.ID)
	}
	_ = r.svc.Audit.DeleteRequest(ctx, baselineRequestID)
}

// decodeProgress says how far the server's decoding got during the run: the dumps' states
// and the decode jobs' (a job whose dump retention already removed completes with nothing
// to decode).
func (r *runner) decodeProgress(ctx context.Context) string {
	s := "right after the run:"
	for _, q := range []struct{ what, sql string }{
		{"dumps", `SELECT parse_status, count(*) FROM coredumps GROUP BY parse_status ORDER BY parse_status`},
		{"decode jobs", `SELECT CAST(state AS TEXT), count(*) FROM river_job WHERE kind = 'decode_coredump' AND queue = 'default' GROUP BY state ORDER BY 1`},
	} {
		rows, err := r.db.QueryContext(ctx, q.sql)
		if err != nil {
			continue
		}
		s += " " + q.what
		for rows.Next() {
			var st string
			var n int
			if rows.Scan(&st, &n) == nil {
				s += fmt.Sprintf(" %s=%d", st, n)
			}
		}
		rows.Close()
		s += ";"
	}
	return strings.TrimSuffix(s, ";")
}

// cleanupBaseline removes the baseline's dumps through their owner and drains the object
// deletions that queues.
func (r *runner) cleanupBaseline(ctx context.Context) {
	for _, d := range r.fx.baseDevs {
		_ = r.svc.Coredumps.DeleteAll(ctx, d.ID)
	}
	_, _, _ = outbox.NewWorker(r.db, r.store, slog.New(slog.DiscardHandler), nil).Drain(ctx)
}

const bundleImageBytes = 27 << 20 // with the 2.7 MB ELF: a ~30 MB bundle

func (r *runner) bundle(ctx context.Context) ([]Result, error) {
	if r.child == nil {
		return []Result{{Scenario: "bundle", Note: "skipped: needs a server started by bench (creates a model)"}}, nil
	}
	conc := r.concurrency("bundle")
	elfBytes, err := os.ReadFile(testELF(r.opts.Testdata, "esp32"))
	if err != nil {
		return nil, err
	}
	id, err := r.api.createModel(ctx, "bench_bundle_"+r.runID)
	if err != nil {
		return nil, err
	}
	// Two bundles of one version that differ in version.json: with
	// ?replace=true every upload rewrites all five objects.
	var zips [2][]byte
	var members []bundle.Member
	for i, commit := range []string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"} {
		b, err := buildBundle("bench_bundle_"+r.runID, elfBytes, bundleImageBytes, commit)
		if err != nil {
			return nil, err
		}
		zips[i], members = b.zip, b.members
	}
	var n atomic.Int64
	srvOp := func(ctx context.Context, _ int) (int64, error) {
		z := zips[n.Add(1)%2]
		return int64(len(z)), r.api.uploadBundle(ctx, id, z)
	}
	note := fmt.Sprintf("%.1f MB bundles", float64(len(zips[0]))/1e6)
	if r.store == nil {
		srv, _, peak := r.compare(ctx, "bundle", conc, srvOp, nil)
		return []Result{{Scenario: "bundle", Concurrency: conc, Server: srv, PeakRSS: peak, Note: note}}, nil
	}
	var seq atomic.Int64
	baseOp := func(ctx context.Context, _ int) (int64, error) {
		prefix := fmt.Sprintf("firmware/bench_baseline/v%d/", seq.Add(1)%4)
		var total int64
		for i, m := range members {
			if err := r.store.Put(ctx, prefix+bundle.ObjectNames[i], bytes.NewReader(m.Data), int64(len(m.Data)), "application/octet-stream"); err != nil {
				return total, err
			}
			total += int64(len(m.Data))
		}
		return total, nil
	}
	srv, base, peak := r.compare(ctx, "bundle", conc, srvOp, baseOp)
	_, _ = blob.DeletePrefix(context.WithoutCancel(ctx), r.store, "firmware/bench_baseline/")
	return []Result{{Scenario: "bundle", Concurrency: conc, Server: srv, PeakRSS: peak, Baseline: base, Note: note}}, nil
}

// decodeCases are the shared test cases with an app ELF and a core dump.
var decodeCases = []string{"esp32", "esp32_bin", "esp32c3", "esp32c3_bin", "esp32c6"}

func (r *runner) decode(ctx context.Context) ([]Result, error) {
	conc := r.concurrency("decode")
	var out []Result
	for _, c := range decodeCases {
		elfBytes, err := os.ReadFile(testELF(r.opts.Testdata, c))
		if err != nil {
			return nil, err
		}
		dump, err := readCoredump(r.opts.Testdata, c)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(elfBytes)
		in := decoding.Input{Dump: dump, ELF: elfBytes, ELFSHA256: hex.EncodeToString(sum[:])}
		n := decoding.NewNative(256 << 20)
		if _, _, err := n.Decode(ctx, in); err != nil { // warms the ELF index cache
			return nil, fmt.Errorf("decode %s: %w", c, err)
		}
		st := load(ctx, conc, max(r.opts.Duration/time.Duration(len(decodeCases)), 500*time.Millisecond), r.opts.Requests, func(ctx context.Context, _ int) (int64, error) {
			_, _, err := n.Decode(ctx, in)
			return int64(len(dump)), err
		})
		out = append(out, Result{Scenario: "decode/" + c, Concurrency: conc, Server: st, Note: "in-process native decoder, warm ELF cache"})
	}
	return out, nil
}
