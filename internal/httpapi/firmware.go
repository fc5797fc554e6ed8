package httpapi

import (
	"bufio"
	"context"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/go-chi/chi/v5"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/firmware"
)

// UploadResponse is the answer to a firmware upload.
type UploadResponse struct {
	ID              int64  `json:"id"`
	Code            string `json:"code"`
	FirmwareVersion string `json:"firmware_version"`
}

// VersionBody is one stored firmware version.
type VersionBody struct {
	Version       string                           `json:"version"`
	Current       bool                             `json:"current"`
	UploadedAt    time.Time                        `json:"uploaded_at"`
	ProjectName   string                           `json:"project_name"`
	IDFVersion    string                           `json:"idf_version"`
	Chip          string                           `json:"chip"`
	SecureVersion int64                            `json:"secure_version"`
	CompileDate   string                           `json:"compile_date"`
	CompileTime   string                           `json:"compile_time"`
	ELFSHA256     string                           `json:"elf_sha256"`
	GitCommit     string                           `json:"git_commit"`
	Artifacts     map[string]firmware.ArtifactInfo `json:"artifacts"`
}

func versionBody(v *firmware.Version) VersionBody {
	arts := v.Artifacts
	if arts == nil {
		arts = map[string]firmware.ArtifactInfo{}
	}
	return VersionBody{Version: v.Version, Current: v.Current, UploadedAt: v.UploadedAt, ProjectName: v.ProjectName,
		IDFVersion: v.IDFVersion, Chip: v.Chip, SecureVersion: v.SecureVersion, CompileDate: v.CompileDate, CompileTime: v.CompileTime,
		ELFSHA256: v.ELFSHA256, GitCommit: v.GitCommit, Artifacts: arts}
}

// uploadBody returns the bundle stream: the raw body, or the multipart part "file";
// an empty one is refused here, before anything is looked up.
func uploadBody(r *http.Request) (io.Reader, error) {
	src, err := uploadStream(r)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(src)
	if _, err := br.Peek(1); err == io.EOF {
		return nil, apperr.Validationf("No firmware content provided")
	}
	return br, nil
}

func uploadStream(r *http.Request) (io.Reader, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		return r.Body, nil
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, apperr.Validationf("Malformed multipart body: %v", err)
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil, apperr.Validationf("No firmware content provided (multipart field \"file\" missing)")
		}
		if err != nil {
			return nil, apperr.Validationf("Malformed multipart body: %v", err)
		}
		if p.FormName() == "file" {
			return p, nil
		}
	}
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request, ref firmware.ModelRef, body func() (io.Reader, error)) {
	replace, _ := strconv.ParseBool(r.URL.Query().Get("replace"))
	makeCurrent := true
	if v := r.URL.Query().Get("make_current"); v != "" {
		var err error
		if makeCurrent, err = strconv.ParseBool(v); err != nil {
			writeError(w, r, apperr.Validationf("make_current must be true or false (got %q)", v))
			return
		}
	}
	res, err := s.deps.Firmware.Upload(r.Context(), ref, body, replace, makeCurrent)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, UploadResponse{ID: res.ModelID, Code: res.Code, FirmwareVersion: res.Version})
}

// pathID is a positive integer path parameter; anything else names no resource (404,
// as huma routes answer, see onlyPathErrors).
func pathID(r *http.Request, name string) (int64, error) {
	v, err := strconv.ParseInt(chi.URLParam(r, name), 10, 64)
	if err != nil || v < 1 {
		return 0, apperr.NotFoundf("Resource not found")
	}
	return v, nil
}

func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request, a *firmware.Artifact, filename string) {
	serveDownload(w, r, Download{Filename: filename, Size: a.Size, ETag: a.SHA256,
		Header: http.Header{"X-Firmware-Version": {a.Version}},
		Open: func(ctx context.Context, rng *blob.Range) (io.ReadCloser, error) {
			return s.deps.Firmware.Open(ctx, a, rng)
		}})
}

func binaryResponses(desc string) map[string]*huma.Response {
	return map[string]*huma.Response{
		"200": {Description: desc, Content: map[string]*huma.MediaType{"application/octet-stream": {}}},
		"206": {Description: "The requested byte range"},
		"304": {Description: "Not modified (If-None-Match matched the ETag)"},
		"404": {Description: "No such firmware"},
		"503": {Description: "Object storage unavailable"},
	}
}

