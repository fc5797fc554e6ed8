package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// client talks to a subprocess server.
type client struct {
	t     *testing.T
	url   string
	token string
}

func (c *client) do(method, path string, body []byte, auth string, want int) map[string]any {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url+path, bytes.NewReader(body))
	if auth == "" {
		auth = "Bearer " + c.token
	}
	req.Header.Set("Authorization", auth)
	if body != nil && body[0] == '{' {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func adminToken(t *testing.T, p *proctest.Proc) string {
	tok := regexp.MustCompile(`iots_[A-Za-z0-9_-]{43}`).FindString(p.Output())
	if tok == "" {
		t.Fatalf("no admin token printed:\n%s", p.Output())
	}
	return tok
}

type fleet struct {
	devices []struct {
		id          int
		key, secret string
	}
}

// seed creates a model with firmware and n dumps spread over devices (5 each, under the rate limit).
func seed(t *testing.T, c *client, dumps int) *fleet {
	m := c.do("POST", "/api/device-models", []byte(`{"code":"lamp","name":"Lamp"}`), "", 201)
	mid := int(m["id"].(float64))
	c.do("POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}), "", 200)
	dump, err := os.ReadFile(filepath.Join(filepath.Dir(espimagetest.ELFPath(t, "esp32c3")), "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{}
	for i := 0; i < dumps; i++ {
		if i%5 == 0 {
			d := c.do("POST", "/api/devices", []byte(fmt.Sprintf(`{"device_model_id":%d,"config":"{}"}`, mid)), "", 201)
			f.devices = append(f.devices, struct {
				id          int
				key, secret string
			}{int(d["id"].(float64)), d["key"].(string), d["secret"].(string)})
		}
		d := f.devices[len(f.devices)-1]
		req, _ := http.NewRequest("POST", "", nil)
		req.SetBasicAuth(d.key, d.secret)
		c.do("POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", dump, req.Header.Get("Authorization"), 201)
	}
	return f
}

// statuses counts core dumps by parse status through the admin API.
func statuses(c *client, f *fleet) map[string]int {
	out := map[string]int{}
	for _, d := range f.devices {
		for _, x := range c.do("GET", fmt.Sprintf("/api/devices/%d/coredumps", d.id), nil, "", 200)["coredumps"].([]any) {
			out[x.(map[string]any)["parse_status"].(string)]++
		}
	}
	return out
}

func waitAllParsed(t *testing.T, c *client, f *fleet, total int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := statuses(c, f)
		if st["PARSED"] == total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses %v after %v, want %d PARSED", st, timeout, total)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func metric(t *testing.T, url, name string) int {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

func TestDecodesSurviveSIGKILL(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	base := proctest.Env(env, "DECODE_TIMEOUT=5s")
	// Queue 50 decodes with no workers running.
	a := proctest.Start(t, append(base, "DECODE_WORKERS=0"))
	c := &client{t: t, url: a.URL, token: adminToken(t, a)}
	f := seed(t, c, 50)
	if st := statuses(c, f); st["PENDING"] != 50 {
		t.Fatalf("before workers: %v", st)
	}
	a.Kill()
	// Workers start; kill them mid-way.
	b := proctest.Start(t, append(base, "DECODE_WORKERS=2"))
	c.url = b.URL
	deadline := time.Now().Add(60 * time.Second)
	for statuses(c, f)["PARSED"] < 5 {
		if time.Now().After(deadline) {
			t.Fatal("no decodes happened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Kill()
	// A fresh process finishes the rest, including jobs that were running when killed.
	p := proctest.Start(t, append(base, "DECODE_WORKERS=2"))
	c.url = p.URL
	mid := statuses(c, f)
	if mid["PARSED"] == 50 {
		t.Log("all decodes finished before the kill; the kill did not interrupt decoding")
	}
	waitAllParsed(t, c, f, 50, 120*time.Second)
	t.Logf("parsed before kill: %d; all 50 parsed after restart", mid["PARSED"])
}

func TestTwoReplicasDecodeEachDumpOnce(t *testing.T) {
	env := testenv.New(t, "postgres+s3")
	base := proctest.Env(env, "DECODE_WORKERS=2")
	a := proctest.Start(t, base)
	c := &client{t: t, url: a.URL, token: adminToken(t, a)}
	b := proctest.Start(t, base)
	f := seed(t, c, 100)
	waitAllParsed(t, c, f, 100, 180*time.Second)
	na := metric(t, a.URL, "iotsupport_decode_duration_seconds_count")
	nb := metric(t, b.URL, "iotsupport_decode_duration_seconds_count")
	if na+nb != 100 {
		t.Fatalf("decoder invocations: %d + %d = %d, want exactly 100", na, nb, na+nb)
	}
	t.Logf("replica A decoded %d, replica B %d", na, nb)
}
