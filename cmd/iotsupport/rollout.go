package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/rollouts"
)

func rolloutCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "Start, follow, advance or abort a staged rollout on a running server (for scripts)"}
	var (
		c       rollouts.Client
		model   int64
		asJSON  bool
		id      int64
		in      rollouts.Input
		stages  string
		drop    float64
		minDevs int
		maxNew  int
	)
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.URL, "url", "http://127.0.0.1:3101", "base URL of the server")
	pf.StringVar(&c.Token, "token", "", "editor API token (default: $IOTSUPPORT_TOKEN)")
	pf.Int64Var(&model, "model", 0, "device model id")
	pf.BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkPersistentFlagRequired("model")
	cmd.PersistentPreRun = func(*cobra.Command, []string) {
		if c.Token == "" {
			c.Token = os.Getenv("IOTSUPPORT_TOKEN")
		}
	}
	print := func(w io.Writer, v any, text func(io.Writer)) error {
		if asJSON {
			e := json.NewEncoder(w)
			e.SetIndent("", "  ")
			return e.Encode(v)
		}
		text(w)
		return nil
	}
	line := func(r *rollouts.Rollout) func(io.Writer) {
		return func(w io.Writer) {
			fmt.Fprintf(w, "rollout %d of %s: %s, stage %d of %d (%d %%)", r.ID, r.Version, r.State, r.Stage+1, len(r.Stages), r.Percent)
			if r.Reason != "" {
				fmt.Fprintf(w, ": %s", r.Reason)
			}
			fmt.Fprintln(w)
		}
	}

	start := &cobra.Command{Use: "start", Short: "Start a rollout of a stored version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := rollouts.ParseStages(stages)
			if err != nil {
				return err
			}
			in.Stages = st
			f := cmd.Flags()
			if f.Changed("max-crash-free-drop") {
				in.MaxCrashFreeDrop = &drop
			}
			if f.Changed("min-devices") {
				in.MinDevices = &minDevs
			}
			if f.Changed("max-new-group-devices") {
				in.MaxNewGroupDevices = &maxNew
			}
			r, err := c.Start(cmd.Context(), model, in)
			if err != nil {
				return err
			}
			return print(cmd.OutOrStdout(), r, line(r))
		}}
	sf := start.Flags()
	sf.StringVar(&in.Version, "version", "", "stored version to roll out")
	sf.StringVar(&stages, "stages", "5:720,25:720,100", "stages as percent[:min_minutes], comma-separated, ending at 100")
	sf.Float64Var(&drop, "max-crash-free-drop", 2, "halt when crash-free is this many points below the previous version's")
	sf.IntVar(&minDevs, "min-devices", 20, "cohort devices that must report running the version before any decision on crash-free")
	sf.IntVar(&maxNew, "max-new-group-devices", 3, "halt when a crash group first seen on the version has more devices")
	sf.StringVar(&in.OnHalt, "on-halt", "revert", "revert (cohort back to the previous version) or hold")
	_ = start.MarkFlagRequired("version")

	status := &cobra.Command{Use: "status", Short: "A rollout's state and live figures (default: the model's latest)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.Status(cmd.Context(), model, id)
			if err != nil {
				return err
			}
			return print(cmd.OutOrStdout(), st, func(w io.Writer) {
				line(st.Rollout)(w)
				h := st.Health
				fmt.Fprintf(w, "crash-free %s on %s (%d devices seen) vs %s on the previous version (%d)\n",
					pct(h.CrashFree), st.Version, h.Seen, pct(h.PreviousCrashFree), h.PreviousSeen)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STAGE\tPERCENT\tMIN MINUTES\tSTATE\tTARGETED\tCONFIRMED")
				for i, f := range st.Figure {
					fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%d\n", i+1, f.Percent, f.MinMinutes, f.State, f.Targeted, f.Confirmed)
				}
				_ = tw.Flush()
				for _, g := range h.NewGroups {
					fmt.Fprintf(w, "new crash group %d %q: %d devices\n", g.ID, g.Title, g.Devices)
				}
			})
		}}
	status.Flags().Int64Var(&id, "id", 0, "rollout id (default: the latest)")
	cmd.AddCommand(start, status)
	for _, action := range []string{"advance", "pause", "resume", "abort", "complete"} {
		a := &cobra.Command{Use: action, Short: action + " a rollout",
			RunE: func(cmd *cobra.Command, _ []string) error {
				r, err := c.Action(cmd.Context(), model, id, action)
				if err != nil {
					return err
				}
				return print(cmd.OutOrStdout(), r, line(r))
			}}
		a.Flags().Int64Var(&id, "id", 0, "rollout id")
		_ = a.MarkFlagRequired("id")
		cmd.AddCommand(a)
	}
	return cmd
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", *v)
}
