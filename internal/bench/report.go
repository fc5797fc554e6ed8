package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// WriteTable writes the report as one table, like zot's zb.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "machine:  %s\n", rep.Machine)
	if rep.Database != "" {
		fmt.Fprintf(w, "server:   %s + %s storage\n", rep.Database, rep.Storage)
	}
	if rep.IdleRSS > 0 {
		fmt.Fprintf(w, "idle RSS: %s   peak RSS over the run (VmHWM): %s\n", mib(rep.IdleRSS), mib(rep.ServerHWM))
	}
	if rep.SyncedRounds > 0 {
		fmt.Fprintf(w, "rounds:   the page cache was synced to disk before each of %d rounds\n", rep.SyncedRounds)
	} else {
		fmt.Fprintln(w, "rounds:   not synced (--keep-dirty): a round may pay for writing back earlier rounds' data")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconc\trequests\treq/s\tMB/s\tp50\tp90\tp99\terrors\tpeak RSS\tbaseline req/s\tbaseline p99\tratio\t")
	for _, r := range rep.Results {
		// The baseline's p99 is this machine's floor for the scenario's tail latency.
		base, baseP99, ratio := "-", "-", "-"
		if r.Baseline != nil {
			base, baseP99 = fmt.Sprintf("%.1f", r.Baseline.PerSecond), ms(r.Baseline.P99)
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		rss := "-"
		if r.PeakRSS > 0 {
			rss = mib(r.PeakRSS)
		}
		s := r.Server
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", r.Scenario, r.Concurrency, s.Requests, s.PerSecond, s.MBPerSec,
			ms(s.P50), ms(s.P90), ms(s.P99), s.Errors, rss, base, baseP99, ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Results {
		if r.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Scenario, r.Note)
		}
		for _, o := range r.Other {
			fmt.Fprintf(w, "%s: against %s: baseline %.1f req/s, p99 %s, ratio %.2f\n", r.Scenario, o.Name, o.Baseline.PerSecond, ms(o.Baseline.P99), o.Ratio)
			if o.Baseline.FirstErr != "" {
				fmt.Fprintf(w, "%s baseline %s: first error: %s\n", r.Scenario, o.Name, o.Baseline.FirstErr)
			}
		}
		if r.Server.FirstErr != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", r.Scenario, r.Server.FirstErr)
		}
		if r.Baseline != nil && r.Baseline.FirstErr != "" {
			fmt.Fprintf(w, "%s baseline: first error: %s\n", r.Scenario, r.Baseline.FirstErr)
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
