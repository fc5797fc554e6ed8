package fsck_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/fsck"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func put(t *testing.T, s blob.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
}

func insertID(t *testing.T, d *db.DB, q string, args ...any) int64 {
	t.Helper()
	var id int64
	if err := d.QueryRowContext(context.Background(), q+" RETURNING id", args...).Scan(&id); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return id
}

// fixture: model lamp (current 2.0), versions 1.0 and 2.0 with two artifacts each; device
// abcd1234 with dumps; then damage of every kind.
func TestCheckAndRepair(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		d, s := env.DB, env.Store
		now := db.Now()
		mid := insertID(t, d, `INSERT INTO device_models (code, name, firmware_version, created_at, updated_at) VALUES ('lamp', 'Lamp', '2.0', $1, $1)`, now)
		did := insertID(t, d, `INSERT INTO devices (key, device_model_id, config, created_at, updated_at) VALUES ('abcd1234', $1, '{}', $2, $2)`, mid, now)
		bin, elf := []byte("binary image"), []byte("elf file")
		arts := fmt.Sprintf(`{"firmware.bin":{"size":%d,"sha256":"%s"},"firmware.elf":{"size":%d,"sha256":"%s"}}`, len(bin), sum(bin), len(elf), sum(elf))
		for _, v := range []string{"1.0", "2.0", "3.0"} {
			testenv.MustExec(t, d, `INSERT INTO firmware_versions (device_model_id, version, uploaded_at, created_at, artifacts) VALUES ($1, $2, $3, $3, $4)`, mid, v, now, arts)
		}
		for _, v := range []string{"1.0", "2.0", "3.0"} {
			put(t, s, "firmware/lamp/"+v+"/firmware.bin", bin)
			put(t, s, "firmware/lamp/"+v+"/firmware.elf", elf)
		}
		dump := []byte("core dump bytes")
		var ids []int64
		for i := 0; i < 4; i++ {
			id := insertID(t, d, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, uploaded_at, created_at, updated_at, sha256)
				VALUES ($1, 'esp32', '2.0', $2, 'PENDING', $3, $3, $3, $4)`, did, len(dump), now, sum(dump))
			ids = append(ids, id)
			put(t, s, fmt.Sprintf("coredumps/abcd1234/%d.dmp", id), dump)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg, err := config.Load(func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		svc, err := app.Assemble(cfg, log, d, s, notify.Nop{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := svc.Fsck
		rep, err := c.Check(ctx, fsck.Options{Grace: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Clean() || rep.Objects != 10 || rep.Rows != 7 || rep.Hashed != 10 {
			t.Fatalf("clean fixture: %+v", rep)
		}

		// Damage: an orphan, a queued object, dangling dump, dangling current and old
		// firmware, a size and a content mismatch, a stuck outbox entry.
		put(t, s, "coredumps/abcd1234/999.dmp", dump)
		put(t, s, "firmware/gone/1.0/firmware.bin", bin)
		testenv.MustExec(t, d, `INSERT INTO blob_deletions (key, is_prefix, created_at, next_attempt_at) VALUES ('firmware/gone/', true, $1, $1)`, now)
		for _, k := range []string{fmt.Sprintf("coredumps/abcd1234/%d.dmp", ids[0]), "firmware/lamp/2.0/firmware.elf", "firmware/lamp/1.0/firmware.elf"} {
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		put(t, s, fmt.Sprintf("coredumps/abcd1234/%d.dmp", ids[1]), []byte("short"))
		put(t, s, fmt.Sprintf("coredumps/abcd1234/%d.dmp", ids[2]), []byte("core dump BYTES"))

		// Within the grace period: the orphan is recent, the queued prefix is accounted for.
		rep, err = c.Check(ctx, fsck.Options{Grace: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		want := fsck.Counts{fsck.Orphan: 0, fsck.Dangling: 3, fsck.SizeMismatch: 1, fsck.SHA256Mismatch: 1, fsck.StuckOutbox: 0}
		if fmt.Sprint(rep.Counts) != fmt.Sprint(want) || rep.Recent != 1 || rep.Queued != 1 {
			t.Fatalf("counts %v recent %d queued %d, want %v; %+v", rep.Counts, rep.Recent, rep.Queued, want, rep.Findings)
		}
		// Past it (grace 0 and a clock a second ahead).
		c.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
		rep, err = c.Check(ctx, fsck.Options{Grace: 0})
		if err != nil {
			t.Fatal(err)
		}
		want[fsck.Orphan], want[fsck.StuckOutbox] = 1, 1
		if fmt.Sprint(rep.Counts) != fmt.Sprint(want) {
			t.Fatalf("counts %v, want %v; %+v", rep.Counts, want, rep.Findings)
		}
		if err := c.Repair(ctx, rep, fsck.Options{Grace: 0}); err != nil {
			t.Fatal(err)
		}
		// Left: the current version's missing ELF, both mismatches, the stuck entry.
		if rep.Remaining != 4 {
			t.Fatalf("remaining %d: %+v", rep.Remaining, rep.Findings)
		}
		for _, f := range rep.Findings {
			if f.Key == "firmware/lamp/2.0/firmware.elf" && !f.Unrepairable {
				t.Fatalf("current version dangling not flagged unrepairable: %+v", f)
			}
		}
		if _, err := s.Stat(ctx, "coredumps/abcd1234/999.dmp"); err == nil {
			t.Fatal("orphan not deleted")
		}
		var status, kind string
		if err := d.QueryRowContext(ctx, `SELECT parse_status, parse_error FROM coredumps WHERE id = $1`, ids[0]).Scan(&status, &kind); err != nil {
			t.Fatal(err)
		}
		if status != "ERROR" || kind != "missing_object" {
			t.Fatalf("dangling dump: %s %s", status, kind)
		}
		var n int
		_ = d.QueryRowContext(ctx, `SELECT COUNT(*) FROM firmware_versions WHERE version = '1.0'`).Scan(&n)
		if n != 0 {
			t.Fatal("dangling old version still in history")
		}
		// Again: the marked dump and the dropped version are no longer findings; the
		// dropped version's remaining object is queued, not an orphan.
		rep, err = c.Check(ctx, fsck.Options{Grace: 0})
		if err != nil {
			t.Fatal(err)
		}
		want = fsck.Counts{fsck.Orphan: 0, fsck.Dangling: 1, fsck.SizeMismatch: 1, fsck.SHA256Mismatch: 1, fsck.StuckOutbox: 2}
		if fmt.Sprint(rep.Counts) != fmt.Sprint(want) || rep.Marked != 1 || rep.Queued != 2 {
			t.Fatalf("after repair: counts %v marked %d queued %d; %+v", rep.Counts, rep.Marked, rep.Queued, rep.Findings)
		}
	})
}
