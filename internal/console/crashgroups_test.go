package console_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// crashFleet is a model whose devices each uploaded the real esp32c3 dump, decoded into
// one crash group.
type crashFleet struct {
	model, group int
	devices      []int
	dumps        []int
}

// decodedCrashes makes model code with n devices, each with one real dump, decoded.
func decodedCrashes(t *testing.T, s *apitest.Server, code string, n int) crashFleet {
	t.Helper()
	f := crashFleet{model: int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": code, "name": code}).Map(t)["id"].(float64))}
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", f.model), bundletest.BuildCase(t, code, "esp32c3", bundletest.Options{Version: "1.0.0"}))
	moreCrashes(t, s, &f, n)
	groups := s.Expect(200, "GET", fmt.Sprintf("/api/crash-groups?model_id=%d", f.model), nil).Map(t)["crash_groups"].([]any)
	if len(groups) != 1 {
		t.Fatalf("%s: %d groups", code, len(groups))
	}
	f.group = int(groups[0].(map[string]any)["id"].(float64))
	return f
}

// moreCrashes adds n devices to f's model, each uploading the real dump, decoded.
func moreCrashes(t *testing.T, s *apitest.Server, f *crashFleet, n int) {
	t.Helper()
	dump, err := os.ReadFile(filepath.Join(filepath.Dir(espimagetest.ELFPath(t, "esp32c3")), "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": f.model, "config": `{}`}).Map(t)
		cid := int(s.Basic(d["key"].(string), d["secret"].(string)).Expect(201, "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", dump).Map(t)["coredump_id"].(float64))
		if err := s.App.Decoding.Decode(context.Background(), int64(cid)); err != nil {
			t.Fatal(err)
		}
		f.devices = append(f.devices, int(d["id"].(float64)))
		f.dumps = append(f.dumps, cid)
	}
}

// otherSignature files dump id again into a group of its own, through the crash groups
// owner, with its report naming another caller (a second signature of the same bug).
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

const lampTitle = "abort() in fail_once ← app_main"

// The list filters, sorts and pages groups, each with a labelled 30-day sparkline; bad
// filters are refused with a message.
func TestCrashGroupListFiltersPagesAndDrawsSparklines(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "CONSOLE_PAGE_SIZE", "5")
		lamp := decodedCrashes(t, s, "lamp", 3)
		var fan crashFleet
		for i := range 5 { // five more models, a group each, newer than lamp's
			fan = decodedCrashes(t, s, fmt.Sprintf("fan%d", i), 1)
		}
		v := signIn(t, s, "viewer")
		v.get("/").must(t, 200, `href="/crash-groups"`)

		p := v.get("/crash-groups").must(t, 200, `id="group-count">6 crash groups<`, `rel="next"`)
		// Page one holds the five newest groups; the next page lamp's, the oldest.
		p.must(t, 200, fmt.Sprintf(`href="/crash-groups/%d"`, fan.group)).mustNot(t, fmt.Sprintf(`href="/crash-groups/%d"`, lamp.group))
		next := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(p.Body)[1]
		v.get(strings.ReplaceAll(next, "&amp;", "&")).must(t, 200, fmt.Sprintf(`href="/crash-groups/%d"`, lamp.group), "First page").
			mustNot(t, `rel="next"`, fmt.Sprintf(`href="/crash-groups/%d"`, fan.group))

		// Sorted by devices, lamp's three devices come first; the sparkline says its numbers.
		p = v.get("/crash-groups?sort=devices").must(t, 200, fmt.Sprintf(`href="/crash-groups/%d"`, lamp.group), lampTitle,
			`<svg class="spark" role="img" aria-label="3 dumps in the last 30 days, at most 3 a day"`)
		if n := strings.Count(p.Body, "<rect "); n != 5 {
			t.Fatalf("a group with dumps on one day draws %d bars:\n%s", n, p.Body)
		}
		v.get(fmt.Sprintf("/crash-groups?model=%d", fan.model)).must(t, 200, `id="group-count">1 crash groups<`, fmt.Sprintf(`href="/crash-groups/%d"`, fan.group))
		v.get("/crash-groups?status=open&version=1.0.0&sort=dumps").must(t, 200, `id="group-count">6 crash groups<`)
		v.get("/crash-groups?status=resolved").must(t, 200, `id="group-count">0 crash groups<`, "No crash groups match")
		v.get("/crash-groups?version=9.9.9").must(t, 200, `id="group-count">0 crash groups<`)
		for q, msg := range map[string]string{"status=closed": "status must be", "sort=size": "sort must be", "model=x": "model must be",
			"version=..%2Fx": "version must be", "before=-1": "before must be"} {
			v.get("/crash-groups?"+q).must(t, 400, msg)
		}
	})
}

