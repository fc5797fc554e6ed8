package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

const coredumpCorpus = "../../../shared/testdata/esp-coredump"

// coredumpCorpusCases are the shared esp-coredump cases and what their headers hold.
var coredumpCorpusCases = []struct {
	name, chip string
	version    float64
	elf        bool
}{
	{"esp32", "esp32", 0x00000102, true},
	{"esp32_bin", "esp32", 0x00000003, false},
	{"esp32c3", "esp32c3", 0x00050102, true},
	{"esp32c3_bin", "esp32c3", 0x00050102, true},
	{"esp32c6", "esp32c6", 0x000D0104, true},
}

type coredumpDevice struct {
	id          int
	key, secret string
}

func newCoredumpDevice(t *testing.T, s *apitest.Server, code string) coredumpDevice {
	t.Helper()
	models := s.Expect(200, "GET", "/api/device-models", nil).Map(t)["device_models"].([]any)
	mid := 0
	for _, m := range models {
		if m.(map[string]any)["code"] == code {
			mid = int(m.(map[string]any)["id"].(float64))
		}
	}
	if mid == 0 {
		mid = int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": code, "name": code}).Map(t)["id"].(float64))
	}
	d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": mid, "config": "{}"}).Map(t)
	return coredumpDevice{id: int(d["id"].(float64)), key: d["key"].(string), secret: d["secret"].(string)}
}

func (d coredumpDevice) upload(s *apitest.Server, chip, version string, body any) *apitest.Response {
	return s.Basic(d.key, d.secret).Do("POST", "/api/iot/coredump?chip="+url.QueryEscape(chip)+"&firmware_version="+url.QueryEscape(version), body)
}

func readCoredumpCorpus(t *testing.T, name, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(coredumpCorpus, name, file))
	if err != nil {
		t.Fatalf("shared test data missing: %v", err)
	}
	return b
}

func decodeCoredumpLines(t *testing.T, b []byte) []byte {
	var out []byte
	for _, l := range strings.Fields(string(b)) {
		d, err := base64.StdEncoding.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d...)
	}
	return out
}

