package legacy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/legacy"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// legacyDB builds the older service's schema at revision 005 in a fresh PostgreSQL schema.
func legacyDB(t *testing.T) *db.DB {
	t.Helper()
	d, err := db.Open(context.Background(), testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ddl, err := os.ReadFile(filepath.Join("testdata", "alembic_005.sql"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.MustExec(t, d, string(ddl))
	return d
}

func TestServeRefusesAndAdoptionIsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	d := legacyDB(t)
	if err := legacy.CheckAdopted(ctx, d); !errors.Is(err, legacy.ErrNotAdopted) {
		t.Fatalf("CheckAdopted before adoption: %v", err)
	}
	st, adopted, err := legacy.Adopt(ctx, d)
	if err != nil || !adopted || st.Revision != "005" || !st.HasFilename {
		t.Fatalf("Adopt: %+v %v %v", st, adopted, err)
	}
	if _, adopted, err := legacy.Adopt(ctx, d); err != nil || adopted {
		t.Fatalf("second Adopt: %v %v", adopted, err)
	}
	if err := legacy.CheckAdopted(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Migrate(ctx); err != nil {
		t.Fatalf("our migrations over revision 005: %v", err)
	}
	// The older columns and rows stay; ours were added (devices.active came with its 008).
	testenv.MustExec(t, d, `INSERT INTO device_models (code, name) VALUES ('m', 'M')`)
	testenv.MustExec(t, d, `INSERT INTO devices (key, device_model_id, config) VALUES ('abcd2345', 1, '{}')`)
	var active bool
	var rotation string
	if err := d.QueryRow(`SELECT active, rotation_state FROM devices`).Scan(&active, &rotation); err != nil || !active || rotation != "OK" {
		t.Fatalf("devices after adoption: %v %q %v", active, rotation, err)
	}
}

func TestAdoptRefusesUnsupportedRevisions(t *testing.T) {
	ctx := context.Background()
	d := legacyDB(t)
	testenv.MustExec(t, d, `UPDATE alembic_version SET version_num = '004'`)
	if _, _, err := legacy.Adopt(ctx, d); err == nil || !strings.Contains(err.Error(), `"004"`) {
		t.Fatalf("Adopt at 004: %v", err)
	}
	st, err := legacy.Detect(ctx, d)
	if err != nil || st.Adopted {
		t.Fatalf("refused adoption recorded something: %+v %v", st, err)
	}
}

func TestOurOwnDatabaseIsNotLegacy(t *testing.T) {
	ctx := context.Background()
	d := testenv.OpenDB(t, testenv.SQLiteURL(t))
	if _, adopted, err := legacy.Adopt(ctx, d); err != nil || adopted {
		t.Fatalf("Adopt on our schema: %v %v", adopted, err)
	}
	if err := legacy.CheckAdopted(ctx, d); err != nil {
		t.Fatal(err)
	}
	if n, err := legacy.Finalize(ctx, d, false); err != nil || n != 0 {
		t.Fatalf("Finalize on our schema: %d %v", n, err)
	}
}

// More ZIPs than MAX_FIRMWARES: the oldest by file time are reported, not imported (they
// would be pruned at once and re-imported by every run), and a re-run changes nothing.
func TestMigrationMirrorsRetention(t *testing.T) {
	ctx := context.Background()
	d := legacyDB(t)
	if _, _, err := legacy.Adopt(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.MustExec(t, d, `INSERT INTO device_models (code, name, firmware_version) VALUES ('m', 'M', '1.0.0')`)
	assets := t.TempDir()
	if err := os.MkdirAll(filepath.Join(assets, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	versions := []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"}
	for i, v := range versions {
		z, err := bundletest.Synthetic("m", "esp32c3", v, bundletest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(assets, "m", "firmware-"+v+".zip")
		if err := os.WriteFile(p, z, 0o644); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * 24 * time.Hour)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	store, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) (string, bool) {
		if k == "MAX_FIRMWARES" {
			return "3", true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := app.Assemble(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), d, store, notify.Nop{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fw := svc.Firmware
	run := func() *legacy.Report {
		r, err := legacy.MigrateToS3(ctx, legacy.Options{DB: d, Store: store, Firmware: fw, Devices: svc.Devices, AssetsDir: assets, MaxFirmwares: 3})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := run()
	// Kept: the newest three by file time, plus the current version 1.0.0 (the oldest).
	if r.FirmwareMigrated != 4 || r.FirmwareSkipped != 1 || !strings.Contains(strings.Join(r.Warnings, "\n"), "firmware-1.1.0.zip (version 1.1.0) is older than the newest 3") {
		t.Fatalf("first run: %+v", r)
	}
	if n := testenv.Count(t, d, "firmware_versions"); n != 4 {
		t.Fatalf("%d versions stored", n)
	}
	if n := testenv.Count(t, d, "blob_deletions"); n != 0 {
		t.Fatalf("retention pruned something the migration imported: %d deletions queued", n)
	}
	r = run()
	if r.FirmwareMigrated != 0 || r.FirmwareAlready != 4 || !r.NothingToDo() {
		t.Fatalf("second run: %+v", r)
	}
}
