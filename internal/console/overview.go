package console

import (
	"net/http"

	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/fleet"
)

// overviewRow is one model on the fleet overview: the fleet view's last 24 hours
// (versions running, stale devices, crash counts) and its top open crash groups.
type overviewRow struct {
	Model  *devices.Model
	Fleet  *fleet.ModelOverview
	Groups []*crashgroups.Group
}

// topGroups is how many open crash groups the overview shows per model.
const topGroups = 3

// fleetSummary is what the overview reads besides the models, kept for
// CONSOLE_OVERVIEW_CACHE_TTL (every viewer of the page shares it).
type fleetSummary struct {
	Fleet  map[int64]*fleet.ModelOverview
	Groups map[int64][]*crashgroups.Group
}

// overview is `/`: per model its devices, versions running, stale devices, crashes in
// 24 h and 7 d (the fleet view's tables) and top crash groups. A fixed number of grouped
// queries whatever the number of models.
func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ms, err := c.d.Devices.ListModels(r.Context())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	sum, ok := c.summary.Get(struct{}{})
	if !ok {
		gen := c.summary.Generation()
		if sum.Fleet, err = c.d.Fleet.Overview(r.Context()); err != nil {
			c.serviceError(w, r, err)
			return
		}
		if sum.Groups, err = c.d.CrashGroups.TopOpen(r.Context(), topGroups); err != nil {
			c.serviceError(w, r, err)
			return
		}
		c.summary.Put(gen, struct{}{}, sum)
	}
	rows := make([]overviewRow, 0, len(ms))
	total := fleet.ModelOverview{}
	var devs int
	for _, m := range ms {
		row := overviewRow{Model: m, Fleet: sum.Fleet[m.ID], Groups: sum.Groups[m.ID]}
		if row.Fleet == nil {
			row.Fleet = &fleet.ModelOverview{}
		}
		devs += m.DeviceCount
		total.StaleDevices += row.Fleet.StaleDevices
		total.DumpsDay += row.Fleet.DumpsDay
		total.DumpsWeek += row.Fleet.DumpsWeek
		total.DevicesWeek += row.Fleet.DevicesWeek
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "overview", "Fleet overview", map[string]any{"Rows": rows, "Total": total, "Devices": devs})
}
