package console

import (
	"fmt"
	"net/http"

	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
)

// modelShow is `/models/{id}`: the model, its edit form, firmware history with upload,
// and its first devices.
func (c *Console) modelShow(w http.ResponseWriter, r *http.Request) {
	c.renderModel(w, r, http.StatusOK, nil, "")
}

func (c *Console) renderModel(w http.ResponseWriter, r *http.Request, status int, f *modelForm, problem string) {
	id := pathID(r, "id")
	if id == 0 {
		c.notFound(w, r)
		return
	}
	m, versions, err := c.d.Firmware.ListVersions(r.Context(), firmware.ModelID(id))
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	devs, total, err := c.d.Devices.FindDevicePage(r.Context(), devices.DeviceFilter{ModelID: id}, c.d.PageSize, 0)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	more := total > len(devs)
	if f == nil {
		f = &modelForm{Code: m.Code, Name: m.Name, Schema: str(m.ConfigSchema), Errors: map[string]string{}}
	}
	c.render(w, r, status, "model", "Model "+m.Code, map[string]any{"Model": m, "Versions": versions, "Devices": devs,
		"MoreDevices": more, "Form": f, "Problem": problem, "Uploaded": r.URL.Query().Get("uploaded")})
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// modelUpdate saves the name and config schema; the schema's error is shown by its field.
func (c *Console) modelUpdate(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	f := readModelForm(r)
	if !f.Validate(false) {
		c.renderModel(w, r, http.StatusBadRequest, f, "")
		return
	}
	in := f.input()
	if in.ConfigSchema == nil {
		empty := ""
		in.ConfigSchema = &empty
	}
	if _, err := c.d.Devices.UpdateModel(r.Context(), id, in); err != nil {
		if f.fieldOf(err) {
			c.renderModel(w, r, http.StatusBadRequest, f, "")
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/models/%d", id), http.StatusSeeOther)
}

// modelDelete deletes a model; when refused (it still has devices) the page says why.
func (c *Console) modelDelete(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	if err := c.d.Devices.DeleteModel(r.Context(), id); err != nil {
		if msg, ok := refusal(err); ok {
			c.renderModel(w, r, http.StatusConflict, nil, msg)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, "/models", http.StatusSeeOther)
}
