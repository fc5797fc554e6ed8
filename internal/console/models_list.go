package console

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// modelForm is the create/edit form of a model; Errors maps a field to its message,
// shown next to it.
type modelForm struct {
	Code, Name, Schema string
	Errors             map[string]string
}

func readModelForm(r *http.Request) *modelForm {
	return &modelForm{Code: strings.TrimSpace(r.PostFormValue("code")), Name: strings.TrimSpace(r.PostFormValue("name")),
		Schema: strings.TrimSpace(r.PostFormValue("config_schema")), Errors: map[string]string{}}
}

// Validate checks what the form can know; the service checks the schema itself and
// its answer is put next to the schema field.
func (f *modelForm) Validate(creating bool) bool {
	if creating && !naming.ValidModelCode(f.Code) {
		f.Errors["code"] = "A code is 1 to 50 of a-z, 0-9 and _."
	}
	if f.Name == "" || len(f.Name) > 100 {
		f.Errors["name"] = "A name is 1 to 100 characters."
	}
	return len(f.Errors) == 0
}

// fieldOf places a service's validation message next to the field it is about.
func (f *modelForm) fieldOf(err error) bool {
	ae, ok := err.(*apperr.Error)
	if !ok || ae.Kind != apperr.Validation && ae.Kind != apperr.Exists {
		return false
	}
	msg := strings.ToLower(ae.Msg)
	switch {
	case strings.Contains(msg, "schema"):
		f.Errors["config_schema"] = ae.Msg
	case strings.Contains(msg, "code") || ae.Kind == apperr.Exists:
		f.Errors["code"] = ae.Msg
	default:
		f.Errors["name"] = ae.Msg
	}
	return true
}

func (f *modelForm) input() devices.ModelInput {
	in := devices.ModelInput{Code: f.Code, Name: &f.Name}
	in.ConfigSchema = &f.Schema
	if f.Schema == "" {
		in.ConfigSchema = nil
	}
	return in
}

// modelList is `/models`, with the create form for editors.
func (c *Console) modelList(w http.ResponseWriter, r *http.Request) {
	c.renderModels(w, r, http.StatusOK, &modelForm{Errors: map[string]string{}})
}

func (c *Console) renderModels(w http.ResponseWriter, r *http.Request, status int, f *modelForm) {
	ms, err := c.d.Devices.ListModels(r.Context())
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	c.render(w, r, status, "models", "Device models", map[string]any{"Models": ms, "Form": f})
}

// modelCreate creates a model; a refused form comes back with the reason by its field.
func (c *Console) modelCreate(w http.ResponseWriter, r *http.Request) {
	f := readModelForm(r)
	if !f.Validate(true) {
		c.renderModels(w, r, http.StatusBadRequest, f)
		return
	}
	m, err := c.d.Devices.CreateModel(r.Context(), f.input())
	if err != nil {
		if f.fieldOf(err) {
			status := http.StatusBadRequest
			if apperr.KindOf(err) == apperr.Exists {
				status = http.StatusConflict
			}
			c.renderModels(w, r, status, f)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/models/%d", m.ID), http.StatusSeeOther)
}
