package console_test

import (
	"context"
	"fmt"
	"net/http"
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
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

var locationID = regexp.MustCompile(`/(\d+)$`)

func createdID(t *testing.T, p *page) int {
	t.Helper()
	m := locationID.FindStringSubmatch(p.Header.Get("Location"))
	if p.Status != http.StatusSeeOther || m == nil {
		t.Fatalf("create: %d → %q\n%s", p.Status, p.Header.Get("Location"), p.Body)
	}
	id, _ := strconv.Atoi(m[1])
	return id
}

func TestModelPagesCreateEditUploadAndRefuseWithReasons(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		c := signIn(t, s, "editor")
		c.get("/models").must(t, 200, `id="model-create"`, "No models yet")

		// Bad input comes back with the reason next to its field, and creates nothing.
		c.post("/models", url.Values{"code": {"Bad Code"}, "name": {"x"}}).must(t, 400, `id="code-error"`, `aria-invalid="true"`)
		c.post("/models", url.Values{"code": {"thermo"}, "name": {"T"}, "config_schema": {`{"type": 12}`}}).
			must(t, 400, `id="schema-error"`, "not a valid JSON Schema")
		c.post("/models", url.Values{"code": {"thermo"}, "name": {"T"}, "config_schema": {`{nope`}}).must(t, 400, "must be valid JSON")
		if n := s.Expect(200, "GET", "/api/device-models", nil).Map(t)["count"].(float64); n != 0 {
			t.Fatalf("%v models after refused forms", n)
		}
		schema := `{"type":"object","properties":{"deviceName":{"type":"string"}},"additionalProperties":false}`
		id := createdID(t, c.post("/models", url.Values{"code": {"thermo"}, "name": {"Thermostat"}, "config_schema": {schema}}))
		c.post("/models", url.Values{"code": {"thermo"}, "name": {"Again"}}).must(t, 409, `id="code-error"`, "already exists")

		mp := fmt.Sprintf("/models/%d", id)
		c.get(mp).must(t, 200, "Model thermo", `id="upload"`, "No firmware uploaded yet", `id="model-edit"`)
		c.post(mp, url.Values{"name": {"Thermostat 2"}, "config_schema": {`{"type": 12}`}}).must(t, 400, `id="schema-error"`)
		c.post(mp, url.Values{"name": {"Thermostat 2"}}).must(t, 303)
		c.get("/models").must(t, 200, "Thermostat 2")

		// Upload as the page's script does: JSON for the progress bar, errors in words.
		c.upload(mp+"/firmware", []byte("not a zip"), true).must(t, 400, `"error":`)
		c.upload(mp+"/firmware", nil, true).must(t, 400, "empty")
		b1 := bundletest.BuildCase(t, "thermo", "esp32c3", bundletest.Options{Version: "1.0.0"})
		up := c.upload(mp+"/firmware", b1, true).must(t, 200, `"version":"1.0.0"`, `"location":"/models/`)
		_ = up
		// and without script: a plain multipart form post, then the model page.
		b2 := bundletest.BuildCase(t, "thermo", "esp32c3", bundletest.Options{Version: "1.1.0"})
		p := c.upload(mp+"/firmware", b2, false)
		if p.Status != 303 || !strings.Contains(p.Header.Get("Location"), "uploaded=1.1.0") {
			t.Fatalf("form upload: %d %q %s", p.Status, p.Header.Get("Location"), p.Body)
		}
		c.get(mp+"?uploaded=1.1.0").must(t, 200, `id="uploaded"`, `id="current-version">1.1.0<`, "Make current",
			fmt.Sprintf(`href="/api/device-models/%d/firmware-versions/1.0.0/firmware.elf"`, id))
		// The artifact link works with the session cookie.
		if p := c.get(fmt.Sprintf("/api/device-models/%d/firmware-versions/1.0.0/firmware.bin", id)); p.Status != 200 || len(p.Body) < 1000 {
			t.Fatalf("artifact download: %d, %d bytes", p.Status, len(p.Body))
		}
		// A bundle for another model is refused with the validator's words, on the page.
		other := bundletest.BuildCase(t, "other", "esp32c3", bundletest.Options{Version: "2.0.0"})
		c.upload(mp+"/firmware", other, false).must(t, 400, "Upload refused:")

		// Deleting the current version is refused with the reason; roll back, then delete.
		c.post(mp+"/firmware/1.1.0/delete", url.Values{}).must(t, 409, "because it is the current version")
		c.post(mp+"/firmware/1.0.0/current", url.Values{}).must(t, 303)
		c.get(mp).must(t, 200, `id="current-version">1.0.0<`)
		c.post(mp+"/firmware/1.1.0/delete", url.Values{}).must(t, 303)
		c.get(mp).mustNot(t, "<code>1.1.0</code>")
		c.post(mp+"/firmware/9.9.9/current", url.Values{}).must(t, 404)

		// A model with devices cannot be deleted; the page says why.
		s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": id, "config": `{}`})
		c.post(mp+"/delete", url.Values{}).must(t, 409, "associated device")
		c.get("/models/999999").must(t, 404)
		c.get("/models/abc").must(t, 404)
	})
}

