package rollouts_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/rollouts"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// clock is a settable fake clock shared by the fleet view and the rollouts.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

type note struct {
	ids     []string
	version string
}

// notes records firmware notifications.
type notes struct {
	mu   sync.Mutex
	sent []note
}

func (n *notes) FirmwareUpdated(_ context.Context, ids []string, version string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, note{slices.Clone(ids), version})
}
func (n *notes) ConfigChanged(context.Context, string) {}

func (n *notes) take() []note {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.sent
	n.sent = nil
	return out
}

// queued records the River jobs inserted (the events' deliveries), as JSON.
type queued struct {
	mu   sync.Mutex
	jobs []string
}

func (q *queued) InsertTx(_ context.Context, _ *sql.Tx, args river.JobArgs, _ *river.InsertOpts) error {
	b, _ := json.Marshal(args)
	q.mu.Lock()
	q.jobs = append(q.jobs, args.Kind()+" "+string(b))
	q.mu.Unlock()
	return nil
}

func (q *queued) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.jobs
	q.jobs = nil
	return out
}

type noDumps struct{}

func (noDumps) FirmwareNeeds(context.Context, *sql.Tx, int64) ([]string, []string, error) {
	return nil, nil, nil
}
func (noDumps) FirmwareArrived(context.Context, int64, string, string) (int, error) { return 0, nil }

// sim is one model's fleet of simulated devices over the real owners: devices,
// firmware (the device answer), fleet (check-ins, boots), crash groups (reads) and
// rollouts, all on one fake clock.
type sim struct {
	t      *testing.T
	env    *testenv.Env
	c      *clock
	devs   *devices.Service
	fw     *firmware.Service
	fleet  *fleet.Service
	groups *crashgroups.Service
	ro     *rollouts.Service
	notes  *notes
	jobs   *queued
	model  *devices.Model
	rng    *rand.Rand
	// crash is the probability per device and tick of a PANIC boot, by version.
	crash   map[string]float64
	devices []*simDevice
}

type simDevice struct {
	id            int64
	key           string
	running, boot string
	boots         int
}

func newSim(t *testing.T, env *testenv.Env, code string, n int) *sim {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	s := &sim{t: t, env: env, c: &clock{t: t0}, notes: &notes{}, jobs: &queued{}, rng: rand.New(rand.NewPCG(23, 1)), crash: map[string]float64{}}
	s.devs = devices.NewService(env.DB, func(x string) string {
		sum := sha256.Sum256([]byte(x))
		return hex.EncodeToString(sum[:])
	}, firmware.ModelObjects{}, coredumps.DeviceObjects{}, s.notes)
	s.fw = firmware.NewService(env.DB, env.Store, s.devs, noDumps{}, s.notes, log, firmware.Config{
		MaxFirmwares: 2, MaxBundleBytes: 16 << 20, Limits: bundle.DefaultLimits(), TempDir: t.TempDir()})
	s.groups = crashgroups.NewService(env.DB, struct{ crashgroups.Versions }{}, s.jobs, struct{ crashgroups.Dumps }{},
		crashgroups.Options{WebhookAttempts: 3, MQTTEvents: true}, log)
	s.fleet = fleet.NewService(env.DB, s.groups, fleet.Options{FlushInterval: time.Minute, Now: s.c.Now}, log, nil)
	s.ro = rollouts.NewService(env.DB, s.fw, s.fleet, s.groups, s.devs, auth.NewAudit(env.DB), s.groups,
		rollouts.Options{EvalInterval: time.Minute, Now: s.c.Now}, log)
	name := "Model " + code
	m, err := s.devs.CreateModel(ctx, devices.ModelInput{Code: code, Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	s.model = m
	if err := s.devs.CreateDevices(ctx, m.ID, n, "{}", func(nd []devices.NewDevice) error {
		for _, x := range nd {
			s.devices = append(s.devices, &simDevice{id: x.Device.ID, key: x.Device.Key})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Fixed keys (instead of random ones) make the cohorts, and so the whole simulation,
	// the same on every run.
	for i, d := range s.devices {
		d.key = fmt.Sprintf("%.3s%05d", code+"xxx", i)
		testenv.MustExec(t, env.DB, `UPDATE devices SET key = $1 WHERE id = $2`, d.key, d.id)
	}
	return s
}

// upload stores version (current or not).
func (s *sim) upload(version string, current bool) {
	s.t.Helper()
	ci, _ := chips.ByName("esp32c3")
	elf := append(bundletest.MinimalELF(ci.Arch.ELFMachine()), []byte("unique to "+version)...)
	sum := sha256.Sum256(elf)
	z, err := bundletest.Synthetic(s.model.Code, "esp32c3", version, bundletest.Options{
		Image: espimagetest.Options{ELFSHA256: &sum}, Replace: map[string][]byte{s.model.Code + ".elf": elf}})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.fw.Upload(context.Background(), firmware.ModelID(s.model.ID), func() (io.Reader, error) { return bytes.NewReader(z), nil },
		false, current); err != nil {
		s.t.Fatalf("upload %s: %v", version, err)
	}
}

// answer is what the service tells device i to run.
func (s *sim) answer(i int) string {
	s.t.Helper()
	m, _, err := s.fw.CurrentOfDevice(context.Background(), s.devices[i].id)
	if err != nil {
		s.t.Fatalf("answer of device %d: %v", i, err)
	}
	return *m.FirmwareVersion
}

// answers maps device index to the answer.
func (s *sim) answers() []string {
	out := make([]string, len(s.devices))
	for i := range s.devices {
		out[i] = s.answer(i)
	}
	return out
}

// tick advances the clock by d; every device asks for its version, installs it when it
// changed (a SW reset), crashes at its version's rate (a PANIC boot) and checks in; then
// the replica flushes and the rollouts are evaluated.
func (s *sim) tick(d time.Duration) {
	s.t.Helper()
	ctx := context.Background()
	s.c.Add(d)
	for i, dev := range s.devices {
		want := s.answer(i)
		reason := ""
		if want != dev.running {
			dev.running, reason = want, "SW"
		} else if s.rng.Float64() < s.crash[dev.running] {
			reason = "PANIC"
		}
		if reason != "" || dev.boot == "" {
			if reason == "" {
				reason = "POWERON"
			}
			dev.boots++
			dev.boot = fmt.Sprintf("%s-%d", dev.key, dev.boots)
		}
		h := http.Header{}
		h.Set(fleet.HeaderVersion, dev.running)
		h.Set(fleet.HeaderBootID, dev.boot)
		h.Set(fleet.HeaderReason, reason)
		if reason == "" {
			h.Del(fleet.HeaderReason)
		}
		s.fleet.Observe(ctx, dev.id, s.model.ID, h)
	}
	if err := s.fleet.Flush(ctx); err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.ro.Evaluate(ctx); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sim) start(in rollouts.Input) *rollouts.Rollout {
	s.t.Helper()
	r, err := s.ro.Start(context.Background(), s.model.ID, in, "test")
	if err != nil {
		s.t.Fatalf("start rollout: %v", err)
	}
	return r
}

func (s *sim) get(id int64) *rollouts.Rollout {
	s.t.Helper()
	r, err := s.ro.Get(context.Background(), s.model.ID, id)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

func ptr[T any](v T) *T { return &v }

func firmwareRef(s *sim) firmware.ModelRef { return firmware.ModelID(s.model.ID) }
