package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/crashgroups"
)

// CrashGroupPath is the {id} of a crash group route.
type CrashGroupPath struct {
	ID int64 `path:"crash_group_id" minimum:"1" doc:"Crash group id"`
}

type crashGroupOut struct {
	Body *crashgroups.Group
}

func (s *Server) registerCrashGroups() {
	tags := []string{"Crash groups"}
	type listOut struct {
		Body struct {
			CrashGroups []*crashgroups.Group `json:"crash_groups"`
			Count       int                  `json:"count" doc:"How many groups match the filter"`
		}
	}
	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-crash-groups", Method: http.MethodGet, Path: "/api/crash-groups",
		Summary: "List crash groups, newest (or largest) first", Tags: tags}),
		func(ctx context.Context, in *struct {
			ModelID  int64  `query:"model_id" minimum:"0" doc:"Only this device model's groups"`
			Status   string `query:"status" enum:"open,resolved,ignored," doc:"Only groups with this status"`
			Version  string `query:"version" doc:"Only groups with dumps of this firmware version"`
			Sort     string `query:"sort" enum:"last_seen,devices,dumps," default:"last_seen" doc:"Order, largest first"`
			Limit    int    `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"Page size"`
			BeforeID int64  `query:"before_id" minimum:"0" doc:"Return the groups after this one in the order (the last id of the previous page)"`
		}) (*listOut, error) {
			p, err := s.deps.CrashGroups.List(ctx, crashgroups.Filter{ModelID: in.ModelID, Status: in.Status, Version: in.Version,
				Sort: in.Sort, Limit: in.Limit, BeforeID: in.BeforeID})
			if err != nil {
				return nil, err
			}
			out := &listOut{}
			out.Body.CrashGroups, out.Body.Count = p.Groups, p.Count
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "get-crash-group", Method: http.MethodGet, Path: "/api/crash-groups/{crash_group_id}",
		Summary: "Get a crash group with its counts per version and day and sample core dumps", Tags: tags},
		func(ctx context.Context, in *CrashGroupPath) (*struct{ Body *crashgroups.Detail }, error) {
			d, err := s.deps.CrashGroups.Get(ctx, in.ID)
			if err != nil {
				return nil, err
			}
			return &struct{ Body *crashgroups.Detail }{Body: d}, nil
		})
	type devicesOut struct {
		Body struct {
			Devices []crashgroups.GroupDevice `json:"devices"`
			Count   int                       `json:"count" doc:"How many devices the group has"`
		}
	}
	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-crash-group-devices", Method: http.MethodGet, Path: "/api/crash-groups/{crash_group_id}/devices",
		Summary: "List a crash group's devices, most recent crash first", Tags: tags}),
		func(ctx context.Context, in *struct {
			CrashGroupPath
			Limit    int   `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"Page size"`
			BeforeID int64 `query:"before_id" minimum:"0" doc:"Return the devices after this device (the last device_id of the previous page)"`
		}) (*devicesOut, error) {
			p, err := s.deps.CrashGroups.Devices(ctx, in.ID, in.Limit, in.BeforeID)
			if err != nil {
				return nil, err
			}
			out := &devicesOut{}
			out.Body.Devices, out.Body.Count = p.Devices, p.Count
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "update-crash-group", Method: http.MethodPut, Path: "/api/crash-groups/{crash_group_id}",
		Summary: "Set a crash group's status", Tags: tags,
		Description: "A group resolved in a version reopens (regressed_at set) when a dump of a version uploaded after it arrives; " +
			"resolved without a version, any new dump reopens it. Ignored groups keep counting."},
		func(ctx context.Context, in *struct {
			CrashGroupPath
			Body struct {
				Status            string  `json:"status" enum:"open,resolved,ignored"`
				ResolvedInVersion *string `json:"resolved_in_version,omitempty" required:"false" doc:"With resolved: the firmware version that fixes it"`
			}
		}) (*crashGroupOut, error) {
			g, err := s.deps.CrashGroups.Update(ctx, in.ID, in.Body.Status, in.Body.ResolvedInVersion)
			if err != nil {
				return nil, err
			}
			return &crashGroupOut{Body: g}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "merge-crash-group", Method: http.MethodPost, Path: "/api/crash-groups/{crash_group_id}/merge",
		Summary: "Merge a crash group into another of the same model", Tags: tags,
		Description: "The group's dumps, devices and counts move into the target, and later dumps of either signature land there; the group is deleted."},
		func(ctx context.Context, in *struct {
			CrashGroupPath
			Body struct {
				Into int64 `json:"into" minimum:"1" doc:"The group that remains"`
			}
		}) (*crashGroupOut, error) {
			g, err := s.deps.CrashGroups.Merge(ctx, in.ID, in.Body.Into)
			if err != nil {
				return nil, err
			}
			return &crashGroupOut{Body: g}, nil
		})
}