// The detail page shows the group, its versions, chart, devices (paged) and samples
// linking to dump pages; editors resolve, ignore, reopen and merge, with errors shown by
// the field; viewers see no write control and the server refuses their posts.
func TestCrashGroupPageShowsTheGroupAndEditorsTriageIt(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "CONSOLE_PAGE_SIZE", "5")
		lamp := decodedCrashes(t, s, "lamp", 6)
		fan := decodedCrashes(t, s, "fan", 1)
		gp := fmt.Sprintf("/crash-groups/%d", lamp.group)

		v := signIn(t, s, "viewer")
		p := v.get(gp).must(t, 200, `id="group-title">`+lampTitle+`<`, `id="group-fault">`, `id="group-status"><span class="status open">open<`,
			`id="group-dumps">6 from 6 devices<`, `<th scope="row"><code>1.0.0</code></th><td class="num">6</td><td class="num">6</td>`,
			`aria-label="6 dumps in the last 30 days, at most 6 a day"`, `id="more-devices"`,
			fmt.Sprintf(`href="/devices/%d/coredumps/%d"`, lamp.devices[5], lamp.dumps[5]),
			fmt.Sprintf(`href="/devices/%d/coredumps/%d"`, lamp.devices[0], lamp.dumps[0])).
			mustNot(t, `id="group-status-form"`, `id="group-merge-form"`, `method="post" action="/crash-groups`)
		// Five devices per page, most recent first; the link shows the sixth.
		if n := strings.Count(regexp.MustCompile(`(?s)<table id="group-devices">.*?</table>`).FindString(p.Body), `<th scope="row"><a href="/devices/`); n != 5 {
			t.Fatalf("%d devices on the first page", n)
		}
		more := regexp.MustCompile(`href="([^"]+)" id="more-devices"`).FindStringSubmatch(p.Body)[1]
		v.get(more).must(t, 200, fmt.Sprintf(`<a href="/devices/%d">`, lamp.devices[0])).mustNot(t, `id="more-devices"`)
		// The dump page links its group.
		v.get(fmt.Sprintf("/devices/%d/coredumps/%d", lamp.devices[0], lamp.dumps[0])).must(t, 200, `id="crash-group-link" href="`+gp+`"`)
		v.post(gp+"/status", url.Values{"status": {"resolved"}}).must(t, 403, "needs editor")
		v.post(gp+"/merge", url.Values{"into": {strconv.Itoa(fan.group)}}).must(t, 403)
		v.get("/crash-groups/999999").must(t, 404)
		v.get("/crash-groups/abc").must(t, 404)

		status := func() string {
			return s.Expect(200, "GET", "/api/crash-groups/"+strconv.Itoa(lamp.group), nil).Map(t)["status"].(string)
		}
		e := signIn(t, s, "editor")
		e.get(gp).must(t, 200, `id="group-status-form"`, `id="resolve"`, `id="ignore"`, `id="group-merge-form"`).mustNot(t, `id="reopen"`)
		e.post(gp+"/status", url.Values{"status": {"resolved"}, "resolved_in_version": {"../x"}}).must(t, 400, `id="status-error"`, "Invalid resolved_in_version")
		e.post(gp+"/status", url.Values{"status": {"closed"}}).must(t, 400, `id="status-error"`)
		e.post(gp+"/status", url.Values{"status": {"ignored"}, "resolved_in_version": {"1.0.0"}}).must(t, 400, "only allowed with status resolved")
		if st := status(); st != "open" {
			t.Fatalf("refused forms changed the status to %s", st)
		}
		e.post(gp+"/status", url.Values{"status": {"resolved"}, "resolved_in_version": {"1.0.0"}}).must(t, 303)
		e.get(gp).must(t, 200, `<span class="status resolved">resolved</span> in <code>1.0.0</code>`, `id="reopen"`).mustNot(t, `id="resolve"`)
		e.post(gp+"/status", url.Values{"status": {"ignored"}}).must(t, 303)
		if st := status(); st != "ignored" {
			t.Fatalf("status %s after ignore", st)
		}
		e.post(gp+"/status", url.Values{"status": {"open"}}).must(t, 303)
		e.post("/crash-groups/999999/status", url.Values{"status": {"open"}}).must(t, 404)

		// Merge: refused with the reason by the field, and nothing changes; then a second
		// signature of lamp's bug merges into its group.
		e.post(gp+"/merge", url.Values{"into": {""}}).must(t, 400, `id="into-error"`, "Enter the id")
		e.post(gp+"/merge", url.Values{"into": {strconv.Itoa(lamp.group)}}).must(t, 400, `id="into-error"`, "cannot be merged into itself")
		e.post(gp+"/merge", url.Values{"into": {strconv.Itoa(fan.group)}}).must(t, 400, `id="into-error"`)
		e.post(gp+"/merge", url.Values{"into": {"999999"}}).must(t, 400, `id="into-error"`, "999999 (into) was not found")
		e.post("/crash-groups/999999/merge", url.Values{"into": {strconv.Itoa(lamp.group)}}).must(t, 404)
		if n := s.Expect(200, "GET", "/api/crash-groups", nil).Map(t)["count"].(float64); n != 2 {
			t.Fatalf("refused merges changed the groups: %v", n)
		}
		other := otherSignature(t, s, env, int64(lamp.dumps[0]))
		p = e.post(fmt.Sprintf("/crash-groups/%d/merge", other), url.Values{"into": {strconv.Itoa(lamp.group)}}).must(t, 303)
		if p.Header.Get("Location") != gp {
			t.Fatalf("merge went to %q", p.Header.Get("Location"))
		}
		e.get(fmt.Sprintf("/crash-groups/%d", other)).must(t, 404)
		e.get(gp).must(t, 200, `id="group-dumps">6 from 6 devices<`)
		// The triage is audited under the signed-in editor.
		signIn(t, s, "admin").get("/audit").must(t, 200, fmt.Sprintf("POST /crash-groups/%d/merge", other), "test-editor")

		// The overview lists lamp's group among its model's top open groups.
		v.get("/").must(t, 200, `<h3>Top open crash groups</h3>`, `<a href="`+gp+`">`+lampTitle+`</a>`)
	})
}

