package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// CoredumpSummary is a core dump in lists (ORIGINAL-SYSTEM §2.4).
type CoredumpSummary struct {
	ID              int64      `json:"id"`
	DeviceID        int64      `json:"device_id"`
	Chip            string     `json:"chip"`
	FirmwareVersion string     `json:"firmware_version"`
	Size            int64      `json:"size"`
	ParseStatus     string     `json:"parse_status" enum:"PENDING,PARSED,ERROR"`
	UploadedAt      time.Time  `json:"uploaded_at"`
	ParsedAt        *time.Time `json:"parsed_at"`
	CreatedAt       time.Time  `json:"created_at"`
}

// CoredumpDetail is one core dump with the parser output and what ingest found.
type CoredumpDetail struct {
	CoredumpSummary
	ParsedOutput *string         `json:"parsed_output"`
	UpdatedAt    time.Time       `json:"updated_at"`
	Container    *string         `json:"container" doc:"How the dump arrived: raw (partition bytes), base64 (UART text), elf (bare core ELF) or unknown; null when never inspected"`
	Format       *string         `json:"format" doc:"Data format named by the version word: elf or binary"`
	DumpVersion  *int64          `json:"dump_version" doc:"Core dump version word: chip_id << 16 | major << 8 | minor"`
	ChecksumOK   *bool           `json:"checksum_ok" doc:"Whether the dump's CRC32/SHA-256 verifies; null when it carries none"`
	AppELFSHA    *string         `json:"app_elf_sha_prefix" doc:"Hex prefix of the app ELF's SHA-256 recorded in ELF-format dumps"`
	Recognized   bool            `json:"recognized" doc:"Whether the body is recognisable as an ESP-IDF core dump (it is stored either way)"`
	SHA256       *string         `json:"sha256" doc:"SHA-256 of the stored bytes"`
	ReportedChip *string         `json:"reported_chip" doc:"The chip the device named at upload when the dump's header names another (chip is then the dump's); null when they agree"`
	ParseError   *string         `json:"parse_error" doc:"Why decoding failed (no_firmware, elf_mismatch, corrupt, unsupported, decoder_failed, timeout, missing_object) or, before decoding, what ingest found wrong (not_a_coredump, erased_partition, truncated, bad_length, checksum_mismatch, bad_elf)"`
	Report       json.RawMessage `json:"report" doc:"Structured crash report (crashed task, exception, registers, threads with backtraces); null until decoded"`
	CrashGroupID *int64          `json:"crash_group_id" doc:"The crash group the dump is in (GET /api/crash-groups/{id}); null until decoded, or when it could not be decoded"`
}

func coredumpSummary(c *coredumps.Coredump) CoredumpSummary {
	return CoredumpSummary{ID: c.ID, DeviceID: c.DeviceID, Chip: c.Chip, FirmwareVersion: c.FirmwareVersion, Size: c.Size,
		ParseStatus: c.ParseStatus, UploadedAt: c.UploadedAt, ParsedAt: c.ParsedAt, CreatedAt: c.CreatedAt}
}

func coredumpDetail(c *coredumps.Coredump) *CoredumpDetail {
	d := &CoredumpDetail{CoredumpSummary: coredumpSummary(c), ParsedOutput: c.ParsedOutput, UpdatedAt: c.UpdatedAt,
		Container: c.Container, DumpVersion: c.DumpVersion, ChecksumOK: c.ChecksumOK, AppELFSHA: c.AppELFSHAPrefix,
		Recognized: c.Recognized, SHA256: c.SHA256, ReportedChip: c.ReportedChip, ParseError: c.ParseError, Report: c.Report,
		CrashGroupID: c.CrashGroupID}
	if d.Report == nil {
		d.Report = json.RawMessage("null")
	}
	if c.DumpVersion != nil {
		if f := coredumps.FormatOf(uint32(*c.DumpVersion)); f != "" {
			d.Format = &f
		}
	}
	return d
}

type coredumpPath struct {
	DeviceIDPath
	CoredumpID int64 `path:"coredump_id" minimum:"1" doc:"Core dump id"`
}

type coredumpUploadBody struct {
	Status     string `json:"status" example:"ok"`
	CoredumpID int64  `json:"coredump_id"`
}

