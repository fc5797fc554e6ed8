package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/auth"
)

type rawJSON struct {
	ContentType  string `header:"Content-Type"`
	CacheControl string `header:"Cache-Control"`
	Body         []byte
}

// device returns the authenticated device's id; the auth middleware guarantees one on /api/iot.
func device(ctx context.Context) *auth.Identity {
	id := auth.FromContext(ctx)
	if !id.IsDevice() {
		panic("httpapi: device route reached without a device identity")
	}
	return id
}

func (s *Server) registerIoT() {
	tags := []string{"Devices (device-facing)"}
	huma.Register(s.api, huma.Operation{OperationID: "iot-get-config", Method: http.MethodGet, Path: "/api/iot/config",
		Summary: "The calling device's configuration JSON", Tags: tags,
		Responses: map[string]*huma.Response{"200": {Description: "The stored config", Content: map[string]*huma.MediaType{"application/json": {}}}}},
		func(ctx context.Context, _ *struct{}) (*rawJSON, error) {
			d, err := s.deps.Devices.GetDevice(ctx, device(ctx).DeviceID)
			if err != nil {
				return nil, err
			}
			return &rawJSON{ContentType: "application/json", CacheControl: "no-cache", Body: []byte(d.Config)}, nil
		})
}
