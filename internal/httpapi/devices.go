package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/devices"
)

// DeviceSummary is a device in lists.
type DeviceSummary struct {
	ID              int64      `json:"id"`
	Key             string     `json:"key"`
	DeviceModelID   int64      `json:"device_model_id"`
	Active          bool       `json:"active"`
	DeviceName      *string    `json:"device_name" doc:"Copied from the config's deviceName; written through config"`
	DeviceEntityID  *string    `json:"device_entity_id" doc:"Copied from the config's deviceEntityId; written through config"`
	EnableOTA       *bool      `json:"enable_ota" doc:"Copied from the config's boolean enableOTA (null without it); written through config"`
	RotationState   string     `json:"rotation_state" enum:"OK,QUEUED,PENDING,TIMEOUT" doc:"OK unless a credential rotation is pending"`
	SecretCreatedAt *time.Time `json:"secret_created_at" doc:"When the current device secret was issued"`
	LastCoredumpAt  *time.Time `json:"last_coredump_at"`
	LastSeenAt      *time.Time `json:"last_seen_at" doc:"Last authenticated request or core dump (up to FLEET_FLUSH_INTERVAL behind); null until the device reports"`
	RunningVersion  *string    `json:"running_version" doc:"The version the device last said it runs (X-Firmware-Version, or a core dump's firmware_version)"`
	RunningSince    *time.Time `json:"running_since" doc:"When the device was first seen running running_version"`
	LastResetReason *string    `json:"last_reset_reason" doc:"X-Reset-Reason of the device's last boot (esp_reset_reason_t without ESP_RST_)"`
	LastBootAt      *time.Time `json:"last_boot_at" doc:"When the device's last boot (a new X-Boot-Id) was first seen"`
}

// DeviceModelRef is the model embedded in a device.
type DeviceModelRef struct {
	ID              int64   `json:"id"`
	Code            string  `json:"code"`
	Name            string  `json:"name"`
	FirmwareVersion *string `json:"firmware_version"`
}

// DeviceBody is the full device.
type DeviceBody struct {
	DeviceSummary
	DeviceModel             DeviceModelRef `json:"device_model"`
	Config                  string         `json:"config"`
	ClientID                string         `json:"client_id"`
	LastRotationAttemptAt   *time.Time     `json:"last_rotation_attempt_at" doc:"Last time new credentials were issued"`
	LastRotationCompletedAt *time.Time     `json:"last_rotation_completed_at" doc:"Last time issuing new credentials completed (at once: the old secret stops working)"`
	RotationExcluded        bool           `json:"rotation_excluded" doc:"The older service's active=false (left out of its credential rotation), kept when its database was adopted"`
	CreatedAt               time.Time      `json:"created_at"`
	UpdatedAt               time.Time      `json:"updated_at"`
}

func deviceSummary(d *devices.Device) DeviceSummary {
	return DeviceSummary{ID: d.ID, Key: d.Key, DeviceModelID: d.DeviceModelID, Active: d.Active, DeviceName: d.DeviceName,
		DeviceEntityID: d.DeviceEntityID, EnableOTA: d.EnableOTA, RotationState: d.RotationState, SecretCreatedAt: d.SecretCreatedAt,
		LastCoredumpAt: d.LastCoredumpAt, LastSeenAt: d.LastSeenAt, RunningVersion: d.RunningVersion, RunningSince: d.RunningSince,
		LastResetReason: d.LastResetReason, LastBootAt: d.LastBootAt}
}

