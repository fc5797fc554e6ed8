package console

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

// deviceShow is `/devices/{id}`: the device, its config form, its actions and its core
// dumps (newest first, paged by `before`).
func (c *Console) deviceShow(w http.ResponseWriter, r *http.Request) {
	c.renderDevice(w, r, http.StatusOK, nil, "")
}

func (c *Console) renderDevice(w http.ResponseWriter, r *http.Request, status int, f *deviceForm, problem string) {
	id := pathID(r, "id")
	if id == 0 {
		c.notFound(w, r)
		return
	}
	d, err := c.d.Devices.GetDevice(r.Context(), id)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	page, err := c.d.Coredumps.List(r.Context(), id, c.d.PageSize, max(before, 0))
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	var next int64
	if n := len(page.Coredumps); n == c.d.PageSize {
		next = page.Coredumps[n-1].ID
	}
	if f == nil {
		f = &deviceForm{Config: d.Config, Active: d.Active, Errors: map[string]string{}}
	}
	c.render(w, r, status, "device", "Device "+d.Key, map[string]any{"Device": d, "Dumps": page.Coredumps, "Total": page.Total,
		"Next": next, "Form": f, "Problem": problem})
}

// deviceUpdate saves the config (checked against the model's schema, the error shown by
// the field) and the active flag.
func (c *Console) deviceUpdate(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	f := &deviceForm{Config: r.PostFormValue("config"), Active: r.PostFormValue("active") == "on", Errors: map[string]string{}}
	f.Validate(false)
	if _, err := c.d.Devices.UpdateDevice(r.Context(), id, f.Config, f.Active); err != nil {
		if msg, ok := refusal(err); ok {
			f.Errors["config"] = msg
			c.renderDevice(w, r, http.StatusBadRequest, f, "")
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/devices/%d", id), http.StatusSeeOther)
}

// deviceSecret issues a new secret (the old one stops working) and shows it once.
func (c *Console) deviceSecret(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	d, secret, err := c.d.Devices.RotateSecret(r.Context(), id)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "secret", "Device "+d.Key, map[string]any{"Device": d, "Secret": secret,
		"Back": fmt.Sprintf("/devices/%d", d.ID)})
}

// deviceDelete deletes the device and its core dumps.
func (c *Console) deviceDelete(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	if err := c.d.Devices.DeleteDevice(r.Context(), id); err != nil {
		if apperr.KindOf(err) == apperr.InvalidOperation {
			c.renderDevice(w, r, http.StatusConflict, nil, err.(*apperr.Error).Msg)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, "/devices", http.StatusSeeOther)
}
