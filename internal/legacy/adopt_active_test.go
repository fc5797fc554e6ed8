package legacy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/legacy"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// In the older schema (revision 008) devices.active = false only left a device out of
// credential rotation. Adopting such a database must not lock those devices out: our
// active decides whether a device may authenticate.
func TestAdoptionKeepsInactiveDevicesAbleToAuthenticate(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresURL(t)
	d, err := db.Open(ctx, dsn) // bare: the older schema comes first
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, rev := range []string{"005", "006", "007", "008"} {
		ddl, err := os.ReadFile(filepath.Join("testdata", "alembic_"+rev+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		testenv.MustExec(t, d, string(ddl))
	}
	testenv.MustExec(t, d, `INSERT INTO device_models (code, name) VALUES ('m', 'M')`)
	testenv.MustExec(t, d, `INSERT INTO devices (key, device_model_id, config, active) VALUES ('aaaa2222', 1, '{}', true), ('bbbb3333', 1, '{}', false)`)

	if _, adopted, err := legacy.Adopt(ctx, d); err != nil || !adopted {
		t.Fatalf("Adopt: %v %v", adopted, err)
	}
	if _, err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	store, err := blob.NewS3(ctx, testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	s := apitest.Start(t, &testenv.Env{Name: "adopted", DatabaseURL: dsn, DB: d, Store: store})

	ids := map[string]int{}
	for _, x := range s.Expect(200, "GET", "/api/devices", nil).Map(t)["devices"].([]any) {
		dev := x.(map[string]any)
		ids[dev["key"].(string)] = int(dev["id"].(float64))
	}
	for key, excluded := range map[string]bool{"aaaa2222": false, "bbbb3333": true} {
		dev := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", ids[key]), nil).Map(t)
		if dev["active"] != true || dev["rotation_excluded"] != excluded || dev["rotation_state"] != "OK" {
			t.Fatalf("%s after adoption: %v", key, dev)
		}
		// The adopted devices have no secret of ours yet; issue one and authenticate.
		secret := s.Expect(200, "POST", fmt.Sprintf("/api/devices/%d/credentials", ids[key]), nil).Map(t)["secret"].(string)
		s.Basic(key, secret).Expect(200, "GET", "/api/iot/config", nil)
	}

	// Deactivating through our API keeps its meaning, and adopting again changes nothing.
	s.Expect(200, "PUT", fmt.Sprintf("/api/devices/%d", ids["bbbb3333"]), map[string]any{"config": `{}`, "active": false})
	if _, adopted, err := legacy.Adopt(ctx, d); err != nil || adopted {
		t.Fatalf("second Adopt: %v %v", adopted, err)
	}
	var active bool
	if err := d.QueryRow(`SELECT active FROM devices WHERE key = 'bbbb3333'`).Scan(&active); err != nil || active {
		t.Fatalf("deactivated device after a second Adopt: active=%v %v", active, err)
	}
}