func storedCoredumpObject(t *testing.T, env *testenv.Env, key string) []byte {
	t.Helper()
	rc, _, err := env.Store.Get(context.Background(), key, nil)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func coredumpObjectKeys(t *testing.T, env *testenv.Env, prefix string) []string {
	t.Helper()
	var keys []string
	if err := blob.Walk(context.Background(), env.Store, prefix, func(i blob.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	return keys
}

func drainCoredumpOutbox(t *testing.T, s *apitest.Server) {
	t.Helper()
	if _, failed, err := s.App.Outbox.Drain(context.Background()); err != nil || failed > 0 {
		t.Fatalf("outbox drain: %d failed, %v", failed, err)
	}
}

func TestCoredumpUploadCorpus(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		dev := newCoredumpDevice(t, s, "crashy")
		viewer := s.Role("viewer")
		var lastID int
		for _, c := range coredumpCorpusCases {
			b64 := readCoredumpCorpus(t, c.name, "coredump.b64")
			elfSum := sha256.Sum256(readCoredumpCorpus(t, c.name, "app.elf"))
			elfSHA := hex.EncodeToString(elfSum[:])
			for _, form := range []struct {
				container string
				body      []byte
			}{{"base64", b64}, {"raw", decodeCoredumpLines(t, b64)}} {
				r := dev.upload(s, strings.ToUpper(c.chip), "v1.0-56-g30082bf", form.body)
				if r.Status != 201 {
					t.Fatalf("%s %s: %d %s", c.name, form.container, r.Status, r.Body)
				}
				up := r.Map(t)
				id := int(up["coredump_id"].(float64))
				if up["status"] != "ok" || id <= lastID {
					t.Fatalf("upload answer %v", up)
				}
				lastID = id
				d := viewer.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", dev.id, id), nil).Map(t)
				bodySum := sha256.Sum256(form.body)
				if d["device_id"].(float64) != float64(dev.id) || d["chip"] != c.chip || d["firmware_version"] != "v1.0-56-g30082bf" ||
					d["size"].(float64) != float64(len(form.body)) || d["parse_status"] != "PENDING" || d["parsed_at"] != nil || d["parsed_output"] != nil {
					t.Fatalf("%s %s: row %v", c.name, form.container, d)
				}
				if d["container"] != form.container || d["dump_version"].(float64) != c.version || d["checksum_ok"] != true ||
					d["recognized"] != true || d["parse_error"] != nil || d["sha256"] != hex.EncodeToString(bodySum[:]) {
					t.Fatalf("%s %s: findings %v", c.name, form.container, d)
				}
				wantFormat := map[bool]string{true: "elf", false: "binary"}[c.elf]
				if d["format"] != wantFormat {
					t.Fatalf("%s: format %v", c.name, d["format"])
				}
				prefix, _ := d["app_elf_sha_prefix"].(string)
				if c.elf != (prefix != "") || c.elf && (len(prefix) < 8 || !strings.HasPrefix(elfSHA, prefix)) {
					t.Fatalf("%s: app_elf_sha_prefix %q, ELF SHA-256 %s", c.name, prefix, elfSHA)
				}
				for _, f := range []string{"uploaded_at", "created_at", "updated_at"} {
					ts, _ := d[f].(string)
					if _, err := time.Parse(time.RFC3339, ts); err != nil || !strings.HasSuffix(ts, "Z") {
						t.Fatalf("%s = %q, want RFC 3339 UTC", f, ts)
					}
				}
				if got := storedCoredumpObject(t, env, fmt.Sprintf("coredumps/%s/%d.dmp", dev.key, id)); !bytes.Equal(got, form.body) {
					t.Fatalf("%s %s: stored object differs", c.name, form.container)
				}
				dl := viewer.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev.id, id), nil)
				if !bytes.Equal(dl.Body, form.body) || dl.Header.Get("Content-Disposition") != fmt.Sprintf("attachment; filename=coredump_%d.dmp", id) ||
					dl.Header.Get("Content-Length") != strconv.Itoa(len(form.body)) || dl.Header.Get("Content-Type") != "application/octet-stream" {
					t.Fatalf("download: %v", dl.Header)
				}
			}
		}

		// List: newest first, count is the total, paging with limit and before_id.
		list := viewer.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", dev.id), nil).Map(t)
		all := list["coredumps"].([]any)
		if list["count"].(float64) != 10 || len(all) != 10 || int(all[0].(map[string]any)["id"].(float64)) != lastID {
			t.Fatalf("list: %v", list)
		}
		if _, has := all[0].(map[string]any)["parsed_output"]; has {
			t.Fatalf("summary carries detail fields: %v", all[0])
		}
		var paged []int
		before := 0
		for {
			page := viewer.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps?limit=4&before_id=%d", dev.id, before), nil).Map(t)
			items := page["coredumps"].([]any)
			if page["count"].(float64) != 10 || len(items) > 4 {
				t.Fatalf("page: %v", page)
			}
			if len(items) == 0 {
				break
			}
			for _, it := range items {
				paged = append(paged, int(it.(map[string]any)["id"].(float64)))
			}
			before = paged[len(paged)-1]
		}
		for i := range all {
			if len(paged) != len(all) || paged[i] != int(all[i].(map[string]any)["id"].(float64)) {
				t.Fatalf("paging gave %v, list %v", paged, all)
			}
		}
		viewer.Expect(400, "GET", fmt.Sprintf("/api/devices/%d/coredumps?limit=1001", dev.id), nil)
		viewer.Expect(404, "GET", "/api/devices/999999/coredumps", nil)

		// last_coredump_at on the device list and detail.
		newest := all[0].(map[string]any)["uploaded_at"]
		dd := viewer.Expect(200, "GET", fmt.Sprintf("/api/devices/%d", dev.id), nil).Map(t)
		if dd["last_coredump_at"] != newest {
			t.Fatalf("device last_coredump_at %v, newest upload %v", dd["last_coredump_at"], newest)
		}
		other := newCoredumpDevice(t, s, "crashy")
		for _, d := range viewer.Expect(200, "GET", "/api/devices", nil).Map(t)["devices"].([]any) {
			m := d.(map[string]any)
			want := any(nil)
			if int(m["id"].(float64)) == dev.id {
				want = newest
			}
			if m["last_coredump_at"] != want {
				t.Fatalf("device %v: last_coredump_at %v, want %v (other device %d)", m["id"], m["last_coredump_at"], want, other.id)
			}
		}

		// Range, ETag and If-None-Match on the download.
		dlURL := fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev.id, lastID)
		full := viewer.Expect(200, "GET", dlURL, nil)
		r := viewer.Expect(206, "GET", dlURL, nil, "Range", "bytes=10-19")
		if !bytes.Equal(r.Body, full.Body[10:20]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(full.Body)) || r.Header.Get("Content-Length") != "10" {
			t.Fatalf("range: %q %v", r.Body, r.Header)
		}
		r = viewer.Expect(206, "GET", dlURL, nil, "Range", "bytes=-5")
		if !bytes.Equal(r.Body, full.Body[len(full.Body)-5:]) {
			t.Fatalf("suffix range: %q", r.Body)
		}
		viewer.Expect(416, "GET", dlURL, nil, "Range", fmt.Sprintf("bytes=%d-", len(full.Body)))
		if et := full.Header.Get("ETag"); et == "" || viewer.Do("GET", dlURL, nil, "If-None-Match", et).Status != 304 {
			t.Fatalf("ETag %q not honoured", et)
		}
	})
}

