package console

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// maxPage bounds the page number: past it no fleet has devices.
const maxPage = 1_000_000

// deviceFilter is the list's query: model, active state, a search over key and name,
// running version, last seen, page.
type deviceFilter struct {
	Model   int64
	Active  string // "", "yes", "no"
	Q       string
	Running string // "": any version
	Seen    string // "", or one of seenChoices' values
	Page    int
}

// seenChoice is one choice of the "last seen" filter.
type seenChoice struct {
	Value, Label string
	Within       bool // seen within Ago; else not seen for Ago (never seen: counted from creation)
	Ago          time.Duration
}

// seenChoices are the "last seen" filter's choices, in the order shown.
var seenChoices = []seenChoice{
	{"1h", "Seen within 1 hour", true, time.Hour},
	{"24h", "Seen within 24 hours", true, 24 * time.Hour},
	{"7d", "Seen within 7 days", true, 7 * 24 * time.Hour},
	{"not-24h", "Not seen for 24 hours", false, 24 * time.Hour},
	{"not-7d", "Not seen for 7 days", false, 7 * 24 * time.Hour},
	{"not-30d", "Not seen for 30 days", false, 30 * 24 * time.Hour},
}

func readDeviceFilter(q url.Values) (deviceFilter, error) {
	f := deviceFilter{Active: q.Get("active"), Q: strings.TrimSpace(q.Get("q")), Running: strings.TrimSpace(q.Get("running")),
		Seen: q.Get("seen"), Page: 1}
	if f.Running != "" && !naming.ValidVersion(f.Running) {
		return f, apperr.Validationf("running version must be a firmware version (1-32 of A-Z, a-z, 0-9, '.', '_', '+', '-')")
	}
	if f.Seen != "" && !slices.ContainsFunc(seenChoices, func(c seenChoice) bool { return c.Value == f.Seen }) {
		return f, apperr.Validationf("last seen must be one of the listed choices")
	}
	if v := q.Get("model"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 0 {
			return f, apperr.Validationf("model must be a model id")
		}
		f.Model = id
	}
	if f.Active != "" && f.Active != "yes" && f.Active != "no" {
		return f, apperr.Validationf("active must be yes or no")
	}
	if v := q.Get("page"); v != "" {
		p, err := strconv.Atoi(v)
		// Bounded so that page × size cannot overflow into a negative offset (found by FuzzDeviceFilter).
		if err != nil || p < 1 || p > maxPage {
			return f, apperr.Validationf("page must be a number from 1 to %d", maxPage)
		}
		f.Page = p
	}
	if len(f.Q) > 100 {
		return f, apperr.Validationf("search is at most 100 characters")
	}
	return f, nil
}

// devices is the devices query of this filter at now.
func (f deviceFilter) devices(now time.Time) devices.DeviceFilter {
	p := devices.DeviceFilter{ModelID: f.Model, Search: f.Q, RunningVersion: f.Running}
	if f.Active != "" {
		active := f.Active == "yes"
		p.Active = &active
	}
	for _, c := range seenChoices {
		if c.Value == f.Seen {
			at := now.Add(-c.Ago)
			if c.Within {
				p.SeenAfter = &at
			} else {
				p.StaleBefore = &at // as the overview's "not seen in 24 h" counts
			}
		}
	}
	return p
}

// SeenChoices lists the "last seen" filter's choices for the template.
func (deviceFilter) SeenChoices() []seenChoice { return seenChoices }

// pageURL is this list's URL at another page.
func (f deviceFilter) PageURL(page int) string {
	v := url.Values{}
	if f.Model != 0 {
		v.Set("model", strconv.FormatInt(f.Model, 10))
	}
	if f.Active != "" {
		v.Set("active", f.Active)
	}
	if f.Q != "" {
		v.Set("q", f.Q)
	}
	if f.Running != "" {
		v.Set("running", f.Running)
	}
	if f.Seen != "" {
		v.Set("seen", f.Seen)
	}
	v.Set("page", strconv.Itoa(page))
	return "/devices?" + v.Encode()
}

// deviceList is `/devices`: filters, paging, and the create form for editors.
func (c *Console) deviceList(w http.ResponseWriter, r *http.Request) {
	c.renderDevices(w, r, http.StatusOK, nil)
}

func (c *Console) renderDevices(w http.ResponseWriter, r *http.Request, status int, form *deviceForm) {
	f, err := readDeviceFilter(r.URL.Query())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	size := c.d.PageSize
	devs, total, err := c.d.Devices.FindDevicePage(r.Context(), f.devices(time.Now().UTC()), size, (f.Page-1)*size)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	ms, err := c.d.Devices.ListModels(r.Context())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	if form == nil {
		form = &deviceForm{Config: "{}", Errors: map[string]string{}}
		form.Model = f.Model
	}
	c.render(w, r, status, "devices", "Devices", map[string]any{"Devices": devs, "Total": total, "Filter": f,
		"Models": ms, "Prev": f.Page > 1, "Next": f.Page*size < total, "Form": form})
}

// deviceForm is the create form and the edit form of a device.
type deviceForm struct {
	Model  int64
	Config string
	Active bool
	Errors map[string]string
}

func (f *deviceForm) Validate(creating bool) bool {
	if creating && f.Model <= 0 {
		f.Errors["model"] = "Choose a model."
	}
	if strings.TrimSpace(f.Config) == "" {
		f.Config = "{}"
	}
	return len(f.Errors) == 0
}

// deviceCreate creates a device and shows its secret, this once.
func (c *Console) deviceCreate(w http.ResponseWriter, r *http.Request) {
	f := &deviceForm{Config: r.PostFormValue("config"), Errors: map[string]string{}}
	f.Model, _ = strconv.ParseInt(r.PostFormValue("model"), 10, 64)
	if !f.Validate(true) {
		c.renderDevices(w, r, http.StatusBadRequest, f)
		return
	}
	d, secret, err := c.d.Devices.CreateDevice(r.Context(), f.Model, f.Config)
	if err != nil {
		if msg, ok := refusal(err); ok {
			f.Errors["config"] = msg
			c.renderDevices(w, r, http.StatusBadRequest, f)
			return
		}
		if apperr.KindOf(err) == apperr.NotFound {
			f.Errors["model"] = err.(*apperr.Error).Msg
			c.renderDevices(w, r, http.StatusBadRequest, f)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	c.render(w, r, http.StatusCreated, "secret", "Device "+d.Key, map[string]any{"Device": d, "Secret": secret, "Created": true,
		"Back": fmt.Sprintf("/devices/%d", d.ID)})
}
