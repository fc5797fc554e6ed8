package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/db"
)

func openRaw(ctx context.Context, cfg *config.Config) (*db.DB, error) {
	return db.OpenWith(ctx, cfg.DatabaseURL, db.Options{MaxConns: cfg.DatabaseMaxConns})
}

// openExisting opens the service's database for a command other than serve and migrate:
// it says on stderr which database it uses and refuses one that does not exist yet.
func openExisting(ctx context.Context, cfg *config.Config, migrate bool, log *slog.Logger) (*db.DB, error) {
	fmt.Fprintln(os.Stderr, "database:", cfg.DatabaseLabel())
	return app.OpenExistingDB(ctx, cfg, migrate, log)
}