func TestDevicePagesCreateShowSecretOnceEditAndDelete(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "CONSOLE_PAGE_SIZE", "5")
		c := signIn(t, s, "editor")
		schema := `{"type":"object","properties":{"deviceName":{"type":"string"}},"additionalProperties":false}`
		mid := createdID(t, c.post("/models", url.Values{"code": {"lamp"}, "name": {"Lamp"}, "config_schema": {schema}}))

		c.get("/devices").must(t, 200, `id="device-create"`, "0 devices")
		c.post("/devices", url.Values{"model": {""}, "config": {"{}"}}).must(t, 400, `id="model-error"`)
		c.post("/devices", url.Values{"model": {strconv.Itoa(mid)}, "config": {`{"color":"red"}`}}).must(t, 400, `id="config-error"`)
		p := c.post("/devices", url.Values{"model": {strconv.Itoa(mid)}, "config": {`{"deviceName":"Hall"}`}}).
			must(t, 201, "only time the secret is shown", `data-copy="secret"`)
		key := regexp.MustCompile(`id="device-key">([a-z0-9]{8})<`).FindStringSubmatch(p.Body)[1]
		secret := regexp.MustCompile(`id="secret" readonly value="([^"]+)"`).FindStringSubmatch(p.Body)[1]
		s.Basic(key, secret).Expect(200, "GET", "/api/iot/config", nil)
		did := int(s.Expect(200, "GET", "/api/devices", nil).Map(t)["devices"].([]any)[0].(map[string]any)["id"].(float64))
		dp := fmt.Sprintf("/devices/%d", did)
		c.get(dp).must(t, 200, "Device "+key, "Hall", `id="device-edit"`).mustNot(t, secret)

		// Config is checked against the schema, the error shown by the field.
		c.post(dp, url.Values{"config": {`{"color":"red"}`}, "active": {"on"}}).must(t, 400, `id="config-error"`)
		c.post(dp, url.Values{"config": {`{"deviceName":"Porch"}`}}).must(t, 303) // unchecked box: deactivated
		c.get(dp).must(t, 200, "Porch", `id="device-state">inactive<`)
		s.Basic(key, secret).Expect(403, "GET", "/api/iot/config", nil)
		c.post(dp, url.Values{"config": {`{"deviceName":"Porch"}`}, "active": {"on"}}).must(t, 303)

		// New secret: shown once, the old one stops working.
		p = c.post(dp+"/secret", url.Values{}).must(t, 200, "old one no longer works")
		secret2 := regexp.MustCompile(`id="secret" readonly value="([^"]+)"`).FindStringSubmatch(p.Body)[1]
		s.Basic(key, secret).Expect(401, "GET", "/api/iot/config", nil)
		s.Basic(key, secret2).Expect(200, "GET", "/api/iot/config", nil)

		// Filters and paging over 12 devices, 5 a page.
		for i := 0; i < 11; i++ {
			s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`})
		}
		c.get("/devices").must(t, 200, "12 devices", `rel="next"`).mustNot(t, `rel="prev"`)
		c.get("/devices?page=3").must(t, 200, `rel="prev"`).mustNot(t, `rel="next"`)
		c.get("/devices?q="+key).must(t, 200, "1 devices", key)
		c.get("/devices?q=porch").must(t, 200, "1 devices")
		c.get("/devices?q="+url.QueryEscape("%")).must(t, 200, "0 devices") // a wildcard is searched for literally
		c.get(fmt.Sprintf("/devices?model=%d&active=no", mid)).must(t, 200, "0 devices")
		c.get("/devices?active=maybe").must(t, 400, "active must be yes or no")
		c.get("/devices?page=0").must(t, 400)
		c.get("/devices?page=187000000000000000").must(t, 400, "page must be a number from 1 to")

		c.post(dp+"/delete", url.Values{}).must(t, 303)
		c.get(dp).must(t, 404)
		s.Basic(key, secret2).Expect(401, "GET", "/api/iot/config", nil)
	})
}

func TestRolesDecideControlsAndTheServerEnforcesThem(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "m1", "name": "M1"}).Map(t)["id"].(float64))
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)
		did := int(d["id"].(float64))

		v := signIn(t, s, "viewer")
		v.get("/").must(t, 200).mustNot(t, `href="/tokens"`)
		for _, path := range []string{"/models", fmt.Sprintf("/models/%d", mid), "/devices", fmt.Sprintf("/devices/%d", did)} {
			v.get(path).must(t, 200).mustNot(t, `method="post" action="/models`, `method="post" action="/devices`, `id="upload"`, "<textarea")
		}
		// Whatever the page shows, the server refuses a viewer's writes.
		v.post("/models", url.Values{"code": {"x"}, "name": {"x"}}).must(t, 403, "needs editor")
		v.post(fmt.Sprintf("/devices/%d/delete", did), url.Values{}).must(t, 403)
		v.get("/tokens").must(t, 403)
		v.get("/audit").must(t, 403)

		e := signIn(t, s, "editor")
		e.get("/tokens").must(t, 403)
		e.post("/tokens", url.Values{"name": {"x"}, "role": {"admin"}}).must(t, 403)

		a := signIn(t, s, "admin")
		a.get("/").must(t, 200, `href="/tokens"`, `href="/audit"`)
		a.post("/tokens", url.Values{"name": {""}, "role": {"admin"}}).must(t, 400, `id="name-error"`)
		a.post("/tokens", url.Values{"name": {"ci"}, "role": {"root"}}).must(t, 400, "Choose viewer")
		p := a.post("/tokens", url.Values{"name": {"ci"}, "role": {"pipeline"}}).must(t, 201, "shown only now")
		secret := regexp.MustCompile(`id="secret" readonly value="(iots_[^"]+)"`).FindStringSubmatch(p.Body)[1]
		s.As("Bearer "+secret).Expect(200, "GET", "/api/auth/self", nil)
		a.post("/tokens", url.Values{"name": {"ci"}, "role": {"viewer"}}).must(t, 409, "already exists")
		var tid int
		for _, tk := range s.Expect(200, "GET", "/api/tokens", nil).Map(t)["tokens"].([]any) {
			if tk.(map[string]any)["name"] == "ci" {
				tid = int(tk.(map[string]any)["id"].(float64))
			}
		}
		a.post(fmt.Sprintf("/tokens/%d/revoke", tid), url.Values{}).must(t, 303)
		a.get("/tokens").must(t, 200, "revoked")
		s.As("Bearer "+secret).Expect(401, "GET", "/api/auth/self", nil)
		a.post(fmt.Sprintf("/tokens/%d/revoke", tid), url.Values{}).must(t, 404)

		// Console writes are in the audit log under the signed-in identity.
		a.get("/audit").must(t, 200, "test-admin", "POST /tokens", "test-editor")
	})
}

