package httpapi_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestCrashGroupsAPI: dumps uploaded over HTTP and decoded form groups that viewers list
// and read, and editors resolve and merge (audited); bad input is a 400 envelope that
// changes nothing.
func TestCrashGroupsAPI(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		s := apitest.Start(t, env)
		viewer, editor := s.Role("viewer"), s.Role("editor")
		mid := newModel(t, s, "lamp")
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		dump, _, _ := caseDump(t, "esp32c3")
		var ids []int
		var devIDs []int
		for range 3 {
			key, secret := newDevice(t, s, mid)
			id := uploadDump(t, s, key, secret, dump, "esp32c3", "1.0.0")
			if err := s.App.Decoding.Decode(ctx, int64(id)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
			devIDs = append(devIDs, deviceIDByKey(t, s, key))
		}

		list := viewer.Expect(200, "GET", fmt.Sprintf("/api/crash-groups?model_id=%d", mid), nil).Map(t)
		groups := list["crash_groups"].([]any)
		if list["count"].(float64) != 1 || len(groups) != 1 {
			t.Fatalf("list %v", list)
		}
		g := groups[0].(map[string]any)
		gid := int(g["id"].(float64))
		if g["dump_count"].(float64) != 3 || g["device_count"].(float64) != 3 || g["status"] != "open" || g["title"] != "abort() in fail_once ← app_main" ||
			g["first_version"] != "1.0.0" || g["resolved_in_version"] != nil || g["regressed_at"] != nil {
			t.Fatalf("group %v", g)
		}
		cd := viewer.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", devIDs[0], ids[0]), nil).Map(t)
		if int(cd["crash_group_id"].(float64)) != gid {
			t.Fatalf("core dump detail crash_group_id %v", cd["crash_group_id"])
		}
		det := viewer.Expect(200, "GET", fmt.Sprintf("/api/crash-groups/%d", gid), nil).Map(t)
		vs, daily, samples := det["versions"].([]any), det["daily"].([]any), det["sample_coredump_ids"].([]any)
		if len(vs) != 1 || vs[0].(map[string]any)["dumps"].(float64) != 3 || vs[0].(map[string]any)["devices"].(float64) != 3 ||
			len(daily) != 1 || len(samples) != 3 || int(samples[0].(float64)) != ids[2] {
			t.Fatalf("detail %v", det)
		}
		devs := viewer.Expect(200, "GET", fmt.Sprintf("/api/crash-groups/%d/devices?limit=2", gid), nil).Map(t)
		page := devs["devices"].([]any)
		if devs["count"].(float64) != 3 || len(page) != 2 {
			t.Fatalf("devices %v", devs)
		}
		last := int(page[1].(map[string]any)["device_id"].(float64))
		rest := viewer.Expect(200, "GET", fmt.Sprintf("/api/crash-groups/%d/devices?limit=2&before_id=%d", gid, last), nil).Map(t)["devices"].([]any)
		if len(rest) != 1 || int(rest[0].(map[string]any)["device_id"].(float64)) == last {
			t.Fatalf("second page %v", rest)
		}
		for _, q := range []string{"status=open", "version=1.0.0", "sort=devices", "sort=dumps"} {
			if n := viewer.Expect(200, "GET", "/api/crash-groups?"+q, nil).Map(t)["count"].(float64); n != 1 {
				t.Errorf("%s: %v groups", q, n)
			}
		}
		for _, q := range []string{"status=resolved", "version=9.9.9", fmt.Sprintf("model_id=%d", mid+1)} {
			if n := viewer.Expect(200, "GET", "/api/crash-groups?"+q, nil).Map(t)["count"].(float64); n != 0 {
				t.Errorf("%s: %v groups", q, n)
			}
		}
		for _, q := range []string{"sort=size", "status=closed", "limit=0", "limit=1001", "bogus=1"} {
			viewer.Expect(400, "GET", "/api/crash-groups?"+q, nil)
		}
		viewer.Expect(404, "GET", fmt.Sprintf("/api/crash-groups/%d", gid+100), nil)

		// Writes: editors only, validated, audited.
		viewer.Expect(403, "PUT", fmt.Sprintf("/api/crash-groups/%d", gid), map[string]any{"status": "resolved"})
		editor.Expect(400, "PUT", fmt.Sprintf("/api/crash-groups/%d", gid), map[string]any{"status": "done"})
		editor.Expect(400, "PUT", fmt.Sprintf("/api/crash-groups/%d", gid), map[string]any{"status": "open", "resolved_in_version": "1.0.0"})
		editor.Expect(400, "PUT", fmt.Sprintf("/api/crash-groups/%d", gid), map[string]any{"status": "resolved", "resolved_in_version": "../x"})
		if st := viewer.Expect(200, "GET", fmt.Sprintf("/api/crash-groups/%d", gid), nil).Map(t)["status"]; st != "open" {
			t.Fatalf("refused writes changed the status to %v", st)
		}
		up := editor.Expect(200, "PUT", fmt.Sprintf("/api/crash-groups/%d", gid), map[string]any{"status": "resolved", "resolved_in_version": "1.0.0"}).Map(t)
		if up["status"] != "resolved" || up["resolved_in_version"] != "1.0.0" {
			t.Fatalf("update %v", up)
		}
		entry := s.Expect(200, "GET", "/api/audit?limit=1", nil).Map(t)["entries"].([]any)[0].(map[string]any)
		if entry["actor"] != "test-editor" || entry["method"] != "PUT" || entry["route"] != "/api/crash-groups/{crash_group_id}" || entry["status"].(float64) != 200 {
			t.Fatalf("audit %v", entry)
		}

		// Merge: another model's group is refused; a second signature of this model merges.
		fan := newModel(t, s, "fan")
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", fan), bundletest.BuildCase(t, "fan", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		fk, fs := newDevice(t, s, fan)
		fid := uploadDump(t, s, fk, fs, dump, "esp32c3", "1.0.0")
		if err := s.App.Decoding.Decode(ctx, int64(fid)); err != nil {
			t.Fatal(err)
		}
		fg := int(viewer.Expect(200, "GET", fmt.Sprintf("/api/crash-groups?model_id=%d", fan), nil).Map(t)["crash_groups"].([]any)[0].(map[string]any)["id"].(float64))
		viewer.Expect(403, "POST", fmt.Sprintf("/api/crash-groups/%d/merge", fg), map[string]any{"into": gid})
		editor.Expect(400, "POST", fmt.Sprintf("/api/crash-groups/%d/merge", fg), map[string]any{"into": gid})
		editor.Expect(400, "POST", fmt.Sprintf("/api/crash-groups/%d/merge", gid), map[string]any{"into": gid})
		editor.Expect(404, "POST", fmt.Sprintf("/api/crash-groups/%d/merge", gid+100), map[string]any{"into": gid})
		if n := viewer.Expect(200, "GET", "/api/crash-groups", nil).Map(t)["count"].(float64); n != 2 {
			t.Fatalf("refused merges changed the groups: %v", n)
		}
		// A second signature of lamp's bug (its report with another caller) merges into the first.
		other := otherSignature(t, s, env, int64(ids[0]))
		merged := editor.Expect(200, "POST", fmt.Sprintf("/api/crash-groups/%d/merge", other), map[string]any{"into": gid}).Map(t)
		if int(merged["id"].(float64)) != gid || merged["dump_count"].(float64) != 3 || merged["device_count"].(float64) != 3 {
			t.Fatalf("merged %v", merged)
		}
		viewer.Expect(404, "GET", fmt.Sprintf("/api/crash-groups/%d", other), nil)
	})
}

