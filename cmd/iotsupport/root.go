package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/httpapi"
)

// exitErr carries a specific exit status.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }

func exitCode(err error) int {
	var e *exitErr
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "iotsupport",
		Short:         "Firmware and core dump service for ESP32 fleets",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	httpapi.Version = readBuildInfo().Version
	root.AddCommand(serveCmd(), migrateCmd(), configCmd(), versionCmd(), healthcheckCmd(), tokenCmd(), coredumpCmd(), workerCmd(), migrateToS3Cmd(), storageCmd(), fsckCmd(), benchCmd(), nvsCmd(), rolloutCmd())
	return root
}

func loadConfig() (*config.Config, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func serveCmd() *cobra.Command {
	var noMigrate bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP API (applies pending migrations first unless --no-migrate)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			log := app.NewLogger(cfg, os.Stderr)
			ctx, stop := signalContext()
			defer stop()
			// Everything is checked before migrations or a created directory change anything.
			if err := app.Preflight(ctx, cfg); err != nil {
				return err
			}
			d, err := app.OpenDB(ctx, cfg, !noMigrate, log)
			if err != nil {
				return err
			}
			defer d.Close()
			store, err := app.OpenStore(ctx, cfg)
			if err != nil {
				return err
			}
			app.CleanSpools(cfg, log)
			a, err := app.New(ctx, cfg, log, d, store)
			if err != nil {
				return err
			}
			if cfg.AuthMode == "insecure-dev" {
				log.Warn("AUTH_MODE=insecure-dev: the admin API is open and devices are identified by ?device_key=; for local experiments only")
			}
			secret, err := a.EnsureAdminToken(ctx)
			if err != nil {
				return err
			}
			if secret != "" {
				fmt.Fprintf(os.Stderr, "\n"+
					"  ================================================================\n"+
					"  First start: created API token \"initial-admin\" (role admin).\n"+
					"  It is shown only now; store it safely:\n\n"+
					"    %s\n\n"+
					"  Use it as: curl -H 'Authorization: Bearer <token>' ...\n"+
					"  Manage tokens with `iotsupport token create|list|revoke`.\n"+
					"  ================================================================\n\n", secret)
			}
			return a.Serve(ctx, nil)
		},
	}
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "refuse to start when the schema is behind instead of migrating")
	return cmd
}

func migrateCmd() *cobra.Command {
	var status, finalize, discard bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations (--status lists them)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			log := app.NewLogger(cfg, os.Stderr)
			if status {
				d, err := openRaw(ctx, cfg)
				if err != nil {
					return err
				}
				defer d.Close()
				st, err := d.Status(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				for _, s := range st {
					state := "pending"
					if s.Applied {
						state = "applied"
					}
					fmt.Fprintf(out, "%05d  %-8s %s\n", s.Version, state, s.Name)
				}
				return nil
			}
			if err := adoptLegacy(ctx, cfg, cmd.OutOrStdout()); err != nil {
				return err
			}
			d, err := app.OpenDB(ctx, cfg, true, log)
			if err != nil {
				return err
			}
			defer d.Close()
			fmt.Fprintln(cmd.OutOrStdout(), "database schema is up to date")
			if finalize {
				return finalizeLegacy(ctx, d, discard, cmd.OutOrStdout())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&status, "status", false, "list migrations and whether each is applied")
	cmd.Flags().BoolVar(&finalize, "finalize-legacy", false, "drop the older service's coredumps.filename once migrate-to-s3 has moved every core dump")
	cmd.Flags().BoolVar(&discard, "discard-unmigrated", false, "with --finalize-legacy: delete core dump rows whose legacy file was never found")
	return cmd
}

func configCmd() *cobra.Command {
	var markdown bool
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective settings (secrets masked) and validate them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if markdown {
				fmt.Fprint(cmd.OutOrStdout(), config.MarkdownTable())
				return nil
			}
			out := cmd.OutOrStdout()
			for _, l := range config.Effective(os.LookupEnv) {
				fmt.Fprintln(out, l)
			}
			if _, err := loadConfig(); err != nil {
				fmt.Fprintln(out, "settings are NOT valid:", err)
				cmd.SilenceErrors = true // said on stdout already
				return &exitErr{code: 1, err: err}
			}
			fmt.Fprintln(out, "settings are valid")
			return nil
		},
	}
	cmd.Flags().BoolVar(&markdown, "markdown", false, "print the settings table of the README instead")
	return cmd
}