func TestCoredumpPageShowsTheDecodedReportAndRefreshesWhilePending(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing")
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "c3", "name": "C3"}).Map(t)["id"].(float64))
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)
		did, key, secret := int(d["id"].(float64)), d["key"].(string), d["secret"].(string)
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "c3", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		dump, err := os.ReadFile(filepath.Join(filepath.Dir(espimagetest.ELFPath(t, "esp32c3")), "coredump.b64"))
		if err != nil {
			t.Fatal(err)
		}
		cid := int(s.Basic(key, secret).Expect(201, "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", dump).Map(t)["coredump_id"].(float64))
		c := signIn(t, s, "editor")
		cp := fmt.Sprintf("/devices/%d/coredumps/%d", did, cid)
		// No workers yet: PENDING, and the page polls itself with htmx.
		c.get(cp).must(t, 200, `id="parse-status">PENDING<`, `hx-trigger="every 2s"`, `hx-get="`+cp+`"`)
		// An htmx poll gets the page's content without the layout.
		c.get(cp, "HX-Request", "true").must(t, 200, `id="dump"`).mustNot(t, "<html")
		c.get(fmt.Sprintf("/devices/%d", did)).must(t, 200, cp, "PENDING")

		stop, err := s.App.StartBackground(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		deadline := time.Now().Add(60 * time.Second)
		var p *page
		for {
			p = c.get(cp)
			if strings.Contains(p.Body, `id="parse-status">PARSED<`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not decoded:\n%s", p.Body)
			}
			time.Sleep(200 * time.Millisecond)
		}
		exp, _ := os.ReadFile(filepath.Join(filepath.Dir(espimagetest.ELFPath(t, "esp32c3")), "expected_output"))
		task := regexp.MustCompile(`name: '([^']*)'`).FindSubmatch(exp)[1]
		p.must(t, 200, `id="crashed-task">`+string(task)+`<`, `id="top-frame"`, `id="fault"`, "Registers", `class="thread crashed"`,
			"Raw report text", fmt.Sprintf(`href="/api/devices/%d/coredumps/%d/download"`, did, cid), `id="reparse"`).mustNot(t, "hx-trigger")
		// The top frame names a function and a source line.
		if !regexp.MustCompile(`id="top-frame"><code>[A-Za-z_][\w]*</code> <span class="src">[^<]+:\d+</span>`).MatchString(p.Body) {
			t.Fatalf("top frame without function and file:line:\n%s", p.Body)
		}
		// Reparse queues it again.
		c.post(cp+"/reparse", url.Values{}).must(t, 303)
		c.get(cp+"/nope").must(t, 404)
		c.get(fmt.Sprintf("/devices/%d/coredumps/999999", did)).must(t, 404)
	})
}

