package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/bench"
)

func benchCmd() *cobra.Command {
	var (
		o       bench.Options
		asJSON  bool
		dbURL   string
		s3      struct{ endpoint, access, secret, bucket string }
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, latency and memory against baselines in the same run (see docs/PERFORMANCE.md)",
		Long: "Runs load scenarios (" + joinNames(bench.Scenarios) + ") against a server and next to each a baseline\n" +
			"(a constant HTTP handler, or the same work straight through the db and blob packages), and prints\n" +
			"requests/s, p50/p90/p99, errors, the server's peak RSS and the ratio to the baseline.\n" +
			"Without --url it starts its own `serve` child on a temp directory (SQLite + local storage unless\n" +
			"--database-url / --s3-* or DATABASE_URL / STORAGE_BACKEND=s3 / S3_* say otherwise).\n" +
			"It reads the shared test data (--testdata, default ../shared/testdata) to build real firmware.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dbURL != "" {
				o.Env = append(o.Env, "DATABASE_URL="+dbURL)
			}
			if s3.endpoint != "" {
				o.Env = append(o.Env, "STORAGE_BACKEND=s3", "S3_ENDPOINT_URL="+s3.endpoint, "S3_ACCESS_KEY_ID="+s3.access,
					"S3_SECRET_ACCESS_KEY="+s3.secret, "S3_BUCKET_NAME="+s3.bucket)
			}
			if verbose || !asJSON {
				o.Log = os.Stderr
			}
			ctx, stop := signalContext()
			defer stop()
			rep, err := bench.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.URL, "url", "", "base URL of a running server (default: start one)")
	f.StringVar(&o.Token, "token", "", "admin API token for --url")
	f.StringVar(&o.DeviceKey, "device-key", "", "device key for --url")
	f.StringVar(&o.DeviceSecret, "device-secret", "", "device secret for --url")
	f.StringSliceVar(&o.Scenarios, "scenario", nil, "scenario to run (repeatable; default all): "+joinNames(bench.Scenarios))
	f.DurationVar(&o.Duration, "duration", 20*time.Second, "length of each measured run (server and baseline each)")
	f.Int64Var(&o.Requests, "requests", 0, "stop each run after this many requests (0: only --duration)")
	f.IntVar(&o.Concurrency, "concurrency", 0, "concurrent clients for every scenario (0: per-scenario defaults)")
	f.IntVar(&o.IngestDevices, "ingest-devices", bench.DefaultIngestDevices, "devices the ingest clients upload for in turn (as few as the concurrency: every device crash-loops)")
	f.StringVar(&o.Testdata, "testdata", "../shared/testdata", "shared test data directory (esp-coredump/<case>/app.elf, coredump.b64)")
	f.StringVar(&o.ProfileDir, "profile", "", "write CPU and heap profiles of the started server per scenario into this directory")
	f.BoolVar(&o.KeepDirty, "keep-dirty", false, "do not sync(2) the page cache before each round (rounds then also pay for writing back earlier rounds' data)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVarP(&verbose, "verbose", "v", false, "progress on stderr also with --json")
	f.StringVar(&dbURL, "database-url", "", "database of the started server (default: SQLite in the temp dir)")
	f.StringVar(&s3.endpoint, "s3-endpoint", "", "S3 endpoint of the started server (default: local storage in the temp dir)")
	f.StringVar(&s3.access, "s3-access-key", "", "S3 access key")
	f.StringVar(&s3.secret, "s3-secret-key", "", "S3 secret key")
	f.StringVar(&s3.bucket, "s3-bucket", "iotsupport-bench", "S3 bucket")
	return cmd
}

func joinNames(s []string) string {
	out := ""
	for i, n := range s {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}
