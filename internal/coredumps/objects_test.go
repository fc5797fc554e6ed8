package coredumps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestParseKeyInvertsKey(t *testing.T) {
	for _, id := range []int64{1, 42, 9007199254740993} {
		dev, got, ok := ParseKey(Key("abcd1234", id))
		if !ok || dev != "abcd1234" || got != id {
			t.Fatalf("ParseKey(Key(abcd1234, %d)) = %q %d %v", id, dev, got, ok)
		}
	}
	for _, key := range []string{"coredumps/abcd1234/007.dmp", "coredumps/abcd1234/+7.dmp", "coredumps/abcd1234/x.dmp",
		"coredumps/abcd1234/7.bin", "coredumps/abcd1234/sub/7.dmp", "coredumps//7.dmp", "coredumps/abcd1234", "firmware/m/1.0/firmware.bin"} {
		if _, _, ok := ParseKey(key); ok {
			t.Errorf("ParseKey(%q) accepted a key outside the layout", key)
		}
	}
}

// lockedElsewhere reports whether another connection finds the device's row locked.
func lockedElsewhere(t *testing.T, d *db.DB, deviceKey string) bool {
	t.Helper()
	rows, err := d.QueryContext(context.Background(), `SELECT 1 FROM devices WHERE key = $1 FOR UPDATE NOWAIT`, deviceKey)
	if err != nil {
		return strings.Contains(err.Error(), "55P03") || strings.Contains(err.Error(), "could not obtain lock")
	}
	rows.Close()
	return false
}

func putDump(t *testing.T, s blob.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
}