func TestCoredumpUploadLimitsAndValidation(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "COREDUMP_UPLOADS_PER_HOUR", "1000")
		dev := newCoredumpDevice(t, s, "lamp")
		for _, c := range []struct {
			query, msg string
		}{
			{"firmware_version=1.0", "Missing required query parameter: chip"},
			{"chip=&firmware_version=1.0", "Missing required query parameter: chip"},
			{"chip=esp32", "Missing required query parameter: firmware_version"},
			{"chip=esp8266&firmware_version=1.0", "Unknown chip"},
			{"chip=esp32&firmware_version=1.0/../x", "Invalid firmware_version"},
			{"chip=esp32&firmware_version=" + strings.Repeat("1", 33), "Invalid firmware_version"},
		} {
			r := s.Basic(dev.key, dev.secret).Expect(400, "POST", "/api/iot/coredump?"+c.query, []byte("dump")).Map(t)
			if !strings.HasPrefix(r["error"].(string), c.msg) || r["code"] != "VALIDATION_FAILED" {
				t.Fatalf("%s: %v", c.query, r)
			}
		}
		if r := dev.upload(s, "esp32", "1.0", []byte{}); r.Status != 400 || r.Map(t)["error"] != "No coredump content provided" {
			t.Fatalf("empty body: %d %s", r.Status, r.Body)
		}

		// Exactly the limit is accepted (and, not being a dump, stored and flagged); one more byte is refused.
		limit := 1 << 20
		junk := bytes.Repeat([]byte{0xA5, 0x5A, 0x00, 0x13}, limit/4)
		r := dev.upload(s, "esp32s3", "2.0.0+build.7", junk)
		if r.Status != 201 {
			t.Fatalf("1 MiB: %d %s", r.Status, r.Body)
		}
		id := int(r.Map(t)["coredump_id"].(float64))
		d := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", dev.id, id), nil).Map(t)
		if d["size"].(float64) != float64(limit) || d["recognized"] != false || d["container"] != "unknown" || d["parse_error"] != "not_a_coredump" ||
			d["checksum_ok"] != nil || d["dump_version"] != nil || d["chip"] != "esp32s3" {
			t.Fatalf("junk row: %v", d)
		}
		if !bytes.Equal(storedCoredumpObject(t, env, fmt.Sprintf("coredumps/%s/%d.dmp", dev.key, id)), junk) {
			t.Fatal("stored junk differs")
		}
		over := dev.upload(s, "esp32", "1.0", append(append([]byte{}, junk...), 1))
		if over.Status != 413 || over.Map(t)["code"] != "PAYLOAD_TOO_LARGE" {
			t.Fatalf("limit+1: %d %s", over.Status, over.Body)
		}
		// Chunked (no Content-Length) and over the limit.
		chunked := io.MultiReader(bytes.NewReader(junk), strings.NewReader("more bytes"))
		if r := dev.upload(s, "esp32", "1.0", chunked); r.Status != 413 {
			t.Fatalf("chunked over the limit: %d %s", r.Status, r.Body)
		}
		// A chunked body under the limit is fine.
		if r := dev.upload(s, "esp32", "1.0", io.MultiReader(strings.NewReader("hello "), strings.NewReader("dump"))); r.Status != 201 {
			t.Fatalf("chunked under the limit: %d %s", r.Status, r.Body)
		}
		list := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", dev.id), nil).Map(t)
		if list["count"].(float64) != 2 {
			t.Fatalf("refused uploads left rows: %v", list)
		}
		if keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/"); len(keys) != 2 {
			t.Fatalf("objects: %v", keys)
		}

		// A lower limit from the setting.
		s2 := apitest.Start(t, testenv.New(t, env.Name), "COREDUMP_MAX_BYTES", "100")
		dev = newCoredumpDevice(t, s2, "lamp")
		if r := dev.upload(s2, "esp32", "1.0", make([]byte, 100)); r.Status != 201 {
			t.Fatalf("100 bytes: %d", r.Status)
		}
		if r := dev.upload(s2, "esp32", "1.0", make([]byte, 101)); r.Status != 413 {
			t.Fatalf("101 bytes: %d", r.Status)
		}
	})
}

