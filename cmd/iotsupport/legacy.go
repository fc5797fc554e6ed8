package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/legacy"
	"github.com/iotsupport/iotsupport/internal/notify"
)

// adoptLegacy records the older service's revision as the baseline before our migrations
// run over its database (`iotsupport migrate`).
func adoptLegacy(ctx context.Context, cfg *config.Config, out io.Writer) error {
	d, err := db.OpenWith(ctx, cfg.DatabaseURL, db.Options{MaxConns: cfg.DatabaseMaxConns})
	if err != nil {
		return err
	}
	defer d.Close()
	st, adopted, err := legacy.Adopt(ctx, d)
	if err != nil {
		return err
	}
	if adopted {
		fmt.Fprintf(out, "adopted the older service's database at revision %s; applying our migrations on top\n", st.Revision)
		if st.HasFilename {
			fmt.Fprintln(out, "next: `iotsupport migrate-to-s3`, then `iotsupport migrate --finalize-legacy`")
		}
	}
	return nil
}

// finalizeLegacy drops coredumps.filename (`iotsupport migrate --finalize-legacy`).
func finalizeLegacy(ctx context.Context, d *db.DB, discard bool, out io.Writer) error {
	n, err := legacy.Finalize(ctx, d, discard)
	if err != nil {
		return err
	}
	if n > 0 {
		fmt.Fprintf(out, "deleted %d core dump row(s) whose legacy file was never migrated\n", n)
	}
	fmt.Fprintln(out, "legacy coredumps.filename column is gone (finalized)")
	return nil
}

// errNoBucket stops NewS3 from creating a missing bucket during a dry run.
var errNoBucket = errors.New("dry run: bucket does not exist")

// openDestination opens the configured store. A dry run never creates anything: a missing
// bucket or directory yields a nil store, which counts as empty.
func openDestination(ctx context.Context, cfg *config.Config, dryRun bool) (blob.Store, error) {
	if !dryRun {
		return app.OpenStore(ctx, cfg)
	}
	if cfg.StorageBackend != "s3" {
		if _, err := os.Stat(cfg.StorageDir); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return blob.NewLocal(cfg.StorageDir)
	}
	missing := false
	refuseCreate := func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Initialize.Add(middleware.InitializeMiddlewareFunc("iotsupportDryRun",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if _, ok := in.Parameters.(*s3.CreateBucketInput); ok {
						missing = true
						return middleware.InitializeOutput{}, middleware.Metadata{}, errNoBucket
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	}
	s, err := blob.NewS3(ctx, blob.S3Config{Endpoint: cfg.S3Endpoint, AccessKeyID: cfg.S3AccessKey, SecretAccessKey: cfg.S3SecretKey,
		Bucket: cfg.S3Bucket, Region: cfg.S3Region, UseSSL: cfg.S3UseSSL, PathStyle: cfg.S3PathStyle}, refuseCreate)
	if missing {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("object storage (S3 %s, bucket %s): %w", cfg.S3Endpoint, cfg.S3Bucket, err)
	}
	return s, nil
}

func migrateToS3Cmd() *cobra.Command {
	var (
		dryRun, asJSON         bool
		assetsDir, coredumpDir string
	)
	cmd := &cobra.Command{
		Use:   "migrate-to-s3",
		Short: "Move the older service's firmware ZIPs and core dump files into the object store",
		Long: "Reads ASSETS_DIR/{code}/firmware-{version}.zip and COREDUMPS_DIR/{device_key}/coredump_*.dmp of the older\n" +
			"service and stores them in the configured object store (S3 or local). Run `iotsupport migrate` first.\n" +
			"Each file is committed on its own: an interrupted run resumes, and a re-run changes nothing.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("assets-dir") {
				cfg.AssetsDir = assetsDir
			}
			if cmd.Flags().Changed("coredumps-dir") {
				cfg.CoredumpsDir = coredumpDir
			}
			ctx, stop := signalContext()
			defer stop()
			log := app.NewLogger(cfg, os.Stderr)
			d, err := openExisting(ctx, cfg, false, log)
			if err != nil {
				return fmt.Errorf("cannot use the database: %w", err)
			}
			defer d.Close()
			store, err := openDestination(ctx, cfg, dryRun)
			if err != nil {
				return fmt.Errorf("object storage is not reachable: %w", err)
			}
			o := legacy.Options{DB: d, Store: store, AssetsDir: cfg.AssetsDir, CoredumpsDir: cfg.CoredumpsDir, DryRun: dryRun,
				MaxFirmwares: cfg.MaxFirmwares,
				Limits:       bundle.Limits{MaxMemberBytes: cfg.FirmwareMaxMemberBytes, MaxTotalBytes: cfg.FirmwareMaxTotalBytes, MaxRatio: cfg.FirmwareMaxRatio}}
			if !asJSON {
				o.Progress = cmd.OutOrStdout()
			}
			// The same service graph as the server's: imported versions are kept while
			// PENDING dumps need them, and dumps waiting for them are re-queued. (A dry run
			// only asks it which versions are needed.)
			svc, err := app.Assemble(cfg, log, d, store, notify.Nop{}, nil)
			if err != nil {
				return err
			}
			o.Firmware, o.Devices = svc.Firmware, svc.Devices
			if testHooks.migrateToS3 != nil { // only in test builds (testhooks_on.go)
				testHooks.migrateToS3(&o)
			}
			rep, err := legacy.MigrateToS3(ctx, o)
			if err != nil {
				return fmt.Errorf("migration failed: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(out, rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be migrated; write nothing (not even a bucket)")
	cmd.Flags().StringVar(&assetsDir, "assets-dir", "", "the older service's ASSETS_DIR (default: $ASSETS_DIR)")
	cmd.Flags().StringVar(&coredumpDir, "coredumps-dir", "", "the older service's COREDUMPS_DIR (default: $COREDUMPS_DIR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printReport(out io.Writer, r *legacy.Report) {
	prefix := ""
	if r.DryRun {
		prefix = "[DRY RUN] "
	}
	fmt.Fprintf(out, "\n%sMigration complete.\n", prefix)
	fmt.Fprintf(out, "  Firmware ZIPs migrated: %d\n", r.FirmwareMigrated)
	fmt.Fprintf(out, "  Firmware ZIPs skipped:  %d (legacy flat binaries: %d)\n", r.FirmwareSkipped, r.FlatBinaries)
	fmt.Fprintf(out, "  Coredumps migrated:     %d\n", r.CoredumpsMigrated)
	fmt.Fprintf(out, "  Coredumps skipped:      %d (orphan files: %d, rows without a file: %d)\n", r.CoredumpsSkipped, len(r.Orphans), len(r.MissingFiles))
	fmt.Fprintf(out, "  Already migrated:       %d firmware, %d coredumps\n", r.FirmwareAlready, r.CoredumpsAlready)
	if r.NothingToDo() {
		fmt.Fprintln(out, "  Nothing to do: everything found is already in object storage.")
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintf(out, "  Warnings (%d):\n", len(r.Warnings))
		for _, w := range r.Warnings {
			fmt.Fprintf(out, "    - %s\n", w)
		}
	}
}