func (s *Server) registerCoredumps() {
	tags := []string{"Core dumps"}

	// Device upload: a plain handler so the body is read under the limit as it arrives.
	s.router.Post("/api/iot/coredump", s.uploadCoredump)
	s.api.OpenAPI().AddOperation(&huma.Operation{OperationID: "iot-upload-coredump", Method: http.MethodPost, Path: "/api/iot/coredump",
		Summary: "Upload the calling device's core dump",
		Description: "The body is the dump exactly as the device has it: raw partition bytes or the base64 text printed over UART, " +
			"any content type, at most COREDUMP_MAX_BYTES. Bodies that are not recognisable core dumps are stored too, and flagged.",
		Tags: []string{"Devices (device-facing)"},
		Parameters: []*huma.Param{
			{Name: "chip", In: "query", Required: true, Description: "ESP32-family chip name, e.g. esp32s3 (case-insensitive)", Schema: &huma.Schema{Type: "string"}},
			{Name: "firmware_version", In: "query", Required: true, Description: "Firmware version running at crash time", Schema: &huma.Schema{Type: "string", Pattern: naming.VersionPattern.String()}},
		},
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: "string", Format: "binary"}}}},
		Responses: map[string]*huma.Response{
			"201": {Description: "Stored", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Type: "object",
				Properties: map[string]*huma.Schema{"status": {Type: "string"}, "coredump_id": {Type: "integer"}}}}}},
			"400": {Description: "Missing or invalid parameters, or an empty body"},
			"413": {Description: "Body larger than COREDUMP_MAX_BYTES"},
			"429": {Description: "Too many uploads from this device in the last hour; see Retry-After"},
			"503": {Description: "Object storage unavailable; nothing was stored"},
		}})

	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-coredumps", Method: http.MethodGet, Path: "/api/devices/{device_id}/coredumps",
		Summary: "List a device's core dumps, newest first", Tags: tags}),
		func(ctx context.Context, in *struct {
			DeviceIDPath
			Limit    int   `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"Page size"`
			BeforeID int64 `query:"before_id" minimum:"0" doc:"Return dumps older than this one (the last id of the previous page)"`
		}) (*struct {
			Body struct {
				Coredumps []CoredumpSummary `json:"coredumps"`
				Count     int               `json:"count" doc:"Total number of the device's core dumps"`
			}
		}, error) {
			limit := in.Limit
			if limit == 0 {
				limit = 100
			}
			p, err := s.deps.Coredumps.List(ctx, in.DeviceID, limit, in.BeforeID)
			if err != nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					Coredumps []CoredumpSummary `json:"coredumps"`
					Count     int               `json:"count" doc:"Total number of the device's core dumps"`
				}
			}{}
			out.Body.Coredumps = make([]CoredumpSummary, 0, len(p.Coredumps))
			for _, c := range p.Coredumps {
				out.Body.Coredumps = append(out.Body.Coredumps, coredumpSummary(c))
			}
			out.Body.Count = p.Total
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "get-coredump", Method: http.MethodGet, Path: "/api/devices/{device_id}/coredumps/{coredump_id}",
		Summary: "Get a core dump with its ingest findings", Tags: tags},
		func(ctx context.Context, in *coredumpPath) (*struct{ Body *CoredumpDetail }, error) {
			c, err := s.deps.Coredumps.Get(ctx, in.DeviceID, in.CoredumpID)
			if err != nil {
				return nil, err
			}
			return &struct{ Body *CoredumpDetail }{Body: coredumpDetail(c)}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-coredump", Method: http.MethodDelete, Path: "/api/devices/{device_id}/coredumps/{coredump_id}",
		Summary: "Delete a core dump", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *coredumpPath) (*struct{}, error) {
			return nil, s.deps.Coredumps.Delete(ctx, in.DeviceID, in.CoredumpID)
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-all-coredumps", Method: http.MethodDelete, Path: "/api/devices/{device_id}/coredumps",
		Summary: "Delete all of a device's core dumps", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *DeviceIDPath) (*struct{}, error) {
			return nil, s.deps.Coredumps.DeleteAll(ctx, in.DeviceID)
		})

	s.router.Get("/api/devices/{device_id}/coredumps/{coredump_id}/download", s.downloadCoredump)
	s.api.OpenAPI().AddOperation(&huma.Operation{OperationID: "download-coredump", Method: http.MethodGet,
		Path: "/api/devices/{device_id}/coredumps/{coredump_id}/download", Summary: "Download a core dump as stored", Tags: tags,
		Parameters: []*huma.Param{
			{Name: "device_id", In: "path", Required: true, Schema: &huma.Schema{Type: "integer", Format: "int64"}},
			{Name: "coredump_id", In: "path", Required: true, Schema: &huma.Schema{Type: "integer", Format: "int64"}},
			{Name: "Range", In: "header", Description: "One byte range, e.g. bytes=0-1023", Schema: &huma.Schema{Type: "string"}},
			{Name: "If-None-Match", In: "header", Description: "ETag (the SHA-256) of a copy the client has", Schema: &huma.Schema{Type: "string"}},
		},
		Responses: map[string]*huma.Response{
			"200": {Description: "The dump", Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: "string", Format: "binary"}}}},
			"206": {Description: "The requested range"},
			"304": {Description: "Not modified"},
			"404": {Description: "No such dump for this device, or its object is missing"},
			"416": {Description: "Range not satisfiable"},
			"503": {Description: "Object storage unavailable"},
		}})

	huma.Register(s.api, huma.Operation{OperationID: "testing-create-coredump", Method: http.MethodPost, Path: "/api/testing/coredumps",
		Summary:     "Seed a core dump in any parse state, with an object so downloads work (APP_ENV=testing only, admin)",
		Description: "Stored like a device upload: it counts against COREDUMP_UPLOADS_PER_HOUR (429 with Retry-After) and MAX_COREDUMPS.",
		Tags:        []string{"Testing"}, DefaultStatus: 201},
		func(ctx context.Context, in *struct {
			Body struct {
				DeviceID        int64   `json:"device_id" minimum:"1"`
				Chip            string  `json:"chip,omitempty" required:"false" default:"esp32s3"`
				FirmwareVersion string  `json:"firmware_version,omitempty" required:"false" default:"0.0.0-test"`
				Size            int64   `json:"size,omitempty" required:"false" default:"262144"`
				ParseStatus     string  `json:"parse_status,omitempty" required:"false" default:"PARSED"`
				ParsedOutput    *string `json:"parsed_output,omitempty" required:"false"`
			}
		}) (*struct{ Body *CoredumpDetail }, error) {
			c, err := s.deps.Coredumps.Seed(ctx, coredumps.SeedInput{DeviceID: in.Body.DeviceID, Chip: in.Body.Chip,
				FirmwareVersion: in.Body.FirmwareVersion, Size: in.Body.Size, ParseStatus: in.Body.ParseStatus, ParsedOutput: in.Body.ParsedOutput})
			if err != nil {
				return nil, fromError(ctx, err) // the envelope carries Retry-After for huma
			}
			return &struct{ Body *CoredumpDetail }{Body: coredumpDetail(c)}, nil
		})
}

