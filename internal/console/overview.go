package console

import (
	"net/http"
	"time"

	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/devices"
)

// overviewRow is one model on the fleet overview. Sections the fleet view and crash
// groups add (versions running, last seen, top crash groups) go next to these fields.
type overviewRow struct {
	Model   *devices.Model
	Crashes coredumps.ModelCrashes
}

// overview is `/`: per model its devices, current version and recent crashes. Two
// queries whatever the fleet's size; the crash counts, which read the week's dumps, are
// kept for CONSOLE_OVERVIEW_CACHE_TTL (every viewer of the page shares them).
func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ms, err := c.d.Devices.ListModels(r.Context())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	counts, ok := c.crashes.Get(struct{}{})
	if !ok {
		gen := c.crashes.Generation()
		counts, err = c.d.Coredumps.CrashesByModel(r.Context(), time.Now().UTC())
		if err != nil {
			c.serviceError(w, r, err)
			return
		}
		c.crashes.Put(gen, struct{}{}, counts)
	}
	rows := make([]overviewRow, 0, len(ms))
	var total overviewRow
	total.Model = &devices.Model{}
	for _, m := range ms {
		row := overviewRow{Model: m, Crashes: counts[m.ID]}
		total.Model.DeviceCount += m.DeviceCount
		total.Crashes.Day += row.Crashes.Day
		total.Crashes.Week += row.Crashes.Week
		total.Crashes.DevicesWeek += row.Crashes.DevicesWeek
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "overview", "Fleet overview", map[string]any{"Rows": rows, "Total": total})
}
