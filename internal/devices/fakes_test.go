package devices

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"sync"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// The devices tables live in the database only (no objects), so the rules run on both
// databases without an object store.
func forEachDB(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, testenv.OpenDB(t, testenv.SQLiteURL(t))) })
	t.Run("postgres", func(t *testing.T) { fn(t, testenv.OpenDB(t, testenv.PostgresURL(t))) })
}

// hashOf is the test's SecretHasher, salted so a test can tell it was used; 64 hex
// characters like auth.Hash, since the column is the older service's CHAR(64).
func hashOf(secret string) string {
	sum := sha256.Sum256([]byte("test-hasher:" + secret))
	return hex.EncodeToString(sum[:])
}

// cleanup records ModelDeleting / DeviceDeleting calls. Like the real owners it writes in
// the caller's transaction (an outbox row under its own prefix), so a test sees whether
// that write committed or rolled back with the deletion; fail makes the call fail.
type cleanup struct {
	mu      sync.Mutex
	models  []string // codes
	devices []string // keys
	// seen records whether the row being deleted was still visible through tx.
	seen []bool
	fail error
}

func (c *cleanup) ModelDeleting(ctx context.Context, tx *sql.Tx, m *Model) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_models WHERE id = $1`, m.ID).Scan(&n); err != nil {
		return err
	}
	c.mu.Lock()
	c.models = append(c.models, m.Code)
	c.seen = append(c.seen, n == 1)
	c.mu.Unlock()
	if err := outbox.EnqueuePrefix(ctx, tx, "test/models/"+m.Code+"/"); err != nil {
		return err
	}
	return c.fail
}

func (c *cleanup) DeviceDeleting(ctx context.Context, tx *sql.Tx, d *Device) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE id = $1`, d.ID).Scan(&n); err != nil {
		return err
	}
	c.mu.Lock()
	c.devices = append(c.devices, d.Key)
	c.seen = append(c.seen, n == 1)
	c.mu.Unlock()
	if err := outbox.EnqueuePrefix(ctx, tx, "test/devices/"+d.Key+"/"); err != nil {
		return err
	}
	return c.fail
}

// notified records ConfigChanged calls with the device's config as a reader outside any
// transaction saw it at that moment: the new config only once the change committed.
type notified struct {
	d *db.DB

	mu      sync.Mutex
	clients []string
	configs []string
}

func (n *notified) ConfigChanged(ctx context.Context, clientID string) {
	var config string
	key := clientID[len(clientID)-8:]
	if err := n.d.QueryRowContext(ctx, `SELECT config FROM devices WHERE key = $1`, key).Scan(&config); err != nil {
		config = "read failed: " + err.Error()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.clients = append(n.clients, clientID)
	n.configs = append(n.configs, config)
}

func (n *notified) calls() ([]string, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.clients...), append([]string(nil), n.configs...)
}

type fixture struct {
	s        *Service
	d        *db.DB
	models   *cleanup
	devices  *cleanup
	notifier *notified
}

func newFixture(d *db.DB) *fixture {
	f := &fixture{d: d, models: &cleanup{}, devices: &cleanup{}, notifier: &notified{d: d}}
	f.s = NewService(d, hashOf, f.models, f.devices, f.notifier)
	return f
}

func ptr[T any](v T) *T { return &v }

func (f *fixture) model(t *testing.T, code string, schema *string) *Model {
	t.Helper()
	m, err := f.s.CreateModel(context.Background(), ModelInput{Code: code, Name: ptr("Model " + code), ConfigSchema: schema})
	if err != nil {
		t.Fatalf("create model %s: %v", code, err)
	}
	return m
}

func (f *fixture) device(t *testing.T, modelID int64, config string) (*Device, string) {
	t.Helper()
	d, secret, err := f.s.CreateDevice(context.Background(), modelID, config)
	if err != nil {
		t.Fatalf("create device: %v", err)
	}
	return d, secret
}

func isKind(err error, k apperr.Kind) bool {
	var ae *apperr.Error
	return errors.As(err, &ae) && ae.Kind == k
}

func secretHash(t *testing.T, d *db.DB, id int64) string {
	t.Helper()
	var h sql.NullString
	if err := d.QueryRowContext(context.Background(), `SELECT secret_hash FROM devices WHERE id = $1`, id).Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h.String
}
