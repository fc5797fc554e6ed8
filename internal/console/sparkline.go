package console

import (
	"fmt"
	"time"
)

// sparkline is a day series drawn as inline SVG bars by the templates (no script, no
// inline style: the CSP allows neither). Label says the same in words for screen readers.
type sparkline struct {
	Bars          []bar
	Width, Height int
	Total, Peak   int64
	Label         string
}

// bar is one day's bar; Title is its tooltip and text.
type bar struct {
	X, Y, W, H int
	Title      string
}

// newSparkline draws counts, one per day ending today (UTC), oldest first.
func newSparkline(counts []int64, now time.Time) sparkline {
	return drawDays(counts, now, 3, 24)
}

// drawDays draws counts as bars barW wide (plus a 1 px gap) and at most height tall.
func drawDays(counts []int64, now time.Time, barW, height int) sparkline {
	s := sparkline{Width: len(counts) * (barW + 1), Height: height}
	for _, n := range counts {
		s.Total += n
		s.Peak = max(s.Peak, n)
	}
	start := now.UTC().AddDate(0, 0, -(len(counts) - 1))
	for i, n := range counts {
		h := 0
		if s.Peak > 0 && n > 0 {
			h = max(1, int(n*int64(height)/s.Peak))
		}
		s.Bars = append(s.Bars, bar{X: i * (barW + 1), Y: height - h, W: barW, H: h,
			Title: fmt.Sprintf("%s: %d", start.AddDate(0, 0, i).Format(time.DateOnly), n)})
	}
	s.Label = fmt.Sprintf("%d dumps in the last %d days, at most %d a day", s.Total, len(counts), s.Peak)
	return s
}
