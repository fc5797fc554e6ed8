package main_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// slowBody sends b in pieces over about d.
type slowBody struct {
	b    []byte
	step int
	wait time.Duration
}

func (s *slowBody) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.wait)
	n := copy(p[:min(len(p), s.step)], s.b)
	s.b = s.b[n:]
	return n, nil
}

// TestGracefulShutdown: SIGTERM while a bundle upload is still arriving. The server stops
// accepting new connections, the upload in flight finishes (2xx, committed, readable after a
// restart) and the process exits 0. A second upload that stalls past SHUTDOWN_TIMEOUT is cut
// off and rolls back: no row, no object, fsck clean.
func TestGracefulShutdown(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		base := proctest.Env(env, "DECODE_WORKERS=1", "FSCK_INTERVAL=0")
		p := proctest.Start(t, append(base, "SHUTDOWN_TIMEOUT=20s"))
		c := &client{t: t, url: p.URL, token: adminToken(t, p)}
		admin := "Bearer " + c.token
		m := c.do("POST", "/api/device-models", []byte(`{"code":"graceful","name":"Graceful"}`), "", 201)
		mid := int(m["id"].(float64))
		b := bundletest.BuildCase(t, "graceful", "esp32c3", bundletest.Options{Version: "1.0.0"})

		// An upload spread over ~1 s; SIGTERM arrives in the middle of it.
		type result struct {
			code int
			body string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/device-models/%d/firmware", p.URL, mid), &slowBody{b: b, step: len(b)/20 + 1, wait: 50 * time.Millisecond})
			req.ContentLength = int64(len(b))
			req.Header.Set("Authorization", admin)
			req.Header.Set("Content-Type", "application/zip")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			rb, _ := io.ReadAll(resp.Body)
			done <- result{code: resp.StatusCode, body: string(rb)}
		}()
		time.Sleep(500 * time.Millisecond)
		sigterm := time.Now()
		stopped := make(chan error, 1)
		go func() { stopped <- p.Stop(30 * time.Second) }()
		time.Sleep(200 * time.Millisecond)
		if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(p.URL, "http://"), time.Second); err == nil {
			conn.Close()
			t.Errorf("new connections still accepted after SIGTERM")
		}
		r := <-done
		if r.err != nil || (r.code != 200 && r.code != 201) {
			t.Errorf("upload in flight during SIGTERM: %d %v %s", r.code, r.err, r.body)
		}
		if err := <-stopped; err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		t.Logf("upload finished %v after SIGTERM; process exited cleanly", time.Since(sigterm).Round(time.Millisecond))

		// The committed upload is there after a restart.
		p = proctest.Start(t, append(base, "SHUTDOWN_TIMEOUT=3s"))
		got := download(t, p.URL, admin, fmt.Sprintf("/api/device-models/%d/firmware-versions/1.0.0/firmware.bin", mid))
		if want := bundleMembers(t, "graceful", b)["firmware.bin"]; string(got) != string(want) {
			t.Errorf("firmware.bin after restart differs")
		}

		// An upload that stalls past SHUTDOWN_TIMEOUT is cut off and leaves nothing.
		before := snapshot(t, env)
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /api/device-models/%d/firmware HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/zip\r\nContent-Length: %d\r\n\r\n", mid, admin, len(b))
		_, _ = conn.Write(b[:len(b)/2])
		time.Sleep(200 * time.Millisecond)
		sigterm = time.Now()
		if err := p.Stop(30 * time.Second); err != nil {
			t.Errorf("exit with a stalled upload: %v", err)
		}
		took := time.Since(sigterm)
		if took > 8*time.Second {
			t.Errorf("shutdown took %v with SHUTDOWN_TIMEOUT=3s", took)
		}
		if after := snapshot(t, env); after != before {
			t.Errorf("stalled upload changed state:\nbefore %s\nafter  %s", before, after)
		}
		if out, errOut, code := proctest.Run(t, base, "fsck", "--grace", "0s"); code != 0 {
			t.Errorf("fsck: exit %d\n%s%s", code, out, errOut)
		}
		t.Logf("stalled upload: process exited %v after SIGTERM, nothing stored", took.Round(time.Millisecond))
	})
}
