package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

func coredumpCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "coredump", Short: "Decode core dumps and re-queue decoding"}

	var elfPath string
	var asJSON bool
	decode := &cobra.Command{Use: "decode [--elf APP.elf] DUMP", Short: "Decode a core dump file (against its firmware ELF, for names and lines) and print the crash report",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := espcore.DecodeFiles(args[0], elfPath, asJSON, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitErr{code: code, err: fmt.Errorf("nothing could be decoded from %s", args[0])}
			}
			return nil
		}}
	decode.Flags().StringVar(&elfPath, "elf", "", "firmware ELF the dump belongs to; without it the report has raw addresses, no names or lines")
	decode.Flags().BoolVar(&asJSON, "json", false, "print the structured report as JSON")

	var status, model string
	reparse := &cobra.Command{Use: "reparse", Short: "Queue stored core dumps for decoding again",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, cleanup, err := openApp()
			if err != nil {
				return err
			}
			defer cleanup()
			n, err := a.Coredumps.ReparseWhere(cmd.Context(), status, model)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "queued %d core dump(s) for decoding\n", n)
			return nil
		}}
	reparse.Flags().StringVar(&status, "status", "", "only dumps with this parse status (PENDING, PARSED, ERROR)")
	reparse.Flags().StringVar(&model, "model", "", "only dumps of devices of this model code")
	cmd.AddCommand(decode, reparse)
	return cmd
}

// workerCmd runs decode workers and the outbox without the HTTP API, so decoding can
// be scaled apart from serving.
func workerCmd() *cobra.Command {
	return &cobra.Command{Use: "worker", Short: "Run only the background workers (decoding, object deletions)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, cleanup, err := openApp()
			if err != nil {
				return err
			}
			defer cleanup()
			if a.Cfg.DecodeWorkers == 0 {
				return fmt.Errorf("DECODE_WORKERS=0: nothing to run")
			}
			ctx, stop := signalContext()
			defer stop()
			stopBG, err := a.StartBackground(ctx)
			if err != nil {
				return err
			}
			a.Log.Info("workers running", "decode_workers", a.Cfg.DecodeWorkers)
			<-ctx.Done()
			a.Log.Info("stopping workers")
			stopBG()
			return nil
		}}
}

// openApp opens the configured database (migrating it) and store and builds the services.
func openApp() (*app.App, func(), error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	log := app.NewLogger(cfg, os.Stderr)
	ctx, stop := signalContext()
	defer stop()
	if err := app.Preflight(ctx, cfg); err != nil {
		return nil, nil, err
	}
	d, err := openExisting(ctx, cfg, true, log)
	if err != nil {
		return nil, nil, err
	}
	store, err := app.OpenStore(ctx, cfg)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	a, err := app.New(ctx, cfg, log, d, store)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	return a, func() { d.Close() }, nil
}
