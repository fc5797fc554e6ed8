package firmware

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestParseKeyInvertsKey(t *testing.T) {
	code, ver, art, ok := ParseKey(Key("lamp", "1.2.3", "firmware.elf"))
	if !ok || code != "lamp" || ver != "1.2.3" || art != "firmware.elf" {
		t.Fatalf("ParseKey(Key(...)) = %q %q %q %v", code, ver, art, ok)
	}
	if !strings.HasPrefix(Key("lamp", "1.2.3", "sdkconfig"), Prefix("lamp", "1.2.3")) || !strings.HasPrefix(Prefix("lamp", "1.2.3"), Root) {
		t.Fatal("Key, Prefix and Root disagree")
	}
	for _, key := range []string{"firmware/lamp/1.0", "firmware/lamp/1.0/", "firmware/lamp/1.0/a/b", "firmware//1.0/firmware.bin",
		"firmware/lamp//firmware.bin", "coredumps/abcd1234/1.dmp", "lamp/1.0/firmware.bin"} {
		if _, _, _, ok := ParseKey(key); ok {
			t.Errorf("ParseKey(%q) accepted a key outside the layout", key)
		}
	}
}

// modelLockedElsewhere reports whether another connection finds the model's row locked.
func modelLockedElsewhere(t *testing.T, d *db.DB, code string) bool {
	t.Helper()
	rows, err := d.QueryContext(context.Background(), `SELECT 1 FROM device_models WHERE code = $1 FOR UPDATE NOWAIT`, code)
	if err != nil {
		return strings.Contains(err.Error(), "55P03") || strings.Contains(err.Error(), "could not obtain lock")
	}
	rows.Close()
	return false
}

func testService(d *db.DB, st blob.Store) *Service {
	devs := devices.NewService(d, func(s string) string { return s }, ModelObjects{}, objectsNop{}, objectsNop{})
	return NewService(d, st, devs, objectsNop{}, notify.Nop{}, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{})
}

const twoArtifacts = `{"firmware.bin":{"size":3,"sha256":"aa"},"firmware.elf":{"size":4,"sha256":"bb"}}`

