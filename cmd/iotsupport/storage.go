package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/storagecopy"
)

func storageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "storage", Short: "Object storage tools (copy between backends)"}
	var from, to string
	var dryRun, asJSON bool
	cp := &cobra.Command{
		Use:   "copy --from local:DIR|s3 --to s3|local:DIR",
		Short: "Copy every object between the local directory backend and S3, verifying sizes and checksums",
		Long: "Copies every object; objects already present with the same content are skipped, so the copy can be\n" +
			"repeated or resumed. `s3` is the bucket configured by the S3_* settings. Switch STORAGE_BACKEND after it succeeds.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			src, err := openSpec(cmd, cfg, from, false)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			dst, err := openSpec(cmd, cfg, to, dryRun)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			o := storagecopy.Options{DryRun: dryRun}
			if !asJSON {
				o.Progress = cmd.OutOrStdout()
			}
			res, err := storagecopy.Copy(ctx, src, dst, o)
			out := cmd.OutOrStdout()
			if asJSON && res != nil {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				_ = enc.Encode(res)
			} else if res != nil {
				fmt.Fprintf(out, "copied: %d (%d bytes), already present: %d, failed: %d\n", res.Copied, res.Bytes, res.Present, len(res.Failed))
				for _, f := range res.Failed {
					fmt.Fprintf(out, "  - %s\n", f)
				}
			}
			if err != nil {
				return fmt.Errorf("copy stopped: %w", err)
			}
			if len(res.Failed) > 0 {
				return fmt.Errorf("%d object(s) could not be copied", len(res.Failed))
			}
			return nil
		},
	}
	cp.Flags().StringVar(&from, "from", "", "source: local:DIR or s3")
	cp.Flags().StringVar(&to, "to", "", "destination: s3 or local:DIR")
	cp.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be copied; write nothing")
	cp.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	_ = cp.MarkFlagRequired("from")
	_ = cp.MarkFlagRequired("to")
	cmd.AddCommand(cp)
	return cmd
}

// openSpec opens `local:DIR` or `s3` (the configured bucket). A dry-run destination that
// does not exist yet is nil (empty) and is not created.
func openSpec(cmd *cobra.Command, cfg *config.Config, spec string, dryRun bool) (blob.Store, error) {
	c := *cfg
	switch {
	case spec == "s3":
		c.StorageBackend = "s3"
	case strings.HasPrefix(spec, "local:") && len(spec) > len("local:"):
		c.StorageBackend = "local"
		c.StorageDir = strings.TrimPrefix(spec, "local:")
	default:
		return nil, fmt.Errorf("want local:DIR or s3, got %q", spec)
	}
	if dryRun {
		return openDestination(cmd.Context(), &c, true)
	}
	return app.OpenStore(cmd.Context(), &c)
}