func (s *Server) uploadCoredump(w http.ResponseWriter, r *http.Request) {
	id := device(r.Context())
	q := r.URL.Query()
	c, err := s.deps.Coredumps.Upload(r.Context(), coredumps.UploadInput{DeviceID: id.DeviceID, DeviceKey: id.DeviceKey,
		Chip: q.Get("chip"), FirmwareVersion: q.Get("firmware_version"), Body: r.Body, Size: r.ContentLength})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, coredumpUploadBody{Status: "ok", CoredumpID: c.ID})
}

func (s *Server) downloadCoredump(w http.ResponseWriter, r *http.Request) {
	deviceID, err := pathID(r, "device_id")
	if err != nil {
		writeError(w, r, err)
		return
	}
	coredumpID, err := pathID(r, "coredump_id")
	if err != nil {
		writeError(w, r, err)
		return
	}
	c, err := s.deps.Coredumps.Get(r.Context(), deviceID, coredumpID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	etag := ""
	if c.SHA256 != nil {
		etag = *c.SHA256
	}
	serveDownload(w, r, Download{Filename: fmt.Sprintf("coredump_%d.dmp", coredumpID), Size: c.Size, ETag: etag,
		Open: func(ctx context.Context, rng *blob.Range) (io.ReadCloser, error) {
			rc, _, _, err := s.deps.Coredumps.Open(ctx, deviceID, coredumpID, rng)
			return rc, err
		}})
}
