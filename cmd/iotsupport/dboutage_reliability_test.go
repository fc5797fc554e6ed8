package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// tcpProxy sits between the service and PostgreSQL so a test can simulate the database
// going away (every connection closed, new ones refused) without touching the shared server.
type tcpProxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]struct{}
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{addr: "127.0.0.1:0", target: target, conns: map[net.Conn]struct{}{}}
	p.up(t)
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) up(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after the cut
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close(); c.Close() }()
			go func() { _, _ = io.Copy(c, s); s.Close(); c.Close() }()
		}
	}()
}

// down closes the listener and every proxied connection.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// TestDatabaseOutage cuts the service's PostgreSQL connections (through a TCP proxy) while
// requests keep coming: every request answers 503 with the error envelope while the
// database is away (none 500), readiness is 503, and after the connection is restored the
// same process serves requests again.
func TestDatabaseOutage(t *testing.T) {
	dsn := testenv.PostgresURL(t)
	u, _ := url.Parse(dsn)
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	env := &testenv.Env{Name: "postgres+local", DatabaseURL: u.String(), StoreDir: t.TempDir()}
	env.DB = testenv.OpenDB(t, dsn)
	base := proctest.Env(env, "DECODE_WORKERS=1", "FSCK_INTERVAL=0")
	p := proctest.Start(t, base)
	c := &client{t: t, url: p.URL, token: adminToken(t, p)}
	admin := "Bearer " + c.token

	m := c.do("POST", "/api/device-models", []byte(`{"code":"dbout","name":"DB outage"}`), "", 201)
	mid := int(m["id"].(float64))
	if code, b := raw(t, "POST", fmt.Sprintf("%s/api/device-models/%d/firmware", p.URL, mid),
		bundletest.BuildCase(t, "dbout", "esp32c3", bundletest.Options{Version: "1.0.0"}), admin, "application/zip"); code != 200 && code != 201 {
		t.Fatalf("upload: %d %s", code, b)
	}
	d := c.do("POST", "/api/devices", []byte(fmt.Sprintf(`{"device_model_id":%d,"config":"{}"}`, mid)), "", 201)
	did := int(d["id"].(float64))
	devAuth := "Basic " + basic(d["key"].(string), d["secret"].(string))

	type op struct {
		name, method, path, auth string
		body                     func() []byte
		ok                       int
	}
	n := 0
	ops := []op{
		{"list models", "GET", "/api/device-models", admin, nil, 200},
		{"list dumps", "GET", fmt.Sprintf("/api/devices/%d/coredumps", did), admin, nil, 200},
		{"device firmware", "GET", "/api/iot/firmware", devAuth, nil, 200},
		{"admin firmware", "GET", fmt.Sprintf("/api/device-models/%d/firmware", mid), admin, nil, 200},
		{"dump upload", "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", devAuth, func() []byte { n++; return []byte(fmt.Sprintf("dump %d", n)) }, 201},
		{"create device", "POST", "/api/devices", admin, func() []byte { return []byte(fmt.Sprintf(`{"device_model_id":%d,"config":"{}"}`, mid)) }, 201},
		{"readyz", "GET", "/health/readyz", "", nil, 200},
	}
	run := func(o op) (int, []byte) {
		var body []byte
		ctype := ""
		if o.body != nil {
			body = o.body()
			if body[0] == '{' {
				ctype = "application/json"
			}
		}
		return raw(t, o.method, p.URL+o.path, body, o.auth, ctype)
	}
	for _, o := range ops {
		if code, b := run(o); code != o.ok {
			t.Fatalf("before the outage: %s: %d %s", o.name, code, b)
		}
	}
	before := testenv.Count(t, env.DB, "coredumps")

	proxy.down()
	down := map[string]int{}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, o := range ops {
			code, b := run(o)
			down[fmt.Sprintf("%s %d", o.name, code)]++
			if code == 503 {
				if o.name != "readyz" {
					want503(t, o.name+" during the outage", code, b)
				}
				continue
			}
			// Served from a connection still open or from memory is fine; 500 is not.
			if code >= 500 || (code != o.ok && code != 503) {
				t.Errorf("%s during the outage: %d %s", o.name, code, b)
			}
		}
	}
	proxy.up(t)
	outageEnd := time.Now()
	var recovered time.Duration
	for _, o := range ops {
		for {
			code, b := run(o)
			if code == o.ok {
				break
			}
			if code != 503 || time.Since(outageEnd) > 30*time.Second {
				t.Fatalf("%s after the database came back: %d %s", o.name, code, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	recovered = time.Since(outageEnd)
	keys := make([]string, 0, len(down))
	for k := range down {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s: %d; ", k, down[k])
	}
	t.Logf("during the outage: %s all endpoints answered again %v after the database came back", sb.String(), recovered.Round(time.Millisecond))
	if after := testenv.Count(t, env.DB, "coredumps"); after != before+1 {
		t.Errorf("core dumps: %d before, %d after one successful upload after the outage", before, after)
	}
	var list struct {
		Coredumps []json.RawMessage `json:"coredumps"`
	}
	_, b := raw(t, "GET", fmt.Sprintf("%s/api/devices/%d/coredumps", p.URL, did), nil, admin, "")
	_ = json.Unmarshal(b, &list)
	if len(list.Coredumps) != before+1 {
		t.Errorf("listed %d dumps, want %d", len(list.Coredumps), before+1)
	}
}
