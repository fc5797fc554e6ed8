package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/provisioning"
)

func writeOutput(w http.ResponseWriter, status int, out *provisioning.Output) {
	h := w.Header()
	h.Set("Content-Type", out.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(out.Body)))
	// The body carries device secrets: no cache keeps it.
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	if out.Filename != "" {
		h.Set("Content-Disposition", "attachment; filename="+out.Filename)
	}
	w.WriteHeader(status)
	_, _ = w.Write(out.Body)
}

// SecretRotatedHeader marks a response that issued a new device secret.
const SecretRotatedHeader = "X-Device-Secret-Rotated"

func (s *Server) registerProvisioning() {
	oapi := s.api.OpenAPI()
	query := func(name, desc string) *huma.Param {
		return &huma.Param{Name: name, In: "query", Description: desc, Schema: &huma.Schema{Type: "string"}}
	}
	path := func(name string) *huma.Param {
		return &huma.Param{Name: name, In: "path", Required: true, Schema: &huma.Schema{Type: "integer", Minimum: ptr(1.0)}}
	}

	s.router.Post("/api/devices/{device_id}/provisioning", func(w http.ResponseWriter, r *http.Request) {
		// Resolved first: a record with no usable address must not rotate a secret.
		base, err := s.deps.PublicURL.BaseURL(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		id, err := pathID(r, "device_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		q := r.URL.Query()
		out, err := s.deps.Provisioning.Provision(r.Context(), id, provisioning.Request{PartitionSize: q.Get("partition_size"),
			Format: q.Get("format"), RequestBaseURL: base})
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set(SecretRotatedHeader, "true")
		writeOutput(w, http.StatusOK, out)
	})
	oapi.AddOperation(&huma.Operation{OperationID: "provision-device", Method: http.MethodPost, Path: "/api/devices/{device_id}/provisioning",
		Summary: "Issue a new device secret and download the device's provisioning record", Tags: []string{"Devices"},
		Description: "Rotates the secret (the old one stops working; the response carries `" + SecretRotatedHeader + ": true`) and returns " +
			"namespace `prov` with `device_key`, `device_secret`, `base_url`, `model` and, when configured, `mqtt_url`, `wifi_ssid`, " +
			"`wifi_password`: as an NVS partition image (default, `{device_key}-nvs.bin`), ESP-IDF CSV or JSON.",
		Parameters: []*huma.Param{path("device_id"),
			query("partition_size", "NVS partition size: a multiple of 4096, at least 0x3000 (default 0x3000)"),
			query("format", "nvs (default), csv or json")},
		Responses: map[string]*huma.Response{
			"200": {Description: "The provisioning record", Content: map[string]*huma.MediaType{
				"application/octet-stream": {}, "text/csv": {}, "application/json": {}}},
			"400": {Description: "Bad partition_size or format; nothing changed"}, "404": {Description: "No such device"},
		}})

	s.router.Post("/api/device-models/{model_id}/provisioning-batch", func(w http.ResponseWriter, r *http.Request) {
		// Resolved first: a record with no usable address must not rotate a secret.
		base, err := s.deps.PublicURL.BaseURL(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		id, err := pathID(r, "model_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		var body struct {
			Count         int             `json:"count"`
			PartitionSize json.RawMessage `json:"partition_size"`
			Config        string          `json:"config"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeError(w, r, apperr.Validationf("body must be JSON {\"count\": N, \"partition_size\": \"0x3000\", \"config\": \"{}\"}: %v", err))
			return
		}
		size, err := sizeParam(body.PartitionSize)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out, err := s.deps.Provisioning.Batch(r.Context(), id, provisioning.BatchRequest{Count: body.Count, PartitionSize: size,
			Config: body.Config, RequestBaseURL: base})
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeOutput(w, http.StatusCreated, out)
	})
	oapi.AddOperation(&huma.Operation{OperationID: "provision-device-batch", Method: http.MethodPost,
		Path: "/api/device-models/{model_id}/provisioning-batch", Tags: []string{"Device models"},
		Summary: "Create devices and download a ZIP of their NVS provisioning images",
		Description: "Body `{\"count\": N, \"partition_size\": \"0x3000\", \"config\": \"{}\"}` (count up to PROVISIONING_BATCH_MAX; " +
			"config is each device's config JSON, default `{}`). The ZIP holds `{device_key}-nvs.bin` per device and `manifest.csv` " +
			"(`device_key,device_id,file`). All or nothing: devices and ZIP are built in one transaction.",
		Parameters:  []*huma.Param{path("model_id")},
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{"application/json": {}}},
		Responses: map[string]*huma.Response{
			"201": {Description: "The devices were created; the ZIP", Content: map[string]*huma.MediaType{"application/zip": {}}},
			"400": {Description: "Bad count, partition_size or config; nothing created"}, "404": {Description: "No such model"},
		}})

	s.router.Get("/api/iot/provisioning", func(w http.ResponseWriter, r *http.Request) {
		// Resolved first: a record with no usable address must not rotate a secret.
		base, err := s.deps.PublicURL.BaseURL(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		id := device(r.Context())
		// The secret the device logged in with is its own; a token login has none to repeat.
		secret := ""
		if user, pass, ok := r.BasicAuth(); ok && user == id.DeviceKey {
			secret = pass
		}
		rec, err := s.deps.Provisioning.Current(r.Context(), id.DeviceID, secret, base)
		if err != nil {
			writeError(w, r, err)
			return
		}
		b, _ := json.Marshal(rec)
		writeOutput(w, http.StatusOK, &provisioning.Output{Body: b, ContentType: "application/json"})
	})
	oapi.AddOperation(&huma.Operation{OperationID: "iot-get-provisioning", Method: http.MethodGet, Path: "/api/iot/provisioning",
		Summary: "The calling device's provisioning record as JSON (the secret is not rotated)", Tags: []string{"Devices (device-facing)"},
		Description: "`device_secret` repeats the secret of an HTTP Basic login and is absent after a token login.",
		Responses:   map[string]*huma.Response{"200": {Description: "The record", Content: map[string]*huma.MediaType{"application/json": {}}}}})
}

func ptr[T any](v T) *T { return &v }

// sizeParam accepts partition_size as a string ("0x3000") or a number (12288).
func sizeParam(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), nil
	}
	return "", apperr.Validationf("partition_size must be a string like \"0x3000\" or a number")
}