// The consistency check's questions: the objects the rows expect (with size and SHA-256,
// settled rows marked), whether a row still expects or owns a key (under the device's
// lock), and the repair of a row whose object is gone.
func TestObjectsForTheConsistencyCheck(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		d, st := env.DB, env.Store
		now := db.Now()
		var mid, did int64
		if err := d.QueryRowContext(ctx, `INSERT INTO device_models (code, name, created_at, updated_at) VALUES ('lamp', 'Lamp', $1, $1) RETURNING id`, now).Scan(&mid); err != nil {
			t.Fatal(err)
		}
		if err := d.QueryRowContext(ctx, `INSERT INTO devices (key, device_model_id, config, created_at, updated_at) VALUES ('abcd1234', $1, '{}', $2, $2) RETURNING id`, mid, now).Scan(&did); err != nil {
			t.Fatal(err)
		}
		dump := []byte("core dump bytes")
		sum := sha256.Sum256(dump)
		var ok, marked int64
		if err := d.QueryRowContext(ctx, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, uploaded_at, created_at, updated_at, sha256)
			VALUES ($1, 'esp32', '1.0', $2, 'PENDING', $3, $3, $3, $4) RETURNING id`, did, len(dump), now, hex.EncodeToString(sum[:])).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if err := d.QueryRowContext(ctx, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, parse_error, uploaded_at, created_at, updated_at)
			VALUES ($1, 'esp32', '1.0', 9, 'ERROR', $2, $3, $3, $3) RETURNING id`, did, KindMissingObject, now).Scan(&marked); err != nil {
			t.Fatal(err)
		}
		putDump(t, st, Key("abcd1234", ok), dump)
		s := newTestService(d, st, Options{})
		if s.ObjectPrefix() != "coredumps/" || !strings.HasPrefix(Key("abcd1234", ok), s.ObjectPrefix()) {
			t.Fatalf("prefix %q", s.ObjectPrefix())
		}

		n, objs, err := s.Recorded(ctx)
		if err != nil || n != 2 || len(objs) != 2 {
			t.Fatalf("Recorded: %d %+v %v", n, objs, err)
		}
		byKey := map[string]blob.Recorded{}
		for _, o := range objs {
			byKey[o.Key] = o
		}
		got := byKey[Key("abcd1234", ok)]
		if got.Size != int64(len(dump)) || got.SHA256 != hex.EncodeToString(sum[:]) || got.Settled || got.Pending || got.Folder || !strings.Contains(got.Missing, "core dump") {
			t.Fatalf("recorded dump: %+v", got)
		}
		if m := byKey[Key("abcd1234", marked)]; !m.Settled || m.Pending {
			t.Fatalf("marked dump not settled: %+v", m)
		}

		for key, want := range map[string]bool{Key("abcd1234", ok): true, Key("abcd1234", marked): false, Key("abcd1234", 999): false, Key("ffff0000", ok): false} {
			if got, err := s.Expects(ctx, key); err != nil || got != want {
				t.Errorf("Expects(%s) = %v %v, want %v", key, got, err, want)
			}
		}
		for key, want := range map[string]bool{Key("abcd1234", ok): true, Key("abcd1234", marked): true, Key("abcd1234", 999): false, "coredumps/abcd1234/junk": false} {
			err := d.Tx(ctx, func(tx *sql.Tx) error {
				owned, err := s.OwnedTx(ctx, tx, key)
				if err != nil {
					return err
				}
				if owned != want {
					t.Errorf("OwnedTx(%s) = %v, want %v", key, owned, want)
				}
				// The device row stays locked until the transaction ends (PostgreSQL; on
				// SQLite the transaction holds the database's write lock).
				if _, _, parsed := ParseKey(key); d.Server() && parsed && !lockedElsewhere(t, d, "abcd1234") {
					t.Errorf("OwnedTx(%s) left the device row unlocked", key)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if d.Server() && lockedElsewhere(t, d, "abcd1234") {
			t.Fatal("device row still locked after the transaction")
		}

		// Repair: nothing while the object exists; ERROR/missing_object once it is gone.
		if rep, unrep, err := s.RepairMissing(ctx, Key("abcd1234", ok)); err != nil || rep || unrep {
			t.Fatalf("repair with the object present: %v %v %v", rep, unrep, err)
		}
		if err := st.Delete(ctx, Key("abcd1234", ok)); err != nil {
			t.Fatal(err)
		}
		if rep, unrep, err := s.RepairMissing(ctx, Key("abcd1234", ok)); err != nil || !rep || unrep {
			t.Fatalf("repair: %v %v %v", rep, unrep, err)
		}
		c, err := s.Get(ctx, did, ok)
		if err != nil || c.ParseStatus != StatusError || c.ParseError == nil || *c.ParseError != KindMissingObject {
			t.Fatalf("repaired row: %+v %v", c, err)
		}
		if exp, err := s.Expects(ctx, Key("abcd1234", ok)); err != nil || exp {
			t.Fatalf("repaired row still expects its object: %v %v", exp, err)
		}
		if _, objs, err := s.Recorded(ctx); err != nil || !objs[0].Settled || !objs[1].Settled {
			t.Fatalf("after repair: %+v %v", objs, err)
		}
		if rep, _, err := s.RepairMissing(ctx, Key("abcd1234", 999)); err != nil || rep {
			t.Fatalf("repair of a missing row: %v %v", rep, err)
		}
		if _, _, err := s.RepairMissing(ctx, "coredumps/abcd1234/junk"); err == nil {
			t.Fatal("repair of a key outside the layout")
		}
	})
}

// The older service's filename column, as migrate-to-s3 and finalize change it: rows that
// name a file are listed and count as Pending for the check; a moved file clears its
// name once; finalizing deletes the rows still naming one and drops the column.
func TestLegacyFilenameColumn(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		d := env.DB
		s := newTestService(d, env.Store, Options{})
		if has, err := HasLegacyFilename(ctx, d, d); err != nil || has {
			t.Fatalf("our schema has a filename column: %v %v", has, err)
		}
		now := db.Now()
		testenv.MustExec(t, d, `INSERT INTO device_models (code, name, created_at, updated_at) VALUES ('lamp', 'Lamp', $1, $1)`, now)
		testenv.MustExec(t, d, `INSERT INTO devices (key, device_model_id, config, created_at, updated_at) VALUES ('abcd1234', 1, '{}', $1, $1)`, now)
		for i := 0; i < 3; i++ {
			testenv.MustExec(t, d, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, uploaded_at, created_at, updated_at)
				VALUES (1, 'esp32', '1.0', $1, 'PARSED', $2, $2, $2)`, 10+i, now)
		}
		testenv.MustExec(t, d, `ALTER TABLE coredumps ADD COLUMN filename VARCHAR(255)`)
		testenv.MustExec(t, d, `UPDATE coredumps SET filename = 'coredump_' || CAST(id AS VARCHAR(20)) || '.dmp' WHERE id IN (2, 3)`)
		if has, err := HasLegacyFilename(ctx, d, d); err != nil || !has {
			t.Fatalf("filename column not found: %v %v", has, err)
		}
		files, err := LegacyFiles(ctx, d)
		if err != nil || len(files) != 2 {
			t.Fatalf("LegacyFiles: %+v %v", files, err)
		}
		if f := files[0]; f.ID != 2 || f.DeviceID != 1 || f.DeviceKey != "abcd1234" || f.Filename != "coredump_2.dmp" || f.Size != 11 {
			t.Fatalf("legacy file: %+v", f)
		}
		_, objs, err := s.Recorded(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if want := o.Key != Key("abcd1234", 1); o.Pending != want {
				t.Fatalf("Pending of %s = %v, want %v", o.Key, o.Pending, want)
			}
		}

		if err := d.Tx(ctx, func(tx *sql.Tx) error { return LegacyFileMovedTx(ctx, tx, 2, "other.dmp") }); err == nil {
			t.Fatal("a moved file with another name was recorded")
		}
		if err := d.Tx(ctx, func(tx *sql.Tx) error { return LegacyFileMovedTx(ctx, tx, 2, "coredump_2.dmp") }); err != nil {
			t.Fatal(err)
		}
		if err := d.Tx(ctx, func(tx *sql.Tx) error { return LegacyFileMovedTx(ctx, tx, 2, "coredump_2.dmp") }); err == nil {
			t.Fatal("the same file was recorded as moved twice")
		}
		if files, err := LegacyFiles(ctx, d); err != nil || len(files) != 1 || files[0].ID != 3 {
			t.Fatalf("after the move: %+v %v", files, err)
		}

		discarded := -1
		if err := d.Tx(ctx, func(tx *sql.Tx) error {
			n, err := LockLegacyFilesTx(ctx, d, tx)
			if err != nil || n != 1 {
				t.Fatalf("LockLegacyFilesTx: %d %v", n, err)
			}
			discarded, err = DropLegacyFilenameTx(ctx, tx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if discarded != 1 || testenv.Count(t, d, "coredumps") != 2 {
			t.Fatalf("discarded %d, %d rows left", discarded, testenv.Count(t, d, "coredumps"))
		}
		if has, err := HasLegacyFilename(ctx, d, d); err != nil || has {
			t.Fatalf("filename column still there: %v %v", has, err)
		}
		if n, objs, err := s.Recorded(ctx); err != nil || n != 2 || objs[0].Pending || objs[1].Pending {
			t.Fatalf("after finalize: %d %+v %v", n, objs, err)
		}
	})
}
