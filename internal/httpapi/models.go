package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/devices"
)

// ModelSummary is a device model in lists.
type ModelSummary struct {
	ID              int64   `json:"id"`
	Code            string  `json:"code"`
	Name            string  `json:"name"`
	FirmwareVersion *string `json:"firmware_version"`
	HasConfigSchema bool    `json:"has_config_schema"`
	DeviceCount     int     `json:"device_count"`
}

// ModelBody is the full device model.
type ModelBody struct {
	ModelSummary
	ConfigSchema *string   `json:"config_schema"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func modelSummary(m *devices.Model) ModelSummary {
	return ModelSummary{ID: m.ID, Code: m.Code, Name: m.Name, FirmwareVersion: m.FirmwareVersion,
		HasConfigSchema: m.ConfigSchema != nil, DeviceCount: m.DeviceCount}
}

func modelBody(m *devices.Model) *ModelBody {
	return &ModelBody{ModelSummary: modelSummary(m), ConfigSchema: m.ConfigSchema, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt}
}

type ModelIDPath struct {
	ModelID int64 `path:"model_id" minimum:"1" doc:"Device model id"`
}

type modelOut struct{ Body *ModelBody }

type createModelIn struct {
	Body struct {
		Code         string  `json:"code" minLength:"1" maxLength:"50" pattern:"^[a-z0-9_]+$" doc:"Immutable model code"`
		Name         string  `json:"name" minLength:"1" maxLength:"255"`
		ConfigSchema *string `json:"config_schema,omitempty" required:"false" doc:"JSON Schema (as text) for device configs"`
	}
}

type updateModelIn struct {
	ModelIDPath
	Body struct {
		Name         *string `json:"name,omitempty" required:"false" minLength:"1" maxLength:"255"`
		ConfigSchema *string `json:"config_schema,omitempty" required:"false" doc:"null or absent leaves it unchanged"`
	}
}

func (s *Server) registerModels() {
	tags := []string{"Device models"}
	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-device-models", Method: http.MethodGet, Path: "/api/device-models",
		Summary: "List device models", Tags: tags}),
		func(ctx context.Context, _ *struct{}) (*struct {
			Body struct {
				DeviceModels []ModelSummary `json:"device_models"`
				Count        int            `json:"count"`
			}
		}, error) {
			ms, err := s.deps.Devices.ListModels(ctx)
			if err != nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					DeviceModels []ModelSummary `json:"device_models"`
					Count        int            `json:"count"`
				}
			}{}
			out.Body.DeviceModels = make([]ModelSummary, 0, len(ms))
			for _, m := range ms {
				out.Body.DeviceModels = append(out.Body.DeviceModels, modelSummary(m))
			}
			out.Body.Count = len(ms)
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "create-device-model", Method: http.MethodPost, Path: "/api/device-models",
		Summary: "Create a device model", Tags: tags, DefaultStatus: 201},
		func(ctx context.Context, in *createModelIn) (*modelOut, error) {
			m, err := s.deps.Devices.CreateModel(ctx, devices.ModelInput{Code: in.Body.Code, Name: &in.Body.Name, ConfigSchema: in.Body.ConfigSchema})
			if err != nil {
				return nil, err
			}
			return &modelOut{Body: modelBody(m)}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "get-device-model", Method: http.MethodGet, Path: "/api/device-models/{model_id}",
		Summary: "Get a device model", Tags: tags},
		func(ctx context.Context, in *ModelIDPath) (*modelOut, error) {
			m, err := s.deps.Devices.GetModel(ctx, in.ModelID)
			if err != nil {
				return nil, err
			}
			return &modelOut{Body: modelBody(m)}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "update-device-model", Method: http.MethodPut, Path: "/api/device-models/{model_id}",
		Summary: "Update a device model", Tags: tags},
		func(ctx context.Context, in *updateModelIn) (*modelOut, error) {
			m, err := s.deps.Devices.UpdateModel(ctx, in.ModelID, devices.ModelInput{Name: in.Body.Name, ConfigSchema: in.Body.ConfigSchema})
			if err != nil {
				return nil, err
			}
			return &modelOut{Body: modelBody(m)}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-device-model", Method: http.MethodDelete, Path: "/api/device-models/{model_id}",
		Summary: "Delete a device model without devices", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *ModelIDPath) (*struct{}, error) {
			return nil, s.deps.Devices.DeleteModel(ctx, in.ModelID)
		})
}