// fixture: model lamp, current 2.0; versions 1.0 and 2.0 record two artifacts, 0.9 is an
// older service's row without an artifact record.
func fixture(t *testing.T, d *db.DB, st blob.Store) {
	t.Helper()
	now := db.Now()
	testenv.MustExec(t, d, `INSERT INTO device_models (code, name, firmware_version, created_at, updated_at) VALUES ('lamp', 'Lamp', '2.0', $1, $1)`, now)
	testenv.MustExec(t, d, `INSERT INTO firmware_versions (device_model_id, version, uploaded_at, created_at, artifacts) VALUES (1, '0.9', $1, $1, NULL)`, now)
	for _, v := range []string{"1.0", "2.0"} {
		testenv.MustExec(t, d, `INSERT INTO firmware_versions (device_model_id, version, uploaded_at, created_at, artifacts) VALUES (1, $1, $2, $2, $3)`, v, now, twoArtifacts)
		for name, b := range map[string]string{"firmware.bin": "bin", "firmware.elf": "elf!"} {
			if err := st.Put(context.Background(), Key("lamp", v, name), bytes.NewReader([]byte(b)), int64(len(b)), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The consistency check's questions: the objects the versions expect (recorded sizes and
// digests; a version without a record owns its folder), whether a version owns a key
// (under the model's lock), and the repair of a version that lost an object.
func TestObjectsForTheConsistencyCheck(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		d, st := env.DB, env.Store
		fixture(t, d, st)
		s := testService(d, st)
		if s.ObjectPrefix() != Root {
			t.Fatalf("prefix %q", s.ObjectPrefix())
		}

		n, objs, err := s.Recorded(ctx)
		if err != nil || n != 3 || len(objs) != 5 {
			t.Fatalf("Recorded: %d %+v %v", n, objs, err)
		}
		byKey := map[string]blob.Recorded{}
		for _, o := range objs {
			byKey[o.Key] = o
		}
		if o := byKey[Key("lamp", "1.0", "firmware.elf")]; o.Size != 4 || o.SHA256 != "bb" || o.Folder || o.Settled || o.Pending ||
			o.Missing != "firmware lamp 1.0 has no firmware.elf" {
			t.Fatalf("recorded 1.0 elf: %+v", o)
		}
		if o := byKey[Key("lamp", "2.0", "firmware.bin")]; o.Size != 3 || !strings.HasSuffix(o.Missing, "(current version)") {
			t.Fatalf("recorded current bin: %+v", o)
		}
		if o := byKey[Key("lamp", "0.9", "firmware.bin")]; !o.Folder || o.Size != -1 || o.SHA256 != "" {
			t.Fatalf("recorded adopted version: %+v", o)
		}

		for key, want := range map[string]bool{Key("lamp", "1.0", "firmware.bin"): true, Key("lamp", "0.9", "firmware.bin"): true,
			Key("lamp", "3.0", "firmware.bin"): false, Key("gone", "1.0", "firmware.bin"): false} {
			if got, err := s.Expects(ctx, key); err != nil || got != want {
				t.Errorf("Expects(%s) = %v %v, want %v", key, got, err, want)
			}
		}
		for key, want := range map[string]bool{
			Key("lamp", "1.0", "firmware.bin"): true,
			Key("lamp", "1.0", "firmware.map"): false, // not in 1.0's record
			Key("lamp", "0.9", "anything"):     true,  // no record: the folder is the version's
			Key("lamp", "3.0", "firmware.bin"): false,
			"firmware/lamp/1.0":                false,
		} {
			err := d.Tx(ctx, func(tx *sql.Tx) error {
				owned, err := s.OwnedTx(ctx, tx, key)
				if err != nil {
					return err
				}
				if owned != want {
					t.Errorf("OwnedTx(%s) = %v, want %v", key, owned, want)
				}
				// The model row stays locked until the transaction ends (PostgreSQL; on
				// SQLite the transaction holds the database's write lock).
				if _, _, _, parsed := ParseKey(key); d.Server() && parsed && !modelLockedElsewhere(t, d, "lamp") {
					t.Errorf("OwnedTx(%s) left the model row unlocked", key)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if d.Server() && modelLockedElsewhere(t, d, "lamp") {
			t.Fatal("model row still locked after the transaction")
		}

		// Repair: the current version stays (unrepairable); another version with its
		// object present is left; without it, it leaves the history and its folder is queued.
		if err := st.Delete(ctx, Key("lamp", "2.0", "firmware.elf")); err != nil {
			t.Fatal(err)
		}
		if rep, unrep, err := s.RepairMissing(ctx, Key("lamp", "2.0", "firmware.elf")); err != nil || rep || !unrep {
			t.Fatalf("repair of the current version: %v %v %v", rep, unrep, err)
		}
		if rep, unrep, err := s.RepairMissing(ctx, Key("lamp", "1.0", "firmware.elf")); err != nil || rep || unrep {
			t.Fatalf("repair with the object present: %v %v %v", rep, unrep, err)
		}
		if err := st.Delete(ctx, Key("lamp", "1.0", "firmware.elf")); err != nil {
			t.Fatal(err)
		}
		if rep, unrep, err := s.RepairMissing(ctx, Key("lamp", "1.0", "firmware.elf")); err != nil || !rep || unrep {
			t.Fatalf("repair: %v %v %v", rep, unrep, err)
		}
		var versions, queued int
		if err := d.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM firmware_versions WHERE version = '1.0'),
			(SELECT COUNT(*) FROM blob_deletions WHERE key = $1 AND is_prefix)`, Prefix("lamp", "1.0")).Scan(&versions, &queued); err != nil {
			t.Fatal(err)
		}
		if versions != 0 || queued != 1 || testenv.Count(t, d, "firmware_versions") != 2 {
			t.Fatalf("after repair: 1.0 rows %d, queued %d, %d versions", versions, queued, testenv.Count(t, d, "firmware_versions"))
		}
		// Gone already: repaired, nothing more queued.
		if rep, _, err := s.RepairMissing(ctx, Key("lamp", "1.0", "firmware.elf")); err != nil || !rep || testenv.Count(t, d, "blob_deletions") != 1 {
			t.Fatalf("second repair: %v %v, %d queued", rep, err, testenv.Count(t, d, "blob_deletions"))
		}
		if _, _, err := s.RepairMissing(ctx, "firmware/lamp"); err == nil {
			t.Fatal("repair of a key outside the layout")
		}
	})
}

// What migrate-to-s3 reads and replaces of the history.
func TestLegacyImportHelpers(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		d := env.DB
		fixture(t, d, env.Store)
		vs, err := StoredVersions(ctx, d, 1)
		if err != nil || len(vs) != 3 {
			t.Fatalf("StoredVersions: %+v %v", vs, err)
		}
		if vs["0.9"].Artifacts.Valid || !vs["1.0"].Artifacts.Valid || vs["1.0"].UploadedAt.IsZero() {
			t.Fatalf("stored versions: %+v", vs)
		}
		arts := map[string]ArtifactInfo{"firmware.bin": {Size: 3, SHA256: "aa"}, "firmware.elf": {Size: 4, SHA256: "bb"}}
		if !SameArtifacts(vs["1.0"].Artifacts.String, arts) {
			t.Fatal("SameArtifacts: the stored record differs from itself")
		}
		arts["firmware.elf"] = ArtifactInfo{Size: 4, SHA256: "cc"}
		if SameArtifacts(vs["1.0"].Artifacts.String, arts) || SameArtifacts("not json", arts) {
			t.Fatal("SameArtifacts: different records are the same")
		}
		delete(arts, "firmware.elf")
		if SameArtifacts(vs["1.0"].Artifacts.String, arts) {
			t.Fatal("SameArtifacts: a record with fewer artifacts is the same")
		}
		s := testService(d, env.Store)
		for _, v := range []string{"0.9", "1.0"} {
			if err := s.DropUnrecordedVersion(ctx, 1, v); err != nil {
				t.Fatal(err)
			}
		}
		vs, err = StoredVersions(ctx, d, 1)
		if _, left := vs["0.9"]; err != nil || left || len(vs) != 2 {
			t.Fatalf("after dropping: %+v %v", vs, err)
		}
		if vs, err := StoredVersions(ctx, d, 2); err != nil || len(vs) != 0 {
			t.Fatalf("versions of another model: %v %v", vs, err)
		}
	})
}

// objectsNop stands in for the core dump owner and the notifier: these tests need neither.
type objectsNop struct{}

func (objectsNop) DeviceDeleting(context.Context, *sql.Tx, *devices.Device) error { return nil }
func (objectsNop) ConfigChanged(context.Context, string)                          {}
func (objectsNop) FirmwareNeeds(context.Context, *sql.Tx, int64) ([]string, []string, error) {
	return nil, nil, nil
}
func (objectsNop) FirmwareArrived(context.Context, int64, string, string) (int, error) { return 0, nil }