func TestCoredumpOwnership(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		a, b := newCoredumpDevice(t, s, "lamp"), newCoredumpDevice(t, s, "lamp")
		bID := int(b.upload(s, "esp32", "1.0", []byte("B's crash")).Map(t)["coredump_id"].(float64))
		aID := int(a.upload(s, "esp32", "1.0", []byte("A's crash")).Map(t)["coredump_id"].(float64))
		for _, p := range []string{"", "/download"} {
			r := s.Expect(404, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d%s", a.id, bID, p), nil).Map(t)
			if r["error"] != fmt.Sprintf("Coredump %d was not found", bID) {
				t.Fatalf("wrong device: %v", r)
			}
		}
		s.Expect(404, "DELETE", fmt.Sprintf("/api/devices/%d/coredumps/%d", a.id, bID), nil)
		// Device A's list does not show B's dump, and deleting all of A's leaves B's alone.
		if l := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", a.id), nil).Map(t); l["count"].(float64) != 1 {
			t.Fatalf("A's list: %v", l)
		}
		s.Expect(204, "DELETE", fmt.Sprintf("/api/devices/%d/coredumps", a.id), nil)
		s.Expect(404, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", a.id, aID), nil)
		dl := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", b.id, bID), nil)
		if string(dl.Body) != "B's crash" {
			t.Fatalf("B's dump: %q", dl.Body)
		}
		// Devices cannot use the admin API at all.
		s.Basic(a.key, a.secret).Expect(403, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", b.id, bID), nil)
		// Editors delete, viewers do not.
		s.Role("viewer").Expect(403, "DELETE", fmt.Sprintf("/api/devices/%d/coredumps/%d", b.id, bID), nil)
		s.Role("editor").Expect(204, "DELETE", fmt.Sprintf("/api/devices/%d/coredumps/%d", b.id, bID), nil)
		s.Expect(204, "DELETE", fmt.Sprintf("/api/devices/%d/coredumps", b.id), nil) // none left: still 204
		s.Expect(404, "DELETE", "/api/devices/999999/coredumps", nil)
		drainCoredumpOutbox(t, s)
		for _, d := range []coredumpDevice{a, b} {
			if keys := coredumpObjectKeys(t, env, "coredumps/"+d.key+"/"); len(keys) != 0 {
				t.Fatalf("objects left after delete: %v", keys)
			}
		}
	})
}

func TestCoredumpRetention(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "MAX_COREDUMPS", "3")
		dev, other := newCoredumpDevice(t, s, "lamp"), newCoredumpDevice(t, s, "lamp")
		otherID := int(other.upload(s, "esp32", "1.0", []byte("other")).Map(t)["coredump_id"].(float64))
		var ids []int
		for i := 0; i < 5; i++ {
			r := dev.upload(s, "esp32c3", "1.0", []byte(fmt.Sprintf("crash %d", i)))
			if r.Status != 201 {
				t.Fatalf("upload %d: %d %s", i, r.Status, r.Body)
			}
			ids = append(ids, int(r.Map(t)["coredump_id"].(float64)))
		}
		list := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", dev.id), nil).Map(t)
		got := []int{}
		for _, c := range list["coredumps"].([]any) {
			got = append(got, int(c.(map[string]any)["id"].(float64)))
		}
		if list["count"].(float64) != 3 || fmt.Sprint(got) != fmt.Sprint([]int{ids[4], ids[3], ids[2]}) {
			t.Fatalf("kept %v of %v", got, ids)
		}
		// Pruned objects stay until the outbox runs after the commit, then go.
		if keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/"); len(keys) != 5 {
			t.Fatalf("before the outbox ran: %v", keys)
		}
		drainCoredumpOutbox(t, s)
		keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/")
		want := []string{}
		for _, id := range ids[2:] {
			want = append(want, fmt.Sprintf("coredumps/%s/%d.dmp", dev.key, id))
		}
		if fmt.Sprint(keys) != fmt.Sprint(want) {
			t.Fatalf("objects after retention: %v, want %v", keys, want)
		}
		// Another device's dumps are untouched.
		s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", other.id, otherID), nil)
	})
}

