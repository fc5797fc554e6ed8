package decoding

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// testCase is one of the shared esp-coredump cases: a dump, its ELF and the ELF's SHA-256.
type testCase struct {
	dump, elf []byte
	sha       string // lower-case hex SHA-256 of elf
	prefix    string // the ELF SHA-256 prefix the dump carries ("" when none)
}

func loadCase(t testing.TB, name string) testCase {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "testdata", "esp-coredump", name)
	elf, err := os.ReadFile(filepath.Join(dir, "app.elf"))
	if err != nil {
		t.Fatal(err)
	}
	dump, err := os.ReadFile(filepath.Join(dir, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(elf)
	c := testCase{dump: dump, elf: elf, sha: hex.EncodeToString(sum[:]), prefix: espcore.Inspect(dump).AppELFSHAPrefix}
	if c.prefix != "" && !strings.HasPrefix(c.sha, c.prefix) {
		t.Fatalf("%s: the dump's ELF prefix %s is not its ELF's (%s)", name, c.prefix, c.sha)
	}
	return c
}

// recorded is one RecordResult call.
type recorded struct {
	id   int64
	res  coredumps.Result
	inTx bool
}

// fakeDumps is the core-dump owner as decoding sees it: targets and bodies set by the
// test (a missing body is a missing object), results recorded.
type fakeDumps struct {
	mu      sync.Mutex
	targets map[int64]*coredumps.DecodeTarget
	bodies  map[int64][]byte
	readErr error
	results []recorded
}

func newDumps() *fakeDumps {
	return &fakeDumps{targets: map[int64]*coredumps.DecodeTarget{}, bodies: map[int64][]byte{}}
}

func (f *fakeDumps) add(t coredumps.DecodeTarget, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets[t.ID] = &t
	if body != nil {
		f.bodies[t.ID] = body
	}
}

func (f *fakeDumps) DecodeTarget(_ context.Context, id int64) (*coredumps.DecodeTarget, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.targets[id]; ok {
		c := *t
		return &c, nil
	}
	return nil, nil
}

func (f *fakeDumps) ReadDump(_ context.Context, t *coredumps.DecodeTarget, _ int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return nil, f.readErr
	}
	b, ok := f.bodies[t.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, coredumps.Key(t.DeviceKey, t.ID))
	}
	return b, nil
}

func (f *fakeDumps) RecordResult(_ context.Context, tx *sql.Tx, id int64, r coredumps.Result) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results = append(f.results, recorded{id: id, res: r, inTx: tx != nil})
	return nil
}

func (f *fakeDumps) PendingCount(context.Context) (int, error) { return 0, nil }

func (f *fakeDumps) recorded() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.results)
}

// fakeFirmware is the firmware owner as decoding sees it: stored versions with their ELF
// SHA-256 ("" for adopted versions) and bytes (none: the ELF object is missing). arrive,
// when set, is stored at the first lookup made inside a transaction: firmware uploaded
// between the decode's pick and its record of the failure.
type fakeFirmware struct {
	mu       sync.Mutex
	shas     map[string]string
	elfs     map[string][]byte
	arrive   func(f *fakeFirmware)
	looks    int
	txLooks  int
	elfReads []string
}

func newFirmware() *fakeFirmware {
	return &fakeFirmware{shas: map[string]string{}, elfs: map[string][]byte{}}
}

// store adds a version; elf nil stores it without an ELF object.
func (f *fakeFirmware) store(version, sha string, elf []byte) {
	f.shas[version] = sha
	if elf != nil {
		f.elfs[version] = elf
	}
}

func (f *fakeFirmware) look(q db.Querier) {
	f.looks++
	if _, ok := q.(*sql.Tx); ok {
		f.txLooks++
		if f.arrive != nil {
			f.arrive(f)
			f.arrive = nil
		}
	}
}

func (f *fakeFirmware) VersionELF(_ context.Context, q db.Querier, _ int64, version string) (firmware.ELFRef, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.look(q)
	sha, ok := f.shas[version]
	return firmware.ELFRef{Version: version, SHA256: sha}, ok, nil
}

// ELFByPrefix answers the lowest matching version, so a test can tell whether decoding
// preferred the reported version itself.
func (f *fakeFirmware) ELFByPrefix(_ context.Context, q db.Querier, _ int64, prefix string) (firmware.ELFRef, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.look(q)
	var vs []string
	for v, sha := range f.shas {
		if sha != "" && strings.HasPrefix(sha, prefix) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return firmware.ELFRef{}, false, nil
	}
	v := slices.Min(vs)
	return firmware.ELFRef{Version: v, SHA256: f.shas[v]}, true, nil
}

func (f *fakeFirmware) ReadELF(_ context.Context, code, version string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.elfReads = append(f.elfReads, code+"/"+version)
	if b, ok := f.elfs[version]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, firmware.Key(code, version, "firmware.elf"))
}

func (f *fakeFirmware) reads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.elfReads)
}

// calls records what a decoder was given; it keeps the ELF cache of the decoder it wraps.
type calls struct {
	inner Decoder
	mu    sync.Mutex
	got   []Input
}

func (c *calls) Decode(ctx context.Context, in Input) (string, *espcore.Report, error) {
	c.mu.Lock()
	c.got = append(c.got, in)
	c.mu.Unlock()
	return c.inner.Decode(ctx, in)
}

func (c *calls) HasELF(sha string) bool {
	if ec, ok := c.inner.(ELFCache); ok {
		return ec.HasELF(sha)
	}
	return false
}

func (c *calls) inputs() []Input {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// decoderFunc is a Decoder (without an ELF cache) from a function.
type decoderFunc func(ctx context.Context, in Input) (string, *espcore.Report, error)

func (f decoderFunc) Decode(ctx context.Context, in Input) (string, *espcore.Report, error) {
	return f(ctx, in)
}

// forEachDB runs fn on SQLite and PostgreSQL: decoding records a missing firmware in a
// transaction that shares the model's row (a lock only PostgreSQL takes).
func forEachDB(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, testenv.OpenDB(t, testenv.SQLiteURL(t))) })
	t.Run("postgres", func(t *testing.T) { fn(t, testenv.OpenDB(t, testenv.PostgresURL(t))) })
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func target(id int64, version, prefix string) coredumps.DecodeTarget {
	return coredumps.DecodeTarget{ID: id, DeviceKey: "abcd2345", ModelID: 1, ModelCode: "lamp", Chip: "esp32c3",
		Version: version, ELFPrefix: prefix, Status: coredumps.StatusPending}
}

// noGroups groups nothing (the package's own rules do not depend on grouping).
type noGroups struct{}

func (noGroups) AssignTx(context.Context, *sql.Tx, crashgroups.Dump, *espcore.Report) (crashgroups.Assignment, error) {
	return crashgroups.Assignment{}, nil
}
