package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fsck"
	"github.com/iotsupport/iotsupport/internal/notify"
)

func fsckCmd() *cobra.Command {
	var (
		repair, asJSON, quick bool
		grace                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fsck [--repair] [--grace 1h] [--json]",
		Short: "Compare object storage with the database: orphans, dangling rows, checksum mismatches, stuck deletions",
		Long: "Lists every object under firmware/ and coredumps/ and compares it with the rows. Reports orphan objects\n" +
			"(no row, older than --grace), dangling rows (row without its object), size and SHA-256 mismatches, and\n" +
			"queued deletions older than --grace. --repair deletes orphans, marks dangling core dumps ERROR\n" +
			"(missing_object) and removes dangling firmware versions from the history unless current.\n" +
			"Exit status: 0 clean, 1 problems remain, 2 the check itself failed.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return &exitErr{code: 2, err: err}
			}
			if !cmd.Flags().Changed("grace") {
				grace = cfg.FsckGrace
			}
			ctx, stop := signalContext()
			defer stop()
			log := app.NewLogger(cfg, os.Stderr)
			d, err := openExisting(ctx, cfg, false, log)
			if err != nil {
				return &exitErr{code: 2, err: err}
			}
			defer d.Close()
			store, err := app.OpenStore(ctx, cfg)
			if err != nil {
				return &exitErr{code: 2, err: err}
			}
			// The owners answer for their rows and keys; fsck uses only their reads and repairs.
			svc, err := app.Assemble(cfg, log, d, store, notify.Nop{}, nil)
			if err != nil {
				return &exitErr{code: 2, err: err}
			}
			c := svc.Fsck
			opts := fsck.Options{Grace: grace, SkipHash: quick}
			rep, err := c.Check(ctx, opts)
			if err != nil {
				return &exitErr{code: 2, err: fmt.Errorf("fsck: %w", err)}
			}
			if repair {
				if err := c.Repair(ctx, rep, opts); err != nil {
					return &exitErr{code: 2, err: fmt.Errorf("fsck repair: %w", err)}
				}
			}
			spools, err := firmware.StaleSpools(cfg.TempDir, cfg.SpoolMaxAge, time.Now())
			if err != nil {
				return &exitErr{code: 2, err: fmt.Errorf("fsck: %w", err)}
			}
			removed := 0
			if repair {
				for _, p := range spools {
					if os.Remove(p) == nil {
						removed++
					}
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				_ = enc.Encode(struct {
					*fsck.Report
					StaleSpools        int `json:"stale_spool_files"`
					StaleSpoolsRemoved int `json:"stale_spool_files_removed"`
				}{rep, len(spools), removed})
			} else {
				printFsckReport(cmd, rep, repair)
				// Uploads cut off by a crash; they hold no data of the service's and do not change the exit status.
				fmt.Fprintf(out, "stale upload spool files (older than SPOOL_MAX_AGE %s): %d", cfg.SpoolMaxAge, len(spools))
				if repair {
					fmt.Fprintf(out, ", removed %d", removed)
				}
				fmt.Fprintln(out)
			}
			if !rep.Clean() {
				cmd.SilenceErrors = asJSON
				return &exitErr{code: 1, err: fmt.Errorf("fsck: %d problem(s) remain", rep.Remaining)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "delete orphans and mark dangling rows")
	cmd.Flags().DurationVar(&grace, "grace", time.Hour, "objects without a row younger than this are uploads in flight, not orphans (default FSCK_GRACE)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&quick, "quick", false, "compare sizes only; do not read objects to verify SHA-256")
	return cmd
}

func printFsckReport(cmd *cobra.Command, rep *fsck.Report, repair bool) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "objects: %d, rows: %d, hashed: %d, recent (in grace %s): %d, queued for deletion: %d, outbox: %d, marked missing: %d\n",
		rep.Objects, rep.Rows, rep.Hashed, rep.Grace, rep.Recent, rep.Queued, rep.Outbox, rep.Marked)
	for _, k := range fsck.Kinds {
		fmt.Fprintf(out, "%-16s %d\n", k+":", rep.Counts[k])
	}
	for _, f := range rep.Findings {
		state := ""
		switch {
		case f.Repaired:
			state = " [repaired]"
		case f.Unrepairable:
			state = " [NOT REPAIRABLE: current firmware version lost an object; upload it again or set another current version]"
		case repair:
			state = " [not repaired]"
		}
		fmt.Fprintf(out, "  %-16s %s  %s%s\n", f.Kind, f.Key, f.Detail, state)
		if f.Unrepairable {
			fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: %s: %s; it stays current and is not removed\n", f.Key, f.Detail)
		}
	}
	if rep.Clean() {
		fmt.Fprintln(out, "clean")
	} else {
		fmt.Fprintf(out, "%d problem(s) remain\n", rep.Remaining)
	}
}
