package crashgroups_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// dump reads a shared test case's core dump (as the device uploads it).
func dump(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "testdata", "esp-coredump", name, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// queued records decode jobs (the harness decodes by calling the service).
type queued struct{}

func (queued) EnqueueTx(context.Context, *sql.Tx, int64) error { return nil }

type noAudit struct{}

func (noAudit) RecordPendingTx(context.Context, *sql.Tx, int) error { return nil }

// recJobs records the jobs the service queues, as they commit or roll back with tx.
type recJobs struct {
	mu   sync.Mutex
	args []river.JobArgs
	opts []*river.InsertOpts
}

func (j *recJobs) InsertTx(_ context.Context, _ *sql.Tx, args river.JobArgs, opts *river.InsertOpts) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.args = append(j.args, args)
	j.opts = append(j.opts, opts)
	return nil
}

// events returns the queued events of one job kind as JSON objects.
func (j *recJobs) events(kind string) []map[string]any {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []map[string]any
	for _, a := range j.args {
		if a.Kind() != kind {
			continue
		}
		b, _ := json.Marshal(a)
		var m struct {
			Event map[string]any `json:"event"`
		}
		_ = json.Unmarshal(b, &m)
		out = append(out, m.Event)
	}
	return out
}

// harness is the real owners over one storage configuration: devices, firmware, core
// dumps, crash groups, and decoding with the native decoder.
type harness struct {
	env    *testenv.Env
	devs   *devices.Service
	dumps  *coredumps.Service
	fw     *firmware.Service
	groups *crashgroups.Service
	dec    *decoding.Service
	jobs   *recJobs
	model  *devices.Model
}

func newHarness(t testing.TB, env *testenv.Env, keep int) *harness {
	t.Helper()
	h := &harness{env: env, jobs: &recJobs{}}
	h.dumps = coredumps.NewService(env.DB, env.Store, queued{}, noAudit{}, fleet.Dumps{}, coredumps.Options{Keep: keep, UploadsPerHour: 1 << 30}, discard())
	h.devs = devices.NewService(env.DB, func(s string) string { s2 := sha256.Sum256([]byte(s)); return hex.EncodeToString(s2[:]) },
		firmware.ModelObjects{}, coredumps.DeviceObjects{}, notify.Nop{})
	h.fw = firmware.NewService(env.DB, env.Store, h.devs, h.dumps, notify.Nop{}, discard(), firmware.Config{
		MaxFirmwares: 10, MaxBundleBytes: 64 << 20, Limits: bundle.DefaultLimits(), TempDir: t.TempDir()})
	h.groups = crashgroups.NewService(env.DB, h.fw, h.jobs, h.dumps, crashgroups.Options{WebhookAttempts: 3, MQTTEvents: true}, discard())
	h.dec = decoding.NewService(env.DB, h.dumps, h.fw, h.groups, nil, decoding.Config{}, discard(), nil)
	h.model = h.newModel(t, "lamp")
	return h
}

func (h *harness) newModel(t testing.TB, code string) *devices.Model {
	t.Helper()
	name := code
	m, err := h.devs.CreateModel(context.Background(), devices.ModelInput{Code: code, Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (h *harness) device(t testing.TB, m *devices.Model) *devices.Device {
	t.Helper()
	d, _, err := h.devs.CreateDevice(context.Background(), m.ID, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// firmware uploads the ELF of a shared test case as version v of the model.
func (h *harness) firmware(t testing.TB, m *devices.Model, testCase, v string) {
	t.Helper()
	_, err := h.fw.Upload(context.Background(), firmware.ModelID(m.ID), func() (io.Reader, error) {
		return bytes.NewReader(bundletest.BuildCase(t, m.Code, testCase, bundletest.Options{Version: v})), nil
	}, false, true)
	if err != nil {
		t.Fatal(err)
	}
}

// upload stores a test case's dump as the device's, reported with version v.
func (h *harness) upload(t testing.TB, d *devices.Device, testCase, v string) int64 {
	t.Helper()
	b := dump(t, testCase)
	c, err := h.dumps.Upload(context.Background(), coredumps.UploadInput{DeviceID: d.ID, DeviceKey: d.Key, Chip: "esp32c3",
		FirmwareVersion: v, Body: bytes.NewReader(b), Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func (h *harness) decode(t testing.TB, id int64) {
	t.Helper()
	if err := h.dec.Decode(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// only returns the model's one group, failing unless there is exactly one.
func (h *harness) only(t *testing.T, modelID int64) *crashgroups.Group {
	t.Helper()
	p, err := h.groups.List(context.Background(), crashgroups.Filter{ModelID: modelID})
	if err != nil {
		t.Fatal(err)
	}
	if p.Count != 1 || len(p.Groups) != 1 {
		t.Fatalf("%d groups, want 1: %+v", p.Count, p.Groups)
	}
	return p.Groups[0]
}

func (h *harness) detail(t *testing.T, id int64) *crashgroups.Detail {
	t.Helper()
	d, err := h.groups.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