// Devices list and filter by running version and last seen (the fleet view's status),
// and the device page shows what it last reported.
func TestDeviceListFiltersByRunningVersionAndLastSeen(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing")
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "fl", "name": "FL"}).Map(t)["id"].(float64))
		var ids []int
		for range 7 {
			ids = append(ids, int(s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)["id"].(float64)))
		}
		// A dump says its device runs its version, seen now.
		for i, v := range []string{"1.0.0", "2.0.0", "2.0.0", "2.0.0", "2.0.0", "2.0.0"} {
			s.Expect(201, "POST", "/api/testing/coredumps", map[string]any{"device_id": ids[i], "chip": "esp32", "firmware_version": v, "size": 10})
		}
		never := ids[6]
		v := signIn(t, s, "viewer")
		row := func(id int) string { return fmt.Sprintf(`<a href="/devices/%d">`, id) }
		v.get("/devices").must(t, 200, `id="device-count">7 devices<`, "<th scope=\"col\">Last seen</th>", "<th scope=\"col\">Running version</th>",
			"<code>1.0.0</code>", "<code>2.0.0</code>")
		v.get("/devices?running=1.0.0").must(t, 200, `id="device-count">1 devices<`, row(ids[0])).mustNot(t, row(ids[1]), row(never))
		v.get(fmt.Sprintf("/devices?model=%d&running=2.0.0&seen=24h", mid)).must(t, 200, `id="device-count">5 devices<`, row(ids[1])).mustNot(t, row(ids[0]))
		v.get("/devices?seen=1h").must(t, 200, `id="device-count">6 devices<`)
		// Not seen for 24 h: a device that never reported counts from its creation, as the
		// overview's count (which links here) does.
		v.get("/devices?seen=not-24h").must(t, 200, `id="device-count">0 devices<`)
		if _, err := env.DB.ExecContext(context.Background(), `UPDATE devices SET created_at = $1 WHERE id = $2`,
			time.Now().UTC().Add(-48*time.Hour), never); err != nil {
			t.Fatal(err)
		}
		v.get("/devices?seen=not-24h").must(t, 200, `id="device-count">1 devices<`, row(never))
		uncached := apitest.Start(t, env, "CONSOLE_OVERVIEW_CACHE_TTL", "0")
		if p := newClientPage(t, uncached, "/"); !strings.Contains(p, fmt.Sprintf(`<a href="/devices?model=%d&amp;seen=not-24h" class="stale">1</a>`, mid)) {
			t.Fatalf("overview's stale count:\n%s", p)
		}
		v.get("/devices?running=9.9.9").must(t, 200, `id="device-count">0 devices<`)
		// The pager keeps the filters (five a page here).
		s2 := apitest.Start(t, env, "APP_ENV", "testing", "CONSOLE_PAGE_SIZE", "5")
		p := newClientPage(t, s2, "/devices?seen=1h&active=yes")
		if !strings.Contains(p, `active=yes&amp;page=2&amp;seen=1h" rel="next"`) {
			t.Fatalf("pager drops the filter:\n%s", p)
		}
		v.get("/devices?running=..%2Fx").must(t, 400, "running version must be")
		v.get("/devices?seen=forever").must(t, 400, "last seen must be")

		v.get(fmt.Sprintf("/devices/%d", ids[0])).must(t, 200, `id="running-version"><code>1.0.0</code> since 20`, `id="last-seen">20`)
		v.get(fmt.Sprintf("/devices/%d", never)).must(t, 200, `id="last-seen">never<`, "not reported")
	})
}

// newClientPage signs in as a viewer on s and returns the body of path.
func newClientPage(t *testing.T, s *apitest.Server, path string) string {
	t.Helper()
	return signIn(t, s, "viewer").get(path).must(t, 200).Body
}
