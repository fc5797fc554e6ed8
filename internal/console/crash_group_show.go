package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
)

// groupForm is the detail page's status and merge forms, with their errors.
type groupForm struct {
	ResolvedIn string
	Into       string
	Errors     map[string]string
}

// crashGroupShow is `/crash-groups/{id}`: the group, its versions and daily chart, a page
// of its devices (keyset by `devices_before`), sample dumps, and for editors the status
// and merge forms.
func (c *Console) crashGroupShow(w http.ResponseWriter, r *http.Request) {
	c.renderGroup(w, r, http.StatusOK, nil)
}

func (c *Console) renderGroup(w http.ResponseWriter, r *http.Request, status int, form *groupForm) {
	id := pathID(r, "id")
	if id == 0 {
		c.notFound(w, r)
		return
	}
	g, err := c.d.CrashGroups.Get(r.Context(), id)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	before, _ := strconv.ParseInt(r.URL.Query().Get("devices_before"), 10, 64)
	devs, err := c.d.CrashGroups.Devices(r.Context(), id, c.d.PageSize, max(before, 0))
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	m, err := c.d.Devices.GetModel(r.Context(), g.ModelID)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	var next int64
	if n := len(devs.Devices); n == c.d.PageSize {
		next = devs.Devices[n-1].DeviceID
	}
	if form == nil {
		form = &groupForm{Errors: map[string]string{}}
	}
	c.render(w, r, status, "crash_group", "Crash group "+strconv.FormatInt(id, 10), map[string]any{"Group": g, "Model": m,
		"Devices": devs, "NextDevices": next, "Chart": dailyChart(g.Daily, c.now()), "Form": form})
}

// dailyChart spreads the days with dumps over the last DailyDays days.
func dailyChart(days []crashgroups.DayCount, now time.Time) sparkline {
	counts := make([]int64, crashgroups.DailyDays)
	start, _ := time.Parse(time.DateOnly, now.AddDate(0, 0, -(crashgroups.DailyDays-1)).Format(time.DateOnly))
	for _, d := range days {
		t, err := time.Parse(time.DateOnly, d.Day)
		if err != nil {
			continue
		}
		if i := int(t.Sub(start).Hours() / 24); i >= 0 && i < len(counts) {
			counts[i] = d.Dumps
		}
	}
	return drawDays(counts, now, 12, 80)
}

// crashGroupStatus resolves (optionally in a version), ignores or reopens a group.
func (c *Console) crashGroupStatus(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	if id == 0 {
		c.notFound(w, r)
		return
	}
	f := &groupForm{ResolvedIn: strings.TrimSpace(r.PostFormValue("resolved_in_version")), Errors: map[string]string{}}
	var in *string
	if f.ResolvedIn != "" {
		in = &f.ResolvedIn
	}
	if _, err := c.d.CrashGroups.Update(r.Context(), id, r.PostFormValue("status"), in); err != nil {
		if apperr.KindOf(err) == apperr.Validation {
			f.Errors["status"] = msgOf(err)
			c.renderGroup(w, r, http.StatusBadRequest, f)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/crash-groups/%d", id), http.StatusSeeOther)
}

// crashGroupMerge merges this group into another of its model (one bug, two signatures)
// and shows the group it went into.
func (c *Console) crashGroupMerge(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	if id == 0 {
		c.notFound(w, r)
		return
	}
	f := &groupForm{Into: strings.TrimSpace(r.PostFormValue("into")), Errors: map[string]string{}}
	into, err := strconv.ParseInt(f.Into, 10, 64)
	if err != nil || into <= 0 {
		f.Errors["into"] = "Enter the id of the crash group to merge into."
		c.renderGroup(w, r, http.StatusBadRequest, f)
		return
	}
	g, err := c.d.CrashGroups.Merge(r.Context(), id, into)
	if err != nil {
		switch apperr.KindOf(err) {
		case apperr.Validation, apperr.InvalidOperation:
			f.Errors["into"] = msgOf(err)
			c.renderGroup(w, r, http.StatusBadRequest, f)
		case apperr.NotFound:
			// Either group: the page says which, or (this one gone) is the 404 page itself.
			f.Errors["into"] = msgOf(err)
			c.renderGroup(w, r, http.StatusNotFound, f)
		default:
			c.serviceError(w, r, err)
		}
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/crash-groups/%d", g.ID), http.StatusSeeOther)
}

// msgOf is an apperr's message for the page.
func msgOf(err error) string {
	var ae *apperr.Error
	if errors.As(err, &ae) {
		return ae.Msg
	}
	return "Internal server error."
}
