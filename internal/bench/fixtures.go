package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// firmware is an uploaded model with its current image.
type firmware struct {
	modelID int64
	code    string
	version string
	size    int64
	key     string // blob key of firmware.bin
	devices []device
}

// fixtures are what the scenarios run against.
type fixtures struct {
	fw1, fw2, fw16 *firmware
	ingestDevs     []device // devices of fw1 used by ingest
	baseDevs       []device // devices the ingest baseline writes rows for
	dump           []byte   // 64 KiB core dump upload body
	dumpVersion    string
	external       bool
}

const ingestBodyBytes = 64 << 10

// setup creates models, devices and firmware through the API (or, against an
// external server, uses the one given device).
func (r *runner) setup(ctx context.Context, conc int, need func(...string) bool) (*fixtures, error) {
	fx := &fixtures{}
	elfBytes, err := os.ReadFile(testELF(r.opts.Testdata, "esp32"))
	if err != nil {
		return nil, err
	}
	if need("ingest") {
		if fx.dump, err = ingestBody(r.opts.Testdata); err != nil {
			return nil, err
		}
	}
	if r.child == nil {
		if r.opts.DeviceKey == "" || r.opts.DeviceSecret == "" {
			return nil, fmt.Errorf("against --url the device scenarios need --device-key and --device-secret")
		}
		fx.external = true
		d := device{Key: r.opts.DeviceKey, Secret: r.opts.DeviceSecret}
		fw := &firmware{devices: []device{d}}
		fx.fw1, fx.fw2, fx.fw16 = fw, fw, fw
		fx.ingestDevs = []device{d}
		fx.dumpVersion = "bench"
		return fx, nil
	}
	mk := func(code string, padTo, ndev int) (*firmware, error) {
		r.logf("  model %s: %d-byte image, %d devices", code, padTo, ndev)
		id, err := r.api.createModel(ctx, code)
		if err != nil {
			return nil, err
		}
		b, err := buildBundle(code, elfBytes, padTo, "0123456789abcdef")
		if err != nil {
			return nil, err
		}
		if err := r.api.uploadBundle(ctx, id, b.zip); err != nil {
			return nil, err
		}
		fw := &firmware{modelID: id, code: code, version: b.image.Version, size: b.image.Size,
			key: fmt.Sprintf("firmware/%s/%s/firmware.bin", code, b.image.Version)}
		for range ndev {
			d, err := r.api.createDevice(ctx, id)
			if err != nil {
				return nil, err
			}
			fw.devices = append(fw.devices, d)
		}
		return fw, nil
	}
	if fx.fw1, err = mk("bench_1m_"+r.runID, 1<<20, conc); err != nil {
		return nil, err
	}
	fx.ingestDevs = fx.fw1.devices
	if need("ingest") {
		n := r.opts.IngestDevices
		if n <= 0 {
			n = DefaultIngestDevices
		}
		if err := r.addIngestDevices(ctx, fx, n); err != nil {
			return nil, err
		}
	}
	fx.dumpVersion = fx.fw1.version
	if need("ingest") {
		for range min(conc, 8) {
			d, err := r.api.createDevice(ctx, fx.fw1.modelID)
			if err != nil {
				return nil, err
			}
			fx.baseDevs = append(fx.baseDevs, d)
		}
	}
	if need("ranged") {
		if fx.fw2, err = mk("bench_2m_"+r.runID, 2<<20, 4); err != nil {
			return nil, err
		}
	}
	if need("download") {
		if fx.fw16, err = mk("bench_16m_"+r.runID, 16<<20, 4); err != nil {
			return nil, err
		}
	}
	return fx, nil
}

// ingestBody is the esp32 test core dump as raw partition bytes, padded with
// erased flash (0xFF) to 64 KiB, as a device reads its core dump partition.
func ingestBody(testdata string) ([]byte, error) {
	b64, err := readCoredump(testdata, "esp32")
	if err != nil {
		return nil, err
	}
	var raw []byte
	for _, line := range strings.Fields(string(b64)) { // UART output: each line is padded base64
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("decode test core dump: %w", err)
		}
		raw = append(raw, b...)
	}
	if len(raw) > ingestBodyBytes {
		raw = raw[:ingestBodyBytes]
	}
	return append(raw, bytes.Repeat([]byte{0xFF}, ingestBodyBytes-len(raw))...), nil
}

// DefaultIngestDevices is the ingest scenario's device count when Options.IngestDevices is 0.
const DefaultIngestDevices = 512

// addIngestDevices creates devices of fw1 until the ingest scenario has n.
func (r *runner) addIngestDevices(ctx context.Context, fx *fixtures, n int) error {
	more := n - len(fx.ingestDevs)
	if more <= 0 {
		fx.ingestDevs = fx.ingestDevs[:n]
		return nil
	}
	r.logf("  %d more devices for ingest", more)
	devs := make([]device, more)
	err := parallel(8, more, func(i int) (err error) {
		devs[i], err = r.api.createDevice(ctx, fx.fw1.modelID)
		return err
	})
	if err != nil {
		return err
	}
	fx.ingestDevs = append(append([]device(nil), fx.ingestDevs...), devs...)
	return nil
}

// parallel runs fn(0..n-1) on the given number of goroutines and returns the first error
// (the goroutine that met it stops; the others finish their items).
func parallel(workers, n int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
