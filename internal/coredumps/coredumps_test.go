package coredumps

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestMigrationAdoptsLegacyTable: a database of the older service at its revision 005 has
// coredumps with `filename NOT NULL`; migration 00005 keeps the table and its rows, adds
// our columns and lets new uploads omit the filename.
func TestMigrationAdoptsLegacyTable(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresURL(t)
	d, err := db.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, q := range []string{
		`CREATE TABLE device_models (id SERIAL PRIMARY KEY, code VARCHAR(50) NOT NULL, name VARCHAR(255) NOT NULL,
			firmware_version VARCHAR(50), config_schema TEXT, created_at TIMESTAMP NOT NULL DEFAULT now(), updated_at TIMESTAMP NOT NULL DEFAULT now())`,
		`CREATE TABLE devices (id SERIAL PRIMARY KEY, key VARCHAR(8) NOT NULL, device_model_id INTEGER NOT NULL REFERENCES device_models (id) ON DELETE CASCADE,
			config TEXT NOT NULL, device_name VARCHAR(255), device_entity_id VARCHAR(255), enable_ota BOOLEAN,
			created_at TIMESTAMP NOT NULL DEFAULT now(), updated_at TIMESTAMP NOT NULL DEFAULT now())`,
		`CREATE TABLE coredumps (id SERIAL PRIMARY KEY, device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			filename VARCHAR(255) NOT NULL, chip VARCHAR(50) NOT NULL, firmware_version VARCHAR(50) NOT NULL, size INTEGER NOT NULL,
			parse_status VARCHAR(20) NOT NULL, parsed_output TEXT, uploaded_at TIMESTAMP NOT NULL, parsed_at TIMESTAMP,
			created_at TIMESTAMP NOT NULL DEFAULT now(), updated_at TIMESTAMP NOT NULL DEFAULT now())`,
		`CREATE INDEX ix_coredumps_device_id ON coredumps (device_id)`,
		`INSERT INTO device_models (code, name) VALUES ('lamp', 'Lamp')`,
		`INSERT INTO devices (key, device_model_id, config) VALUES ('abcd2345', 1, '{}')`,
		`INSERT INTO coredumps (device_id, filename, chip, firmware_version, size, parse_status, parsed_output, uploaded_at, parsed_at)
			VALUES (1, 'coredump_20260211T143000_123456Z.dmp', 'esp32s3', '1.0.0', 4, 'PARSED', 'old output', now(), now())`,
	} {
		if _, err := d.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate over the legacy schema: %v", err)
	}
	store, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := newTestService(d, store, Options{})
	old, err := s.Get(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if old.ParseStatus != StatusParsed || old.ParsedOutput == nil || *old.ParsedOutput != "old output" || old.Container != nil || old.SHA256 != nil || old.Recognized {
		t.Fatalf("legacy row: %+v", old)
	}
	dump := BuildDump(0x00090102, "0123456789abcdef")
	c, err := s.Upload(ctx, UploadInput{DeviceID: 1, DeviceKey: "abcd2345", Chip: "ESP32S3", FirmwareVersion: "1.0.1", Body: bytes.NewReader(dump)})
	if err != nil {
		t.Fatalf("upload into the adopted table: %v", err)
	}
	if c.Chip != "esp32s3" || c.Container == nil || *c.Container != ContainerRaw || c.ChecksumOK == nil || !*c.ChecksumOK ||
		c.AppELFSHAPrefix == nil || *c.AppELFSHAPrefix != "0123456789abcdef" || c.DumpVersion == nil || *c.DumpVersion != 0x00090102 {
		t.Fatalf("new row: %+v", c)
	}
	var filename *string
	if err := d.QueryRowContext(ctx, `SELECT filename FROM coredumps WHERE id = $1`, c.ID).Scan(&filename); err != nil || filename != nil {
		t.Fatalf("filename of the new row: %v %v", filename, err)
	}
	p, err := s.List(ctx, 1, 100, 0)
	if err != nil || p.Total != 2 || p.Coredumps[0].ID != c.ID {
		t.Fatalf("list: %+v %v", p, err)
	}
}

// TestUploadWaitsForFirmwareChange: on PostgreSQL a core dump upload shares its model's
// row, which firmware uploads, pins and deletions hold exclusively (firmware.LockModel),
// so retention's check for versions PENDING dumps need cannot miss a dump committed
// meanwhile. The upload must wait for the firmware transaction and then succeed.
func TestUploadWaitsForFirmwareChange(t *testing.T) {
	ctx := context.Background()
	env := testenv.New(t, "postgres+s3")
	if _, err := env.DB.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var mid, did int64
	if err := env.DB.QueryRowContext(ctx, `INSERT INTO device_models (code, name, created_at, updated_at) VALUES ('lockm', 'L', now(), now()) RETURNING id`).Scan(&mid); err != nil {
		t.Fatal(err)
	}
	if err := env.DB.QueryRowContext(ctx, `INSERT INTO devices (key, device_model_id, config, active, created_at, updated_at)
		VALUES ('lock2345', $1, '{}', true, now(), now()) RETURNING id`, mid).Scan(&did); err != nil {
		t.Fatal(err)
	}
	s := newTestService(env.DB, env.Store, Options{MaxBytes: 1 << 20, Keep: 5, UploadsPerHour: 100})

	tx, err := env.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	// What firmware.LockModel does at the start of every firmware change.
	if _, err := tx.ExecContext(ctx, `SELECT id FROM device_models WHERE id = $1 FOR UPDATE`, mid); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Upload(ctx, UploadInput{DeviceID: did, DeviceKey: "lock2345", Chip: "esp32", FirmwareVersion: "1.0.0",
			Body: bytes.NewReader(BuildDump(0x00000102, ""))})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("upload finished (%v) while a firmware change held the model", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("upload after the firmware change: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("upload still blocked after the firmware change committed")
	}
}
