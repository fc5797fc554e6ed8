package coredumps

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/outbox"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// unreadable fails the test if an upload reads its body.
type unreadable struct{ t *testing.T }

func (u unreadable) Read([]byte) (int, error) {
	u.t.Error("the body of a refused device was read")
	return 0, io.EOF
}

func testDevice(t *testing.T, env *testenv.Env, key string) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := env.DB.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var mid, did int64
	if err := env.DB.QueryRowContext(ctx, `INSERT INTO device_models (code, name, created_at, updated_at) VALUES ($1, 'M', $2, $2) RETURNING id`,
		"m"+key, now).Scan(&mid); err != nil {
		t.Fatal(err)
	}
	if err := env.DB.QueryRowContext(ctx, `INSERT INTO devices (key, device_model_id, config, active, created_at, updated_at)
		VALUES ($1, $2, '{}', true, $3, $3) RETURNING id`, key, mid, now).Scan(&did); err != nil {
		t.Fatal(err)
	}
	return did
}

// TestUploadRateLimitRetentionAndOutbox covers the upload transaction's statements on both
// dialects: the hourly window (and its log pruned once entries age out), the per-replica
// memory of refusals (no body read), retention with the outbox keys it queues, and
// settling deletions queued for the new object's key or a prefix above it.
func TestUploadRateLimitRetentionAndOutbox(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		const key = "rate2345"
		did := testDevice(t, env, key)
		opts := Options{MaxBytes: 1 << 20, Keep: 2, UploadsPerHour: 3}
		clock := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		now := func() time.Time { return clock }
		s, replica := newTestService(env.DB, env.Store, opts), newTestService(env.DB, env.Store, opts)
		s.SetClock(now)
		replica.SetClock(now)
		upload := func(s *Service, body io.Reader) (*Coredump, error) {
			return s.Upload(ctx, UploadInput{DeviceID: did, DeviceKey: key, Chip: "esp32", FirmwareVersion: "1.0", Body: body})
		}
		var ids []int64
		for i := range 3 {
			c, err := upload(s, bytes.NewReader([]byte{byte(i)}))
			if err != nil {
				t.Fatalf("upload %d: %v", i, err)
			}
			if c.ParseStatus != StatusPending || c.Size != 1 || c.DeviceID != did || c.SHA256 == nil || !c.UploadedAt.Equal(clock) {
				t.Fatalf("returned row: %+v", c)
			}
			ids = append(ids, c.ID)
			clock = clock.Add(time.Minute)
		}
		// Retention (Keep 2) removed the first row and queued exactly its object's key.
		var queued []string
		rows, err := env.DB.QueryContext(ctx, `SELECT key FROM blob_deletions WHERE NOT is_prefix ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			queued = append(queued, k)
		}
		rows.Close()
		if len(queued) != 1 || queued[0] != Key(key, ids[0]) {
			t.Fatalf("queued deletions %v, want [%s]", queued, Key(key, ids[0]))
		}
		if _, err := s.Get(ctx, did, ids[0]); !isKind(err, apperr.NotFound) {
			t.Fatalf("pruned row: %v", err)
		}

		// The fourth in the hour is refused; Retry-After counts from the oldest upload.
		_, err = upload(s, bytes.NewReader([]byte("x")))
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Kind != apperr.RateLimited || ae.RetryAfterSeconds != 3600-3*60 {
			t.Fatalf("4th upload: %v", err)
		}
		// Then this replica turns the device away without reading the body...
		if _, err := upload(s, unreadable{t}); !isKind(err, apperr.RateLimited) {
			t.Fatalf("remembered refusal: %v", err)
		}
		// ...and another replica refuses it from the database.
		if _, err := upload(replica, bytes.NewReader([]byte("x"))); !isKind(err, apperr.RateLimited) {
			t.Fatalf("other replica: %v", err)
		}

		// An hour after the first upload one slot frees up, and the aged-out log entry goes.
		clock = time.Date(2026, 11, 27, 11, 0, 0, 1000, time.UTC)
		// A prefix deletion queued for the device (as a deletion of a device with the same
		// key would) is settled before the new object is written, so it cannot delete it.
		tx, err := env.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.EnqueuePrefix(ctx, tx, DevicePrefix(key)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		c, err := upload(s, bytes.NewReader([]byte("late")))
		if err != nil {
			t.Fatalf("upload after the window moved: %v", err)
		}
		var logged, pending int
		if err := env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredump_uploads WHERE device_id = $1`, did).Scan(&logged); err != nil {
			t.Fatal(err)
		}
		if logged != 3 {
			t.Fatalf("upload log holds %d entries, want 3 (the aged-out one pruned)", logged)
		}
		if err := env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_deletions WHERE is_prefix`).Scan(&pending); err != nil || pending != 0 {
			t.Fatalf("prefix deletion left queued: %d %v", pending, err)
		}
		if _, err := readObject(ctx, env.Store, Key(key, c.ID)); err != nil {
			t.Fatalf("new object: %v", err)
		}

		// A deletion queued for the exact key the next row gets is settled too.
		clock = clock.Add(2 * time.Hour)
		next := Key(key, c.ID+1)
		if err := env.Store.Put(ctx, next, bytes.NewReader([]byte("stale")), 5, "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
		if err := env.DB.Tx(ctx, func(tx *sql.Tx) error { return outbox.Enqueue(ctx, tx, next) }); err != nil {
			t.Fatal(err)
		}
		c2, err := upload(s, bytes.NewReader([]byte("fresh")))
		if err != nil {
			t.Fatal(err)
		}
		if c2.ID != c.ID+1 {
			t.Fatalf("next id %d, want %d", c2.ID, c.ID+1)
		}
		if err := env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM blob_deletions WHERE key = $1`, next).Scan(&pending); err != nil || pending != 0 {
			t.Fatalf("exact deletion left queued: %d %v", pending, err)
		}
		if b, err := readObject(ctx, env.Store, next); err != nil || string(b) != "fresh" {
			t.Fatalf("object of the new row: %q %v", b, err)
		}
	})
}

func readObject(ctx context.Context, st blob.Store, key string) ([]byte, error) {
	rc, _, err := st.Get(ctx, key, nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func isKind(err error, k apperr.Kind) bool {
	var ae *apperr.Error
	return errors.As(err, &ae) && ae.Kind == k
}

func TestParentPrefixes(t *testing.T) {
	got := outbox.ParentPrefixes(Key("abcd2345", 7))
	if len(got) != 2 || got[0] != "coredumps/" || got[1] != "coredumps/abcd2345/" {
		t.Fatalf("%v", got)
	}
}
