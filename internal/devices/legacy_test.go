package devices

import (
	"context"
	"database/sql"
	"testing"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// bare opens an empty database of each dialect (no migrations: the older schema comes first).
func bare(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	for _, c := range []struct {
		name string
		dsn  func(testing.TB) string
	}{{"sqlite", testenv.SQLiteURL}, {"postgres", testenv.PostgresURL}} {
		t.Run(c.name, func(t *testing.T) {
			d, err := db.Open(context.Background(), c.dsn(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			fn(t, d)
		})
	}
}

func adopt(t *testing.T, d *db.DB) {
	t.Helper()
	ctx := context.Background()
	if err := d.Tx(ctx, func(tx *sql.Tx) error { return AdoptLegacyActiveTx(ctx, d, tx) }); err != nil {
		t.Fatal(err)
	}
}

// checkFlags asserts every device is active and rotation_excluded is what active was.
func checkFlags(t *testing.T, d *db.DB, excluded map[string]bool) {
	t.Helper()
	rows, err := d.QueryContext(context.Background(), `SELECT key, active, rotation_excluded FROM devices`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var key string
		var active, ex bool
		if err := rows.Scan(&key, &active, &ex); err != nil {
			t.Fatal(err)
		}
		if !active || ex != excluded[key] {
			t.Errorf("%s: active %v rotation_excluded %v, want true %v", key, active, ex, excluded[key])
		}
		n++
	}
	if n != len(excluded) {
		t.Fatalf("%d devices, want %d", n, len(excluded))
	}
}

// The older service's active (false: left out of credential rotation) becomes
// rotation_excluded and every device is active; the column is added when adoption runs
// before our migrations, and a schema without the older column is left alone.
func TestAdoptLegacyActiveTx(t *testing.T) {
	bare(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		testenv.MustExec(t, d, `CREATE TABLE devices (id INTEGER PRIMARY KEY, key VARCHAR(8) NOT NULL, active BOOLEAN NOT NULL)`)
		testenv.MustExec(t, d, `INSERT INTO devices (id, key, active) VALUES (1, 'aaaa2222', true), (2, 'bbbb3333', false)`)
		adopt(t, d)
		checkFlags(t, d, map[string]bool{"aaaa2222": false, "bbbb3333": true})

		testenv.MustExec(t, d, `CREATE TABLE other_devices (id INTEGER PRIMARY KEY, key VARCHAR(8) NOT NULL)`)
		testenv.MustExec(t, d, `DROP TABLE devices`)
		testenv.MustExec(t, d, `ALTER TABLE other_devices RENAME TO devices`)
		adopt(t, d)
		if has, err := d.ColumnExists(ctx, d, "devices", "rotation_excluded"); err != nil || has {
			t.Fatalf("a schema without devices.active was changed: %v %v", has, err)
		}
	})
	// Our own schema already has rotation_excluded.
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		d := env.DB
		now := db.Now()
		testenv.MustExec(t, d, `INSERT INTO device_models (code, name, created_at, updated_at) VALUES ('m', 'M', $1, $1)`, now)
		testenv.MustExec(t, d, `INSERT INTO devices (key, device_model_id, config, active, created_at, updated_at) VALUES
			('aaaa2222', 1, '{}', false, $1, $1), ('bbbb3333', 1, '{}', true, $1, $1)`, now)
		adopt(t, d)
		checkFlags(t, d, map[string]bool{"aaaa2222": true, "bbbb3333": false})
	})
}

func TestIDsByKey(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		s := NewService(env.DB, func(s string) string { return "h:" + s }, legacyNop{}, legacyNop{}, legacyNop{})
		if ids, err := IDsByKey(ctx, env.DB); err != nil || len(ids) != 0 {
			t.Fatalf("no devices: %v %v", ids, err)
		}
		m, err := s.CreateModel(ctx, ModelInput{Code: "m", Name: ptr("M")})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{}
		for i := 0; i < 3; i++ {
			dev, _, err := s.CreateDevice(ctx, m.ID, `{}`)
			if err != nil {
				t.Fatal(err)
			}
			want[dev.Key] = dev.ID
		}
		ids, err := IDsByKey(ctx, env.DB)
		if err != nil || len(ids) != 3 {
			t.Fatalf("IDsByKey: %v %v", ids, err)
		}
		for k, id := range want {
			if ids[k] != id {
				t.Fatalf("IDsByKey[%s] = %d, want %d", k, ids[k], id)
			}
		}
	})
}

// legacyNop stands in for the other owners and the notifier: these tests need none.
type legacyNop struct{}

func (legacyNop) ModelDeleting(context.Context, *sql.Tx, *Model) error   { return nil }
func (legacyNop) DeviceDeleting(context.Context, *sql.Tx, *Device) error { return nil }
func (legacyNop) ConfigChanged(context.Context, string)                  {}
