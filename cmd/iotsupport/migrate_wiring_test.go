package main_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/proctest"
)

// migrate-to-s3 imports firmware through the same service graph as the server
// (app.Assemble): retention keeps the versions that undecoded dumps need, and dumps that
// failed for want of an imported version are queued for decoding again. (It once built its
// own firmware service without either rule.)
func TestMigrateToS3KeepsNeededFirmwareAndRequeuesWaitingDumps(t *testing.T) {
	f := newLegacyFixture(t, "008")
	env := append(f.environ, "MAX_FIRMWARES=1")
	if out, errOut, code := proctest.Run(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %d\n%s\n%s", code, out, errOut)
	}
	alphaDevice := f.devices["aaaa2222"]
	// Waits for 1.8.0, the oldest version: without the guard, MAX_FIRMWARES=1 prunes it.
	pending := f.id(t, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, uploaded_at, created_at, updated_at)
		VALUES ($1, 'esp32c3', '1.8.0', 10, 'PENDING', now(), now(), now()) RETURNING id`, alphaDevice)
	// Decoded before the current version 1.10.0 was stored here: it failed for want of it.
	waiting := f.id(t, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, parse_error, uploaded_at, created_at, updated_at)
		VALUES ($1, 'esp32c3', '1.10.0', 10, 'ERROR', 'no_firmware', now(), now(), now()) RETURNING id`, alphaDevice)

	if _, errOut, code := proctest.Run(t, env, "migrate-to-s3"); code != 0 {
		t.Fatalf("migrate-to-s3: exit %d\n%s", code, errOut)
	}
	var versions []string
	rows, err := f.d.QueryContext(context.Background(), `SELECT version FROM firmware_versions WHERE device_model_id = $1 ORDER BY version`, f.models["alpha"])
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	rows.Close()
	got := strings.Join(versions, ",")
	if !strings.Contains(","+got+",", ",1.8.0,") {
		t.Errorf("alpha versions after migrate-to-s3 = %s: 1.8.0, which PENDING dump %d needs, was pruned", got, pending)
	}
	if strings.Contains(","+got+",", ",1.7.0,") {
		t.Errorf("alpha versions after migrate-to-s3 = %s: 1.7.0 (needed by nothing, older than MAX_FIRMWARES=1 keeps) was not pruned", got)
	}
	var status string
	if err := f.d.QueryRowContext(context.Background(), `SELECT parse_status FROM coredumps WHERE id = $1`, waiting).Scan(&status); err != nil {
		t.Fatal(err)
	}
	var jobs int
	if err := f.d.QueryRowContext(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'decode_coredump' AND args->>'coredump_id' = $1`,
		strconv.FormatInt(waiting, 10)).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if status != "PENDING" || jobs != 1 {
		t.Errorf("dump %d waiting for imported 1.10.0: status %s with %d decode job(s), want PENDING with 1", waiting, status, jobs)
	}
}