func TestOverviewCountsRecentCrashesPerModel(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing")
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "fleet", "name": "Fleet"}).Map(t)["id"].(float64))
		s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "quiet", "name": "Quiet"})
		var ids []int
		for i := 0; i < 3; i++ {
			ids = append(ids, int(s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": `{}`}).Map(t)["id"].(float64)))
		}
		for _, id := range []int{ids[0], ids[0], ids[1]} {
			s.Expect(201, "POST", "/api/testing/coredumps", map[string]any{"device_id": id, "chip": "esp32", "firmware_version": "1.0.0", "size": 10, "parse_status": "PARSED"})
		}
		c := signIn(t, s, "viewer")
		p := c.get("/").must(t, 200, `href="/models/`, ">fleet<", ">quiet<")
		row := regexp.MustCompile(`(?s)>fleet</a>.*?</tr>`).FindString(p.Body)
		cells := regexp.MustCompile(`<td class="num">(\d+)</td>`).FindAllStringSubmatch(row, -1)
		// Not seen in 24 h (created just now: none), crashes 24 h, 7 d, devices with a crash.
		if len(cells) != 4 || cells[0][1] != "0" || cells[1][1] != "3" || cells[2][1] != "3" || cells[3][1] != "2" {
			t.Fatalf("fleet row counts %v:\n%s", cells, row)
		}
		// Versions running from the fleet view: the two crashed devices run 1.0.0 and crashed on it.
		sec := regexp.MustCompile(`(?s)<section class="card model-summary"[^>]*id="model-` + strconv.Itoa(mid) + `">.*?</section>`).FindString(p.Body)
		if !regexp.MustCompile(`(?s)<code>1\.0\.0</code></th>\s*<td class="num">2</td><td class="num">2</td>\s*<td class="num">0\.0 %</td>`).MatchString(sec) {
			t.Fatalf("versions running of fleet:\n%s", sec)
		}
		if !strings.Contains(row, `>3</a></td>`) {
			t.Fatalf("fleet row lacks its 3 devices:\n%s", row)
		}
	})
}
