package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/httpapi"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// serve runs the app's real HTTP server (as Serve builds it) on a loopback listener.
func serve(t *testing.T, s *apitest.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.App.HTTPServer(context.Background())
	go func() { _ = srv.Serve(httpapi.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// failSafe only stops a broken server from hanging the test; the assertion is that the
// server closes the connection, never how fast.
const failSafe = 30 * time.Second

// TestUnreadBodiesCannotHoldConnections: a client declaring a body and trickling it a
// byte at a time to a route whose handler never reads it (401, 403, 404, a public route,
// a handler failing after the first byte) gets its answer and a closed connection once
// REQUEST_BODY_TIMEOUT has passed; net/http's own discard of unread bodies has no deadline.
func TestUnreadBodiesCannotHoldConnections(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "REQUEST_BODY_TIMEOUT", "300ms")
		addr := serve(t, s)
		cases := []struct {
			name, method, path, auth string
			status                   int
		}{
			{"401", "POST", "/api/device-models", "", 401},
			{"403", "POST", "/api/device-models", "Bearer " + s.Tokens["viewer"], 403},
			{"404", "POST", "/nope", "", 404},
			{"public route", "GET", "/api/pipeline/upload.sh", "", 200},
			{"unknown model", "POST", "/api/device-models/999999/firmware", "Bearer " + s.Tokens["admin"], 404},
		}
		var wg sync.WaitGroup
		for _, tc := range cases {
			wg.Go(func() {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				hdr := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/zip\r\nContent-Length: 100000\r\n", tc.method, tc.path, addr)
				if tc.auth != "" {
					hdr += "Authorization: " + tc.auth + "\r\n"
				}
				if _, err := io.WriteString(conn, hdr+"\r\n"); err != nil {
					t.Error(err)
					return
				}
				stop := make(chan struct{})
				defer close(stop)
				go func() { // the slow loris: one byte every 20 ms, as long as the server reads
					for {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
						}
						if _, err := conn.Write([]byte{'P'}); err != nil {
							return
						}
					}
				}()
				_ = conn.SetReadDeadline(time.Now().Add(failSafe))
				br := bufio.NewReader(conn)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Errorf("%s: no answer while the body trickles: %v", tc.name, err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
				}
				// The server must close the connection: a read ends (EOF or reset), never
				// in our own fail-safe deadline.
				_, err = br.ReadByte()
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%s: the server kept the connection open (read: %v)", tc.name, err)
				}
			})
		}
		wg.Wait()
		// A body that arrives promptly is still read and answered on a kept-alive connection.
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)["id"].(float64))
		c := &http.Client{}
		for range 2 {
			req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/api/device-models/%d/firmware", addr, mid),
				bytes.NewReader(bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"})))
			req.Header.Set("Authorization", "Bearer "+s.Tokens["admin"])
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("upload: %d", resp.StatusCode)
			}
		}
	})
}

// TestNetHTTPErrorsUseEnvelope: the replies net/http writes itself, before any handler
// (malformed requests, oversized headers, unsupported transfer encodings), carry the
// error envelope and the security headers; ordinary responses, downloads included,
// pass through the listener unchanged.
func TestNetHTTPErrorsUseEnvelope(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		addr := serve(t, s)
		for _, tc := range []struct {
			name, request string
			status        int
		}{
			{"malformed Host", "GET /health/healthz HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
			{"missing Host", "GET /health/healthz HTTP/1.1\r\n\r\n", 400},
			{"malformed header line", "GET /health/healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400},
			{"bad request line", "GARBAGE\r\n\r\n", 400},
			{"unsupported transfer encoding", "POST /api/device-models HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
			{"oversized headers", "GET /health/healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1<<20+8192) + "\r\n\r\n", 431},
		} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(failSafe))
			go func() { _, _ = io.WriteString(conn, tc.request) }()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			conn.Close()
			var env map[string]any
			_ = json.Unmarshal(body, &env)
			details, _ := env["details"].(map[string]any)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" ||
				env["error"] == nil || details["message"] == nil || env["code"] == nil ||
				env["correlationId"] == nil || env["correlationId"] != resp.Header.Get("X-Request-ID") {
				t.Errorf("%s: %d %v %s, want %d with the envelope", tc.name, resp.StatusCode, resp.Header, body, tc.status)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
				t.Errorf("%s: security headers missing: %v", tc.name, resp.Header)
			}
		}

		// Downloads through the listener (sendfile path on the local store) are intact.
		mid := int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)["id"].(float64))
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0.0"}))
		path := fmt.Sprintf("/api/device-models/%d/firmware", mid)
		want := s.Expect(200, "GET", path, nil).Body
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.Tokens["admin"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, want) || len(want) == 0 {
			t.Fatalf("download through the listener: %d, %d bytes, want %d", resp.StatusCode, len(got), len(want))
		}
	})
}
