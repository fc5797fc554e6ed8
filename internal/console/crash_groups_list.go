package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// groupFilter is the crash group list's query: model, status, version, sort, and the
// keyset cursor (the last group of the previous page).
type groupFilter struct {
	Model   int64
	Status  string
	Version string
	Sort    string
	Before  int64
}

func readGroupFilter(q url.Values) (groupFilter, error) {
	f := groupFilter{Status: q.Get("status"), Version: strings.TrimSpace(q.Get("version")), Sort: q.Get("sort")}
	for name, dst := range map[string]*int64{"model": &f.Model, "before": &f.Before} {
		if v := q.Get(name); v != "" {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id < 0 {
				return f, apperr.Validationf("%s must be an id", name)
			}
			*dst = id
		}
	}
	switch f.Status {
	case "", crashgroups.StatusOpen, crashgroups.StatusResolved, crashgroups.StatusIgnored:
	default:
		return f, apperr.Validationf("status must be open, resolved or ignored")
	}
	switch f.Sort {
	case "", "last_seen", "devices", "dumps":
	default:
		return f, apperr.Validationf("sort must be last_seen, devices or dumps")
	}
	if f.Version != "" && !naming.ValidVersion(f.Version) {
		return f, apperr.Validationf("version must be a firmware version (1-32 of A-Z, a-z, 0-9, '.', '_', '+', '-')")
	}
	return f, nil
}

// URL is this list's URL after the group before (0: the first page).
func (f groupFilter) URL(before int64) string {
	v := url.Values{}
	if f.Model != 0 {
		v.Set("model", strconv.FormatInt(f.Model, 10))
	}
	for k, s := range map[string]string{"status": f.Status, "version": f.Version, "sort": f.Sort} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if before > 0 {
		v.Set("before", strconv.FormatInt(before, 10))
	}
	if len(v) == 0 {
		return "/crash-groups"
	}
	return "/crash-groups?" + v.Encode()
}

// groupRow is one listed group with its model and its 30-day sparkline.
type groupRow struct {
	*crashgroups.Group
	Model *devices.Model
	Spark sparkline
}

// crashGroupList is `/crash-groups`: filters, a page of groups (keyset-paged), each with
// its dumps per day over the last 30 days. A fixed number of queries per page.
func (c *Console) crashGroupList(w http.ResponseWriter, r *http.Request) {
	f, err := readGroupFilter(r.URL.Query())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	size := c.d.PageSize
	page, err := c.d.CrashGroups.List(r.Context(), crashgroups.Filter{ModelID: f.Model, Status: f.Status, Version: f.Version,
		Sort: f.Sort, Limit: size, BeforeID: f.Before})
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	ids := make([]int64, len(page.Groups))
	for i, g := range page.Groups {
		ids[i] = g.ID
	}
	daily, err := c.d.CrashGroups.Sparklines(r.Context(), ids)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	ms, err := c.d.Devices.ListModels(r.Context())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	byID := map[int64]*devices.Model{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	rows := make([]groupRow, len(page.Groups))
	for i, g := range page.Groups {
		rows[i] = groupRow{Group: g, Model: byID[g.ModelID], Spark: newSparkline(daily[g.ID], c.now())}
		if rows[i].Model == nil {
			rows[i].Model = &devices.Model{ID: g.ModelID}
		}
	}
	var next string
	if n := len(page.Groups); n == size {
		next = f.URL(page.Groups[n-1].ID)
	}
	c.render(w, r, http.StatusOK, "crash_groups", "Crash groups", map[string]any{"Groups": rows, "Count": page.Count,
		"Filter": f, "Models": ms, "Next": next, "First": f.URL(0), "Paged": f.Before > 0})
}