func deviceBody(d *devices.Device) *DeviceBody {
	return &DeviceBody{DeviceSummary: deviceSummary(d),
		DeviceModel: DeviceModelRef{ID: d.DeviceModelID, Code: d.ModelCode, Name: d.ModelName, FirmwareVersion: d.ModelFirmware},
		Config:      d.Config, ClientID: d.ClientID(), LastRotationAttemptAt: d.LastRotationAttemptAt,
		LastRotationCompletedAt: d.LastRotationCompletedAt, RotationExcluded: d.RotationExcluded, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
}

type DeviceIDPath struct {
	DeviceID int64 `path:"device_id" minimum:"1" doc:"Device id"`
}

type deviceOut struct{ Body *DeviceBody }

// NewDeviceBody is a created device with its secret, returned once.
type NewDeviceBody struct {
	DeviceBody
	Secret string `json:"secret" doc:"Device secret for HTTP Basic auth (device key as user name); shown only in this response"`
}

// CredentialsBody is a freshly issued device secret.
type CredentialsBody struct {
	DeviceKey       string    `json:"device_key"`
	Secret          string    `json:"secret"`
	SecretCreatedAt time.Time `json:"secret_created_at"`
}

type listDevicesOut struct {
	Body struct {
		Devices []DeviceSummary `json:"devices"`
		Count   int             `json:"count"`
	}
}

func (s *Server) registerDevices() {
	tags := []string{"Devices"}
	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-devices", Method: http.MethodGet, Path: "/api/devices",
		Summary: "List devices", Tags: tags}),
		func(ctx context.Context, in *struct {
			ModelID        int64     `query:"model_id" minimum:"0" doc:"Only devices of this model"`
			RotationState  string    `query:"rotation_state" enum:"OK,QUEUED,PENDING,TIMEOUT" doc:"Only devices in this rotation state"`
			RunningVersion string    `query:"running_version" doc:"Only devices that last reported running this version"`
			SeenBefore     time.Time `query:"seen_before" doc:"Only devices last seen before this time (RFC 3339); devices that never reported are left out"`
			SeenAfter      time.Time `query:"seen_after" doc:"Only devices last seen at or after this time (RFC 3339)"`
		}) (*listDevicesOut, error) {
			f := devices.DeviceFilter{ModelID: in.ModelID, RotationState: in.RotationState, RunningVersion: in.RunningVersion}
			if !in.SeenBefore.IsZero() {
				f.SeenBefore = &in.SeenBefore
			}
			if !in.SeenAfter.IsZero() {
				f.SeenAfter = &in.SeenAfter
			}
			ds, err := s.deps.Devices.FindDevices(ctx, f)
			if err != nil {
				return nil, err
			}
			out := &listDevicesOut{}
			out.Body.Devices = make([]DeviceSummary, 0, len(ds))
			for _, d := range ds {
				out.Body.Devices = append(out.Body.Devices, deviceSummary(d))
			}
			out.Body.Count = len(ds)
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "create-device", Method: http.MethodPost, Path: "/api/devices",
		Summary: "Create a device", Tags: tags, DefaultStatus: 201},
		func(ctx context.Context, in *struct {
			Body struct {
				DeviceModelID int64  `json:"device_model_id" minimum:"1"`
				Config        string `json:"config" doc:"Device configuration as JSON text"`
			}
		}) (*struct{ Body *NewDeviceBody }, error) {
			d, secret, err := s.deps.Devices.CreateDevice(ctx, in.Body.DeviceModelID, in.Body.Config)
			if err != nil {
				return nil, err
			}
			return &struct{ Body *NewDeviceBody }{Body: &NewDeviceBody{DeviceBody: *deviceBody(d), Secret: secret}}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "rotate-device-credentials", Method: http.MethodPost, Path: "/api/devices/{device_id}/credentials",
		Summary: "Issue a new device secret; the old one stops working", Tags: tags},
		func(ctx context.Context, in *DeviceIDPath) (*struct{ Body CredentialsBody }, error) {
			d, secret, err := s.deps.Devices.RotateSecret(ctx, in.DeviceID)
			if err != nil {
				return nil, err
			}
			return &struct{ Body CredentialsBody }{Body: CredentialsBody{DeviceKey: d.Key, Secret: secret, SecretCreatedAt: *d.SecretCreatedAt}}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "get-device", Method: http.MethodGet, Path: "/api/devices/{device_id}",
		Summary: "Get a device", Tags: tags},
		func(ctx context.Context, in *DeviceIDPath) (*deviceOut, error) {
			d, err := s.deps.Devices.GetDevice(ctx, in.DeviceID)
			if err != nil {
				return nil, err
			}
			return &deviceOut{Body: deviceBody(d)}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "update-device", Method: http.MethodPut, Path: "/api/devices/{device_id}",
		Summary: "Replace a device's config and active flag", Tags: tags},
		func(ctx context.Context, in *struct {
			DeviceIDPath
			Body struct {
				Config string `json:"config" doc:"Device configuration as JSON text; its deviceName, deviceEntityId and enableOTA set device_name, device_entity_id and enable_ota"`
				Active bool   `json:"active"`
			}
		}) (*deviceOut, error) {
			d, err := s.deps.Devices.UpdateDevice(ctx, in.DeviceID, in.Body.Config, in.Body.Active)
			if err != nil {
				return nil, err
			}
			return &deviceOut{Body: deviceBody(d)}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-device", Method: http.MethodDelete, Path: "/api/devices/{device_id}",
		Summary: "Delete a device", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *DeviceIDPath) (*struct{}, error) {
			return nil, s.deps.Devices.DeleteDevice(ctx, in.DeviceID)
		})
}
