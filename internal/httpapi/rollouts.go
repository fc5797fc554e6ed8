package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/rollouts"
)

// RolloutPath names one rollout of a model.
type RolloutPath struct {
	ModelIDPath
	RolloutID int64 `path:"rollout_id" minimum:"1" doc:"Rollout id"`
}

type rolloutOut struct {
	Body *rollouts.Rollout
}

type rolloutStatusOut struct {
	Body *rollouts.Status
}

type pinOut struct {
	Body *rollouts.Pin
}

func (s *Server) registerRollouts() {
	tags := []string{"Rollouts"}
	huma.Register(s.api, huma.Operation{OperationID: "start-rollout", Method: http.MethodPost, Path: "/api/device-models/{model_id}/rollouts",
		Summary: "Start a staged rollout of a stored version", Tags: tags, DefaultStatus: http.StatusCreated,
		Description: "Devices whose hash of (device key, rollout id) falls below the stage's percent get `version` from " +
			"`/api/iot/firmware-version` and `/api/iot/firmware`; the others keep the model's current version until the rollout " +
			"completes. Every `ROLLOUT_EVAL_INTERVAL` the current stage is judged from the fleet view: it halts when a crash " +
			"group first seen on the version has more than `max_new_group_devices` devices, or when, with at least `min_devices` " +
			"cohort devices running it, its crash-free share is more than `max_crash_free_drop` points below the previous " +
			"version's over the stage; it advances after `min_minutes` when healthy. One unfinished rollout per model."},
		func(ctx context.Context, in *struct {
			ModelIDPath
			Body rollouts.Input
		}) (*rolloutOut, error) {
			r, err := s.deps.Rollouts.Start(ctx, in.ModelID, in.Body, auth.FromContext(ctx).Name)
			if err != nil {
				return nil, err
			}
			return &rolloutOut{Body: r}, nil
		})

	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-rollouts", Method: http.MethodGet, Path: "/api/device-models/{model_id}/rollouts",
		Summary: "A model's rollouts, newest first", Tags: tags}),
		func(ctx context.Context, in *ModelIDPath) (*struct {
			Body struct {
				Rollouts []*rollouts.Rollout `json:"rollouts"`
			}
		}, error) {
			rs, err := s.deps.Rollouts.List(ctx, in.ModelID)
			if err != nil {
				return nil, err
			}
			out := &struct {
				Body struct {
					Rollouts []*rollouts.Rollout `json:"rollouts"`
				}
			}{}
			out.Body.Rollouts = rs
			return out, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "get-rollout", Method: http.MethodGet, Path: "/api/device-models/{model_id}/rollouts/{rollout_id}",
		Summary: "A rollout with live figures: devices targeted and confirmed per stage, crash-free of both versions, new crash groups", Tags: tags},
		func(ctx context.Context, in *RolloutPath) (*rolloutStatusOut, error) {
			st, err := s.deps.Rollouts.Status(ctx, in.ModelID, in.RolloutID)
			if err != nil {
				return nil, err
			}
			return &rolloutStatusOut{Body: st}, nil
		})

	actions := []struct {
		name, summary string
		fn            func(context.Context, int64, int64) (*rollouts.Rollout, error)
	}{
		{"advance", "Move to the next stage now (the last one completes)", s.deps.Rollouts.Advance},
		{"pause", "Pause: the cohort keeps the version, nothing advances or halts", s.deps.Rollouts.Pause},
		{"resume", "Resume a paused or halted rollout; its stage starts over", s.deps.Rollouts.Resume},
		{"abort", "Abort: every device returns to the model's current version", s.deps.Rollouts.Abort},
		{"complete", "Complete: the version becomes current for every device", s.deps.Rollouts.Complete},
	}
	for _, a := range actions {
		huma.Register(s.api, huma.Operation{OperationID: a.name + "-rollout", Method: http.MethodPost,
			Path: "/api/device-models/{model_id}/rollouts/{rollout_id}/" + a.name, Summary: a.summary, Tags: tags},
			func(ctx context.Context, in *RolloutPath) (*rolloutOut, error) {
				r, err := a.fn(ctx, in.ModelID, in.RolloutID)
				if err != nil {
					return nil, err
				}
				return &rolloutOut{Body: r}, nil
			})
	}

	huma.Register(s.api, huma.Operation{OperationID: "get-device-firmware-pin", Method: http.MethodGet, Path: "/api/devices/{device_id}/firmware-version",
		Summary: "The version a device is pinned to (null: none)", Tags: tags},
		func(ctx context.Context, in *DeviceIDPath) (*pinOut, error) {
			p, err := s.deps.Rollouts.GetPin(ctx, in.DeviceID)
			if err != nil {
				return nil, err
			}
			return &pinOut{Body: p}, nil
		})

	huma.Register(s.api, huma.Operation{OperationID: "pin-device-firmware", Method: http.MethodPut, Path: "/api/devices/{device_id}/firmware-version",
		Summary: "Pin a device to a stored version of its model, over the model's current version and any rollout; null unpins", Tags: tags},
		func(ctx context.Context, in *struct {
			DeviceIDPath
			Body struct {
				Version *string `json:"version" required:"true" nullable:"true" maxLength:"32" doc:"A stored version, or null to unpin"`
			}
		}) (*pinOut, error) {
			p, err := s.deps.Rollouts.SetPin(ctx, in.DeviceID, in.Body.Version)
			if err != nil {
				return nil, err
			}
			return &pinOut{Body: p}, nil
		})
}
