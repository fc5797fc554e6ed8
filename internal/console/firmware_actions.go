package console

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/firmware"
)

// refusal is the message of an error the page shows in place (a refused operation or bad
// input), as opposed to one that replaces the page.
func refusal(err error) (string, bool) {
	switch apperr.KindOf(err) {
	case apperr.InvalidOperation, apperr.Validation, apperr.Exists, apperr.TooLarge:
		return err.(*apperr.Error).Msg, true
	}
	return "", false
}

// firmwareUpload stores a bundle sent by the page's script (multipart field `file`,
// answered with JSON for its progress bar) or by the plain form without script
// (answered with the model page).
func (c *Console) firmwareUpload(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	scripted := r.Header.Get("X-Requested-With") == "fetch"
	replace := r.URL.Query().Get("replace") == "true"
	res, err := c.d.Firmware.Upload(r.Context(), firmware.ModelID(id), func() (io.Reader, error) { return bundleStream(r) }, replace, true)
	if scripted {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			msg, ok := refusal(err)
			status := http.StatusBadRequest
			switch apperr.KindOf(err) {
			case apperr.Exists:
				status = http.StatusConflict
			case apperr.TooLarge:
				status = http.StatusRequestEntityTooLarge
			case apperr.NotFound:
				status, msg, ok = http.StatusNotFound, err.(*apperr.Error).Msg, true
			}
			if !ok {
				c.d.Log.Error("console upload failed", "error", err)
				status, msg = http.StatusInternalServerError, "The upload failed on the server; try again."
				if apperr.KindOf(err) == apperr.Unavailable {
					status, msg = http.StatusServiceUnavailable, err.(*apperr.Error).Msg
				}
			}
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"version": res.Version, "created": res.Created,
			"location": fmt.Sprintf("/models/%d?uploaded=%s", id, url.QueryEscape(res.Version))})
		return
	}
	if err != nil {
		if msg, ok := refusal(err); ok {
			c.renderModel(w, r, http.StatusBadRequest, nil, "Upload refused: "+msg)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/models/%d?uploaded=%s", id, url.QueryEscape(res.Version)), http.StatusSeeOther)
}

// bundleStream is the multipart part `file` (or a raw body), refused when empty.
func bundleStream(r *http.Request) (io.Reader, error) {
	var src io.Reader = r.Body
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		mr, err := r.MultipartReader()
		if err != nil {
			return nil, apperr.Validationf("Malformed upload: %v", err)
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return nil, apperr.Validationf("Choose a firmware bundle (.zip) to upload")
			}
			if err != nil {
				return nil, apperr.Validationf("Malformed upload: %v", err)
			}
			if p.FormName() == "file" {
				src = p
				break
			}
		}
	}
	br := bufio.NewReader(src)
	if _, err := br.Peek(1); err == io.EOF {
		return nil, apperr.Validationf("Choose a firmware bundle (.zip) to upload; the file was empty")
	}
	return br, nil
}

// firmwareCurrent makes a stored version current (roll back or pin).
func (c *Console) firmwareCurrent(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	if _, err := c.d.Firmware.SetCurrent(r.Context(), firmware.ModelID(id), chi.URLParam(r, "version")); err != nil {
		if msg, ok := refusal(err); ok {
			c.renderModel(w, r, http.StatusConflict, nil, msg)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/models/%d", id), http.StatusSeeOther)
}

// firmwareDelete deletes a stored version; the current one, or one undecoded dumps need, is refused with the reason.
func (c *Console) firmwareDelete(w http.ResponseWriter, r *http.Request) {
	id := pathID(r, "id")
	if err := c.d.Firmware.DeleteVersion(r.Context(), firmware.ModelID(id), chi.URLParam(r, "version")); err != nil {
		if msg, ok := refusal(err); ok {
			c.renderModel(w, r, http.StatusConflict, nil, msg)
			return
		}
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/models/%d", id), http.StatusSeeOther)
}
