package testenv

import (
	"context"
	"testing"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
)

// Env is one configuration of the service's infrastructure for a test.
type Env struct {
	Name        string
	DatabaseURL string
	DB          *db.DB
	Store       blob.Store
	// S3 is set for the S3 configuration (for tests that start the server as a subprocess).
	S3       *blob.S3Config
	StoreDir string
}

// Configs are the two configurations every storage-touching suite runs under.
var Configs = []string{"sqlite+local", "postgres+s3"}

// ForEach runs fn as a subtest in each configuration: SQLite + a local directory, and
// PostgreSQL (own schema) + versitygw (own bucket). Missing services fail the test.
func ForEach(t *testing.T, fn func(t *testing.T, env *Env)) {
	for _, name := range Configs {
		t.Run(name, func(t *testing.T) { fn(t, New(t, name)) })
	}
}

// New builds one named configuration.
func New(t testing.TB, name string) *Env {
	t.Helper()
	env := &Env{Name: name}
	switch name {
	case "sqlite+local":
		env.DatabaseURL = SQLiteURL(t)
		env.StoreDir = t.TempDir()
		st, err := blob.NewLocal(env.StoreDir)
		if err != nil {
			t.Fatal(err)
		}
		env.Store = st
	case "postgres+s3":
		env.DatabaseURL = PostgresURL(t)
		cfg := S3(t)
		env.S3 = &cfg
		st, err := blob.NewS3(context.Background(), cfg)
		if err != nil {
			t.Fatalf("open versitygw store: %v", err)
		}
		env.Store = st
	default:
		t.Fatalf("unknown configuration %q", name)
	}
	env.DB = OpenDB(t, env.DatabaseURL)
	return env
}
