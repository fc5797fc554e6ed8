package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/fleet"
)

func (s *Server) registerFleet() {
	huma.Register(s.api, huma.Operation{OperationID: "get-model-fleet", Method: http.MethodGet, Path: "/api/device-models/{model_id}/fleet",
		Summary: "The model's fleet over a window: devices seen, running and crash-free per version",
		Description: "Devices report their running version, boot id and reset reason in the `X-Firmware-Version`, `X-Boot-Id` " +
			"and `X-Reset-Reason` headers of any device request. A device is *seen* on a version when a request or core dump " +
			"in the window named it; it *crashed* when it uploaded a core dump or booted with reset reason PANIC, INT_WDT, " +
			"TASK_WDT or WDT on that version in the window. Figures include check-ins up to `FLEET_FLUSH_INTERVAL` old.",
		Tags: []string{"Fleet"}},
		func(ctx context.Context, in *struct {
			ModelIDPath
			Window string `query:"window" default:"24h" doc:"How far back from now: a number with m, h or d, from 1h to 90d"`
		}) (*struct{ Body *fleet.View }, error) {
			v, err := s.deps.Fleet.View(ctx, in.ModelID, in.Window)
			if err != nil {
				return nil, err
			}
			return &struct{ Body *fleet.View }{Body: v}, nil
		})
}