func TestCoredumpRateLimit(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		// Retention keeping one dump must not reset the hourly count.
		s := apitest.Start(t, env, "COREDUMP_UPLOADS_PER_HOUR", "3", "MAX_COREDUMPS", "1")
		dev, other := newCoredumpDevice(t, s, "lamp"), newCoredumpDevice(t, s, "lamp")
		for i := 0; i < 3; i++ {
			if r := dev.upload(s, "esp32", "1.0", []byte("loop")); r.Status != 201 {
				t.Fatalf("upload %d: %d", i, r.Status)
			}
		}
		r := dev.upload(s, "esp32", "1.0", []byte("loop"))
		if r.Status != 429 || r.Map(t)["code"] != "RATE_LIMITED" {
			t.Fatalf("4th upload: %d %s", r.Status, r.Body)
		}
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 3500 || ra > 3600 {
			t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
		}
		if l := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", dev.id), nil).Map(t); l["count"].(float64) != 1 {
			t.Fatalf("after refusal: %v", l)
		}
		drainCoredumpOutbox(t, s)
		if keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/"); len(keys) != 1 {
			t.Fatalf("objects: %v", keys)
		}
		// The limit is per device.
		if r := other.upload(s, "esp32", "1.0", []byte("fine")); r.Status != 201 {
			t.Fatalf("other device: %d", r.Status)
		}

		// Concurrent uploads of one device (as from a crash loop hitting several replicas)
		// never exceed the limit: the device row is locked while counting.
		burst := newCoredumpDevice(t, s, "lamp")
		statuses := make(chan int, 8)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("POST", s.URL+"/api/iot/coredump?chip=esp32&firmware_version=1.0", strings.NewReader("burst"))
				req.SetBasicAuth(burst.key, burst.secret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					statuses <- 0
					return
				}
				resp.Body.Close()
				statuses <- resp.StatusCode
			}()
		}
		wg.Wait()
		close(statuses)
		counts := map[int]int{}
		for st := range statuses {
			counts[st]++
		}
		if counts[201] != 3 || counts[429] != 5 {
			t.Fatalf("concurrent burst: %v, want 3×201 and 5×429", counts)
		}
	})
}

func TestCoredumpDeviceDeletionQueuesPrefix(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		dev, keep := newCoredumpDevice(t, s, "lamp"), newCoredumpDevice(t, s, "lamp")
		for i := 0; i < 3; i++ {
			dev.upload(s, "esp32", "1.0", []byte(fmt.Sprintf("crash %d", i)))
		}
		keep.upload(s, "esp32", "1.0", []byte("stays"))
		s.Expect(204, "DELETE", fmt.Sprintf("/api/devices/%d", dev.id), nil)
		if keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/"); len(keys) != 3 {
			t.Fatalf("objects deleted before the outbox ran: %v", keys)
		}
		drainCoredumpOutbox(t, s)
		if keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/"); len(keys) != 0 {
			t.Fatalf("objects left after device deletion: %v", keys)
		}
		if keys := coredumpObjectKeys(t, env, "coredumps/"+keep.key+"/"); len(keys) != 1 {
			t.Fatalf("other device's objects: %v", keys)
		}
	})
}

func TestCoredumpStoreOutage(t *testing.T) {
	cfg, stopS3, startS3 := testenv.StoppableS3(t)
	store, err := blob.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	dsn := testenv.PostgresURL(t)
	env := &testenv.Env{Name: "postgres+stoppable-s3", DatabaseURL: dsn, DB: testenv.OpenDB(t, dsn), Store: store, S3: &cfg}
	s := apitest.Start(t, env)
	dev := newCoredumpDevice(t, s, "lamp")
	okID := int(dev.upload(s, "esp32", "1.0", []byte("before")).Map(t)["coredump_id"].(float64))

	stopS3()
	r := dev.upload(s, "esp32", "1.0", []byte("during the outage"))
	if r.Status != 503 || r.Map(t)["code"] != "SERVICE_UNAVAILABLE" {
		t.Fatalf("upload during outage: %d %s", r.Status, r.Body)
	}
	if l := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", dev.id), nil).Map(t); l["count"].(float64) != 1 {
		t.Fatalf("a row was left by the failed upload: %v", l)
	}
	s.Expect(503, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev.id, okID), nil)

	startS3()
	r = dev.upload(s, "esp32", "1.0", []byte("after"))
	if r.Status != 201 {
		t.Fatalf("upload after recovery: %d %s", r.Status, r.Body)
	}
	id := int(r.Map(t)["coredump_id"].(float64))
	if dl := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev.id, id), nil); string(dl.Body) != "after" {
		t.Fatalf("download after recovery: %q", dl.Body)
	}
	// Missing object (deleted behind our back) is 404, not 503.
	if err := store.Delete(context.Background(), fmt.Sprintf("coredumps/%s/%d.dmp", dev.key, okID)); err != nil {
		t.Fatal(err)
	}
	if m := s.Expect(404, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev.id, okID), nil).Map(t); m["error"] != fmt.Sprintf("Coredump file %d was not found", okID) {
		t.Fatalf("missing object: %v", m)
	}
}

