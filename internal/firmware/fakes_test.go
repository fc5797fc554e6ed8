package firmware_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/chips"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// dumps is the core-dump owner as firmware sees it: FirmwareNeeds answers what the test
// sets, and FirmwareArrived records each call with the version's ELF SHA-256 as a reader
// outside the upload's transaction saw it (empty when the version had not committed).
type dumps struct {
	d *db.DB

	mu        sync.Mutex
	versions  []string
	prefixes  []string
	needs     []int64 // model ids FirmwareNeeds was asked about
	needsNoTx int     // calls without a transaction
	arrived   []arrival
}

type arrival struct {
	modelID             int64
	version, sha        string
	committedSHA        string
	committedAndCurrent bool
}

func (f *dumps) need(versions, prefixes []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions, f.prefixes = versions, prefixes
}

func (f *dumps) FirmwareNeeds(_ context.Context, tx *sql.Tx, modelID int64) ([]string, []string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.needs = append(f.needs, modelID)
	if tx == nil {
		f.needsNoTx++
	}
	return slices.Clone(f.versions), slices.Clone(f.prefixes), nil
}

func (f *dumps) FirmwareArrived(ctx context.Context, modelID int64, version, sha string) (int, error) {
	a := arrival{modelID: modelID, version: version, sha: sha}
	var elf, current sql.NullString
	if err := f.d.QueryRowContext(ctx, `SELECT fv.elf_sha256, m.firmware_version FROM firmware_versions fv
		JOIN device_models m ON m.id = fv.device_model_id WHERE fv.device_model_id = $1 AND fv.version = $2`, modelID, version).Scan(&elf, &current); err == nil {
		a.committedSHA = elf.String
		a.committedAndCurrent = current.String == version
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.arrived = append(f.arrived, a)
	return 0, nil
}

func (f *dumps) arrivals() []arrival {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.arrived)
}

// notes records firmware notifications.
type notes struct {
	mu   sync.Mutex
	sent []note
}

type note struct {
	clients []string
	version string
}

func (n *notes) FirmwareUpdated(_ context.Context, clients []string, version string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := slices.Clone(clients)
	slices.Sort(c)
	n.sent = append(n.sent, note{c, version})
}

func (n *notes) ConfigChanged(context.Context, string) {}

func (n *notes) all() []note {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.sent)
}

type noDeviceCleanup struct{}

func (noDeviceCleanup) DeviceDeleting(context.Context, *sql.Tx, *devices.Device) error { return nil }

type fixture struct {
	env     *testenv.Env
	s       *firmware.Service
	devices *devices.Service
	dumps   *dumps
	notes   *notes
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newFixture builds the firmware service over env with the real device-model owner
// (firmware reads and writes the current version through it) and recording fakes of
// the core-dump owner and the notifier.
func newFixture(t testing.TB, env *testenv.Env, maxFirmwares int) *fixture {
	f := &fixture{env: env, dumps: &dumps{d: env.DB}, notes: &notes{}}
	f.devices = devices.NewService(env.DB, func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	},
		firmware.ModelObjects{}, noDeviceCleanup{}, f.notes)
	f.s = firmware.NewService(env.DB, env.Store, f.devices, f.dumps, f.notes, discard(), firmware.Config{
		MaxFirmwares: maxFirmwares, MaxBundleBytes: 16 << 20, Limits: bundle.DefaultLimits(), TempDir: t.TempDir(),
	})
	return f
}

func (f *fixture) model(t testing.TB, code string) *devices.Model {
	t.Helper()
	name := "Model " + code
	m, err := f.devices.CreateModel(context.Background(), devices.ModelInput{Code: code, Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// build is a small valid bundle for code and version whose ELF is unique to the version
// (and salt), so every version has its own ELF SHA-256 (returned in lower-case hex).
func build(t testing.TB, code, version string, salt ...string) ([]byte, string) {
	t.Helper()
	ci, _ := chips.ByName("esp32c3")
	elf := append(bundletest.MinimalELF(ci.Arch.ELFMachine()), []byte("unique to "+version+strings.Join(salt, ""))...)
	sum := sha256.Sum256(elf)
	z, err := bundletest.Synthetic(code, "esp32c3", version, bundletest.Options{
		Image:   espimagetest.Options{ELFSHA256: &sum},
		Replace: map[string][]byte{code + ".elf": elf},
	})
	if err != nil {
		t.Fatal(err)
	}
	return z, hex.EncodeToString(sum[:])
}

func body(z []byte) func() (io.Reader, error) {
	return func() (io.Reader, error) { return bytes.NewReader(z), nil }
}

// upload stores a new bundle of version as the model's current one; it returns the ELF SHA-256.
func (f *fixture) upload(t testing.TB, code, version string) string {
	t.Helper()
	z, sha := build(t, code, version)
	if _, err := f.s.Upload(context.Background(), firmware.ModelCode(code), body(z), false, true); err != nil {
		t.Fatalf("upload %s %s: %v", code, version, err)
	}
	return sha
}

func (f *fixture) versions(t *testing.T, code string) []string {
	t.Helper()
	_, vs, err := f.s.ListVersions(context.Background(), firmware.ModelCode(code))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vs {
		out = append(out, v.Version)
	}
	return out
}

// queued returns the object keys queued for deletion (outbox rows), sorted.
func queued(t *testing.T, d *db.DB) []string {
	t.Helper()
	rows, err := d.QueryContext(context.Background(), `SELECT key FROM blob_deletions ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ks []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ks
}
