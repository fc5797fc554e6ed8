package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at release builds with -ldflags "-X main.version=… -X main.commit=… -X main.date=…"
// (scripts/build.sh, which the Dockerfile runs); otherwise taken from the build info.
var (
	version = ""
	commit  = ""
	date    = ""
)

// buildInfo is what `iotsupport version` reports.
type buildInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Date    string `json:"date"`
	Go      string `json:"go"`
}

// readBuildInfo prefers the ldflags values; a plain `go build` in a git checkout still
// knows its commit and time from the VCS stamp, and reports the version as dev-COMMIT.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, Go: runtime.Version()}
	dirty := false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
		if b.Commit != "" {
			short := b.Commit
			if len(short) > 12 {
				short = short[:12]
			}
			b.Version += "-" + short
			if dirty {
				b.Version += "-dirty"
			}
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

func versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := readBuildInfo()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return enc.Encode(b)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "iotsupport %s (commit %s, built %s, %s)\n", b.Version, b.Commit, b.Date, b.Go)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {\"version\",\"commit\",\"date\",\"go\"} as JSON")
	return cmd
}