// otherSignature files a new stored dump of the device of dump id into a group of its own,
// through the crash groups owner, with id's report naming another caller; it returns that group.
func otherSignature(t *testing.T, s *apitest.Server, env *testenv.Env, id int64) int64 {
	t.Helper()
	ctx := context.Background()
	var report string
	if err := env.DB.QueryRowContext(ctx, `SELECT report FROM coredumps WHERE id = $1`, id).Scan(&report); err != nil {
		t.Fatal(err)
	}
	target, err := s.App.Coredumps.DecodeTarget(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var rep *espcore.Report
	if err := json.Unmarshal([]byte(strings.ReplaceAll(report, `"app_main"`, `"other_main"`)), &rep); err != nil {
		t.Fatal(err)
	}
	var a crashgroups.Assignment
	err = env.DB.Tx(ctx, func(tx *sql.Tx) error {
		a, err = s.App.CrashGroups.AssignTx(ctx, tx, crashgroups.Dump{ID: id, DeviceID: target.DeviceID, ModelID: target.ModelID,
			ModelCode: target.ModelCode, Version: target.Version, UploadedAt: target.UploadedAt}, rep)
		return err
	})
	if err != nil || !a.New {
		t.Fatalf("%+v %v", a, err)
	}
	return a.GroupID
}
