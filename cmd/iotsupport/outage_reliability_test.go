package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// raw sends a request and returns status and body (no assertion).
func raw(t *testing.T, method, url string, body []byte, auth string, ctype string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// want503 checks a 503 with the error envelope.
func want503(t *testing.T, what string, code int, body []byte) {
	t.Helper()
	var env struct {
		Error, Code, CorrelationID string
	}
	if code != 503 || json.Unmarshal(body, &env) != nil || env.Code != "SERVICE_UNAVAILABLE" || env.Error == "" {
		t.Errorf("%s: want 503 SERVICE_UNAVAILABLE envelope, got %d %s", what, code, body)
	}
}

// TestStoreOutage stops versitygw under a running server: uploads answer 503 and leave no
// rows, downloads and readiness answer 503, deletions are queued (backlog in /metrics and
// readyz). Once it is back, everything works without a restart, the queued deletions
// complete and fsck is clean.
func TestStoreOutage(t *testing.T) {
	s3cfg, stopS3, startS3 := testenv.StoppableS3(t)
	env := &testenv.Env{Name: "postgres+versitygw", DatabaseURL: testenv.PostgresURL(t), S3: &s3cfg}
	env.DB = testenv.OpenDB(t, env.DatabaseURL)
	base := proctest.Env(env, "MAX_FIRMWARES=2", "DECODE_WORKERS=0", "FSCK_INTERVAL=0")
	p := proctest.Start(t, base)
	c := &client{t: t, url: p.URL, token: adminToken(t, p)}
	admin := "Bearer " + c.token

	m := c.do("POST", "/api/device-models", []byte(`{"code":"outage","name":"Outage"}`), "", 201)
	mid := int(m["id"].(float64))
	fwURL := fmt.Sprintf("%s/api/device-models/%d/firmware", p.URL, mid)
	bundles := map[string][]byte{}
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		bundles[v] = bundletest.BuildCase(t, "outage", "esp32c3", bundletest.Options{Version: v})
	}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		if code, b := raw(t, "POST", fwURL, bundles[v], admin, "application/zip"); code != 200 && code != 201 {
			t.Fatalf("upload %s: %d %s", v, code, b)
		}
	}
	d := c.do("POST", "/api/devices", []byte(fmt.Sprintf(`{"device_model_id":%d,"config":"{}"}`, mid)), "", 201)
	devAuth := "Basic " + basic(d["key"].(string), d["secret"].(string))
	dumpURL := p.URL + "/api/iot/coredump?chip=esp32c3&firmware_version=2.0.0"
	var dumpIDs []int
	for i := 0; i < 2; i++ {
		code, b := raw(t, "POST", dumpURL, []byte(fmt.Sprintf("dump %d", i)), devAuth, "")
		var r struct {
			ID int `json:"coredump_id"`
		}
		if code != 201 || json.Unmarshal(b, &r) != nil {
			t.Fatalf("dump: %d %s", code, b)
		}
		dumpIDs = append(dumpIDs, r.ID)
	}
	rows := func() [3]int {
		return [3]int{testenv.Count(t, env.DB, "firmware_versions"), testenv.Count(t, env.DB, "coredumps"), testenv.Count(t, env.DB, "coredump_uploads")}
	}
	before := rows()

	stopS3()
	start := time.Now()
	code, b := raw(t, "POST", fwURL, bundles["3.0.0"], admin, "application/zip")
	want503(t, "bundle upload", code, b)
	code, b = raw(t, "POST", dumpURL, []byte("dump during outage"), devAuth, "")
	want503(t, "core dump upload", code, b)
	if after := rows(); after != before {
		t.Errorf("rows changed by failed uploads: %v -> %v", before, after)
	}
	code, b = raw(t, "GET", fwURL, nil, admin, "")
	want503(t, "firmware download", code, b)
	code, b = raw(t, "GET", fmt.Sprintf("%s/api/devices/%d/coredumps/%d/download", p.URL, int(d["id"].(float64)), dumpIDs[0]), nil, admin, "")
	want503(t, "core dump download", code, b)
	if code, b = raw(t, "GET", p.URL+"/health/readyz", nil, "", ""); code != 503 || !strings.Contains(string(b), `"storage":{"error"`) && !strings.Contains(string(b), `"ok":false`) {
		t.Errorf("readyz during outage: %d %s", code, b)
	}
	// Deletions only touch the database now; the objects wait in the outbox.
	if code, b = raw(t, "DELETE", fmt.Sprintf("%s/api/devices/%d/coredumps/%d", p.URL, int(d["id"].(float64)), dumpIDs[0]), nil, admin, ""); code != 204 {
		t.Errorf("delete core dump during outage: %d %s", code, b)
	}
	if code, b = raw(t, "DELETE", fmt.Sprintf("%s/api/device-models/%d/firmware-versions/1.0.0", p.URL, mid), nil, admin, ""); code != 204 {
		t.Errorf("delete firmware version during outage: %d %s", code, b)
	}
	time.Sleep(3 * time.Second) // at least one failed drain attempt
	// Two deletions above, plus one key from each rolled-back upload (the bundle's first
	// artifact and the dump): a Put that failed may still have stored its object, and the
	// store is down, so their removal is queued too.
	if n := metric(t, p.URL, "iotsupport_outbox_backlog"); n != 4 {
		t.Errorf("iotsupport_outbox_backlog = %d, want 4", n)
	}
	if n := metric(t, p.URL, "iotsupport_outbox_failures_total"); n < 1 {
		t.Errorf("iotsupport_outbox_failures_total = %d, want failed attempts", n)
	}
	if _, b = raw(t, "GET", p.URL+"/health/readyz", nil, "", ""); !strings.Contains(string(b), `"backlog":4`) {
		t.Errorf("readyz does not show the outbox backlog: %s", b)
	}
	outage := time.Since(start)

	startS3()
	deadline := time.Now().Add(60 * time.Second)
	for testenv.Count(t, env.DB, "blob_deletions") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queued deletions did not complete after the store came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	drained := time.Since(start) - outage
	if code, b = raw(t, "GET", p.URL+"/health/readyz", nil, "", ""); code != 200 {
		t.Errorf("readyz after outage: %d %s", code, b)
	}
	if code, b = raw(t, "POST", fwURL, bundles["3.0.0"], admin, "application/zip"); code != 200 && code != 201 {
		t.Errorf("upload after outage: %d %s", code, b)
	}
	if code, b = raw(t, "POST", dumpURL, []byte("dump after outage"), devAuth, ""); code != 201 {
		t.Errorf("core dump after outage: %d %s", code, b)
	}
	if got := download(t, p.URL, admin, fmt.Sprintf("/api/devices/%d/coredumps/%d/download", int(d["id"].(float64)), dumpIDs[1])); string(got) != "dump 1" {
		t.Errorf("download after outage: %q", got)
	}
	if n := metric(t, p.URL, "iotsupport_outbox_backlog"); n != 0 {
		t.Errorf("backlog after drain: %d", n)
	}
	if out, errOut, code := proctest.Run(t, base, "fsck", "--grace", "0s"); code != 0 {
		t.Errorf("fsck after outage: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("outage %v; queued deletions completed %v after the store came back", outage.Round(time.Millisecond), drained.Round(time.Millisecond))
}