func uploadOperation(id, path, summary string, tags []string) *huma.Operation {
	return &huma.Operation{OperationID: id, Method: http.MethodPost, Path: path, Summary: summary, Tags: tags,
		Description: "Body: the firmware bundle ZIP, raw (`application/zip` or `application/octet-stream`) or as multipart field `file`. " +
			"`?replace=true` overwrites an existing version with different content; " +
			"`?make_current=false` stores the version without making it current (a rollout can start from it).",
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{
			"application/zip": {}, "application/octet-stream": {}, "multipart/form-data": {}}},
		Responses: map[string]*huma.Response{
			"200": {Description: "Stored: {\"id\",\"code\",\"firmware_version\"}", Content: map[string]*huma.MediaType{"application/json": {}}},
			"400": {Description: "Invalid bundle"}, "404": {Description: "Unknown model"}, "409": {Description: "Version exists with other content"},
			"413": {Description: "Bundle too large"}, "503": {Description: "Storage unavailable"},
		}}
}

func (s *Server) registerFirmware() {
	tags := []string{"Firmware"}
	oapi := s.api.OpenAPI()

	s.router.Post("/api/device-models/{model_id}/firmware", func(w http.ResponseWriter, r *http.Request) {
		// The body is checked before the model lookup, as the older service did: an
		// empty upload is a 400 even for an unknown model.
		id, err := pathID(r, "model_id")
		var body io.Reader
		if err == nil {
			body, err = uploadBody(r)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		s.upload(w, r, firmware.ModelID(id), func() (io.Reader, error) { return body, nil })
	})
	oapi.AddOperation(uploadOperation("upload-firmware", "/api/device-models/{model_id}/firmware", "Upload a firmware bundle", tags))

	s.router.Post("/api/pipeline/models/{code}/firmware", func(w http.ResponseWriter, r *http.Request) {
		// The model is looked up before the body is checked (an unknown code is a 404).
		s.upload(w, r, firmware.ModelCode(chi.URLParam(r, "code")), func() (io.Reader, error) { return uploadBody(r) })
	})
	oapi.AddOperation(uploadOperation("pipeline-upload-firmware", "/api/pipeline/models/{code}/firmware", "Upload a firmware bundle (CI pipeline)", []string{"Pipeline"}))

	s.router.Get("/api/device-models/{model_id}/firmware", func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "model_id")
		if err == nil {
			var a *firmware.Artifact
			if a, err = s.deps.Firmware.Current(r.Context(), firmware.ModelID(id)); err == nil {
				s.serveArtifact(w, r, a, "firmware-"+a.Code+".bin")
				return
			}
		}
		writeError(w, r, err)
	})
	oapi.AddOperation(&huma.Operation{OperationID: "download-firmware", Method: http.MethodGet, Path: "/api/device-models/{model_id}/firmware",
		Summary: "Download the model's current firmware.bin", Tags: tags, Responses: binaryResponses("firmware.bin")})

	s.router.Get("/api/device-models/{model_id}/firmware-versions/{version}/{artifact}", func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "model_id")
		if err == nil {
			var a *firmware.Artifact
			if a, err = s.deps.Firmware.Artifact(r.Context(), firmware.ModelID(id), chi.URLParam(r, "version"), chi.URLParam(r, "artifact")); err == nil {
				s.serveArtifact(w, r, a, a.Code+"-"+a.Version+"-"+a.Name)
				return
			}
		}
		writeError(w, r, err)
	})
	oapi.AddOperation(&huma.Operation{OperationID: "download-firmware-artifact", Method: http.MethodGet,
		Path: "/api/device-models/{model_id}/firmware-versions/{version}/{artifact}", Tags: tags,
		Summary:   "Download one artifact (firmware.bin, firmware.elf, firmware.map, sdkconfig, version.json) of a stored version",
		Responses: binaryResponses("The artifact")})

	s.router.Get("/api/iot/firmware", func(w http.ResponseWriter, r *http.Request) {
		m, a, err := s.deps.Firmware.CurrentOfDevice(r.Context(), device(r.Context()).DeviceID)
		if err == nil {
			s.serveArtifact(w, r, a, "firmware-"+m.Code+".bin")
			return
		}
		writeError(w, r, err)
	})
	oapi.AddOperation(&huma.Operation{OperationID: "iot-download-firmware", Method: http.MethodGet, Path: "/api/iot/firmware",
		Summary: "The calling device's current firmware.bin (supports Range)", Tags: []string{"Devices (device-facing)"},
		Responses: binaryResponses("firmware.bin")})

	huma.Register(s.api, huma.Operation{OperationID: "iot-firmware-version", Method: http.MethodGet, Path: "/api/iot/firmware-version",
		Summary: "The calling device's current firmware version, size and SHA-256", Tags: []string{"Devices (device-facing)"}},
		func(ctx context.Context, _ *struct{}) (*struct {
			Body struct {
				FirmwareVersion *string `json:"firmware_version"`
				Size            *int64  `json:"size"`
				SHA256          *string `json:"sha256"`
			}
		}, error) {
			m, a, err := s.deps.Firmware.CurrentOfDevice(ctx, device(ctx).DeviceID)
			if m == nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					FirmwareVersion *string `json:"firmware_version"`
					Size            *int64  `json:"size"`
					SHA256          *string `json:"sha256"`
				}
			}{}
			out.Body.FirmwareVersion = m.FirmwareVersion
			if a != nil {
				out.Body.Size = &a.Size
				if a.SHA256 != "" {
					out.Body.SHA256 = &a.SHA256
				}
			}
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "pipeline-firmware-version", Method: http.MethodGet, Path: "/api/pipeline/models/{code}/firmware-version",
		Summary: "A model's current firmware version", Tags: []string{"Pipeline"}},
		func(ctx context.Context, in *struct {
			Code string `path:"code"`
		}) (*struct {
			Body struct {
				Code            string  `json:"code"`
				FirmwareVersion *string `json:"firmware_version"`
			}
		}, error) {
			m, err := s.deps.Devices.GetModelByCode(ctx, in.Code)
			if err != nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					Code            string  `json:"code"`
					FirmwareVersion *string `json:"firmware_version"`
				}
			}{}
			out.Body.Code, out.Body.FirmwareVersion = m.Code, m.FirmwareVersion
			return out, nil
		})

	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-firmware-versions", Method: http.MethodGet, Path: "/api/device-models/{model_id}/firmware-versions",
		Summary: "Stored firmware versions, newest first", Tags: tags}),
		func(ctx context.Context, in *ModelIDPath) (*struct {
			Body struct {
				Versions []VersionBody `json:"firmware_versions"`
				Current  *string       `json:"current"`
				Count    int           `json:"count"`
			}
		}, error) {
			m, vs, err := s.deps.Firmware.ListVersions(ctx, firmware.ModelID(in.ModelID))
			if err != nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					Versions []VersionBody `json:"firmware_versions"`
					Current  *string       `json:"current"`
					Count    int           `json:"count"`
				}
			}{}
			out.Body.Versions = make([]VersionBody, 0, len(vs))
			for _, v := range vs {
				out.Body.Versions = append(out.Body.Versions, versionBody(v))
			}
			out.Body.Current, out.Body.Count = m.FirmwareVersion, len(vs)
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "set-current-firmware", Method: http.MethodPut, Path: "/api/device-models/{model_id}/firmware-version",
		Summary: "Make a stored version current (rollback or pin); devices are notified", Tags: tags},
		func(ctx context.Context, in *struct {
			ModelIDPath
			Body struct {
				Version string `json:"version" minLength:"1" maxLength:"32"`
			}
		}) (*modelOut, error) {
			m, err := s.deps.Firmware.SetCurrent(ctx, firmware.ModelID(in.ModelID), in.Body.Version)
			if err != nil {
				return nil, err
			}
			return &modelOut{Body: modelBody(m)}, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "delete-firmware-version", Method: http.MethodDelete,
		Path: "/api/device-models/{model_id}/firmware-versions/{version}", Summary: "Delete a stored version (not the current one)", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *struct {
			ModelIDPath
			Version string `path:"version"`
		}) (*struct{}, error) {
			return nil, s.deps.Firmware.DeleteVersion(ctx, firmware.ModelID(in.ModelID), in.Version)
		})

	s.registerScripts()
}
