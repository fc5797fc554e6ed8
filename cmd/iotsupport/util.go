package main

import (
	"context"

	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/db"
)

func openRaw(ctx context.Context, cfg *config.Config) (*db.DB, error) {
	return db.OpenWith(ctx, cfg.DatabaseURL, db.Options{MaxConns: cfg.DatabaseMaxConns})
}