func TestTestingCoredumpSeed(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing")
		dev := newCoredumpDevice(t, s, "lamp")
		// It writes core dumps: an admin's job, not anyone's who can reach a testing server.
		seed := map[string]any{"device_id": dev.id}
		s.As("").Expect(401, "POST", "/api/testing/coredumps", seed)
		s.Role("editor").Expect(403, "POST", "/api/testing/coredumps", seed)
		s.Basic(dev.key, dev.secret).Expect(403, "POST", "/api/testing/coredumps", seed)
		if n := testenv.Count(t, env.DB, "coredumps"); n != 0 {
			t.Fatalf("refused seeds stored %d dumps", n)
		}
		c := s.Expect(201, "POST", "/api/testing/coredumps", map[string]any{"device_id": dev.id}).Map(t)
		if c["chip"] != "esp32s3" || c["firmware_version"] != "0.0.0-test" || c["size"].(float64) != 262144 || c["parse_status"] != "PARSED" ||
			c["parsed_output"] != "Test coredump parsed output" || c["parsed_at"] == nil {
			t.Fatalf("seeded: %v", c)
		}
		id := int(c["id"].(float64))
		if dl := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev.id, id), nil); len(dl.Body) != 262144 {
			t.Fatalf("download of seeded dump: %d bytes", len(dl.Body))
		}
		p := s.Expect(201, "POST", "/api/testing/coredumps", map[string]any{"device_id": dev.id, "parse_status": "PENDING", "size": 10}).Map(t)
		if p["parse_status"] != "PENDING" || p["parsed_at"] != nil || p["parsed_output"] != nil {
			t.Fatalf("pending seed: %v", p)
		}
		s.Expect(400, "POST", "/api/testing/coredumps", map[string]any{"device_id": dev.id, "parse_status": "DONE"})
		s.Expect(404, "POST", "/api/testing/coredumps", map[string]any{"device_id": 999999})

		// Outside testing mode the route does not exist for anyone.
		prod := apitest.Start(t, testenv.New(t, env.Name))
		if r := prod.Do("POST", "/api/testing/coredumps", map[string]any{"device_id": dev.id}).Map(t); r["code"] != "ROUTE_NOT_AVAILABLE" {
			t.Fatalf("production: %v", r)
		}
	})
}

// TestTestingCoredumpSeedKeepsUploadRules: seeded dumps count against the device's hourly
// upload limit and its retention like uploads do.
func TestTestingCoredumpSeedKeepsUploadRules(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "APP_ENV", "testing", "COREDUMP_UPLOADS_PER_HOUR", "3", "MAX_COREDUMPS", "2")
		dev := newCoredumpDevice(t, s, "lamp")
		var ids []int
		for i := 0; i < 3; i++ {
			c := s.Expect(201, "POST", "/api/testing/coredumps", map[string]any{"device_id": dev.id, "size": 16}).Map(t)
			ids = append(ids, int(c["id"].(float64)))
		}
		l := s.Expect(200, "GET", fmt.Sprintf("/api/devices/%d/coredumps", dev.id), nil).Map(t)
		if l["count"].(float64) != 2 {
			t.Fatalf("MAX_COREDUMPS=2 but %v dumps kept", l["count"])
		}
		s.Expect(404, "GET", fmt.Sprintf("/api/devices/%d/coredumps/%d", dev.id, ids[0]), nil)
		r := s.Expect(429, "POST", "/api/testing/coredumps", map[string]any{"device_id": dev.id, "size": 16})
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		// Uploads and seeds share the limit.
		if r := dev.upload(s, "esp32", "1.0", []byte("dump")); r.Status != 429 {
			t.Fatalf("device upload after 3 seeds: %d %s", r.Status, r.Body)
		}
		drainCoredumpOutbox(t, s)
		if keys := coredumpObjectKeys(t, env, "coredumps/"+dev.key+"/"); len(keys) != 2 {
			t.Fatalf("objects after retention: %v", keys)
		}
	})
}
