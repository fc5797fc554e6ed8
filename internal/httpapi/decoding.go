package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

func (s *Server) registerDecoding() {
	huma.Register(s.api, huma.Operation{OperationID: "reparse-coredump", Method: http.MethodPost,
		Path: "/api/devices/{device_id}/coredumps/{coredump_id}/reparse", Summary: "Decode a core dump again (queued)",
		Tags: []string{"Core dumps"}, DefaultStatus: http.StatusAccepted},
		func(ctx context.Context, in *struct {
			DeviceIDPath
			CoredumpID int64 `path:"coredump_id" minimum:"1"`
		}) (*struct {
			Body struct {
				Status     string `json:"status"`
				CoredumpID int64  `json:"coredump_id"`
			}
		}, error) {
			if err := s.deps.Coredumps.Reparse(ctx, in.DeviceID, in.CoredumpID); err != nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					Status     string `json:"status"`
					CoredumpID int64  `json:"coredump_id"`
				}
			}{}
			out.Body.Status, out.Body.CoredumpID = "queued", in.CoredumpID
			return out, nil
		})
}
