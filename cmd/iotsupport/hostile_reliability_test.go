package main_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// snapshot is every table row count that an upload could change, and the store listing.
func snapshot(t *testing.T, env *testenv.Env) string {
	t.Helper()
	var sb strings.Builder
	for _, tbl := range []string{"device_models", "devices", "firmware_versions", "coredumps", "coredump_uploads", "blob_deletions", "api_tokens"} {
		fmt.Fprintf(&sb, "%s=%d ", tbl, testenv.Count(t, env.DB, tbl))
	}
	var keys []string
	if err := blob.Walk(context.Background(), env.Store, "", func(i blob.Info) error {
		keys = append(keys, fmt.Sprintf("%s:%d", i.Key, i.Size))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sb.WriteString(strings.Join(keys, ","))
	return sb.String()
}

// zipOf builds a ZIP from raw headers and bodies (stored as given).
func zipOf(t *testing.T, members ...func(*zip.Writer) error) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		if err := m(zw); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// stall opens a connection, sends headers and part of a declared body, then stops
// sending. It returns the status line the server answers (or "" when it just closes)
// and how long that took.
func stall(t *testing.T, base, path, auth string, declared, sent int) (string, time.Duration) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, addr, auth, declared)
	_, _ = conn.Write(bytes.Repeat([]byte{'x'}, sent))
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), time.Since(start)
}

// TestHostileInput sends ZIP bombs, path-traversal member names, 4 GiB declared sizes,
// truncated and stalled bodies, bodies over every limit, malformed JSON and wrong content
// types: each gets a 4xx and nothing changes (table row counts and the store listing are
// the same before and after).
func TestHostileInput(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		base := proctest.Env(env, "FIRMWARE_MAX_BUNDLE_BYTES=16777216", "COREDUMP_MAX_BYTES=65536", "REQUEST_BODY_TIMEOUT=1s",
			"DECODE_WORKERS=0", "FSCK_INTERVAL=0")
		p := proctest.Start(t, base)
		c := &client{t: t, url: p.URL, token: adminToken(t, p)}
		admin := "Bearer " + c.token
		m := c.do("POST", "/api/device-models", []byte(`{"code":"hostile","name":"Hostile"}`), "", 201)
		mid := int(m["id"].(float64))
		fwPath := fmt.Sprintf("/api/device-models/%d/firmware", mid)
		good := bundletest.BuildCase(t, "hostile", "esp32c3", bundletest.Options{Version: "1.0.0"})
		if code, b := raw(t, "POST", p.URL+fwPath, good, admin, "application/zip"); code != 200 && code != 201 {
			t.Fatalf("good bundle: %d %s", code, b)
		}
		d := c.do("POST", "/api/devices", []byte(fmt.Sprintf(`{"device_model_id":%d,"config":"{}"}`, mid)), "", 201)
		devAuth := "Basic " + basic(d["key"].(string), d["secret"].(string))
		dumpPath := "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0"
		if code, b := raw(t, "POST", p.URL+dumpPath, []byte("a dump"), devAuth, ""); code != 201 {
			t.Fatalf("good dump: %d %s", code, b)
		}
		before := snapshot(t, env)

		bomb := zipOf(t, func(zw *zip.Writer) error {
			w, err := zw.Create("hostile.bin")
			if err == nil {
				_, err = w.Write(make([]byte, 100<<20)) // 100 MiB of zeros, ~100 KiB compressed
			}
			return err
		})
		traversal := bundletest.BuildCase(t, "hostile", "esp32c3", bundletest.Options{Version: "1.0.1",
			Extra: []bundletest.Member{{Name: "../../outside.bin", Data: []byte("escape")}}})
		traversal2 := bundletest.BuildCase(t, "hostile", "esp32c3", bundletest.Options{Version: "1.0.2",
			Extra: []bundletest.Member{{Name: "/etc/passwd", Data: []byte("root")}}})
		huge := zipOf(t, func(zw *zip.Writer) error {
			w, err := zw.CreateRaw(&zip.FileHeader{Name: "hostile.bin", Method: zip.Store, CompressedSize64: 4, UncompressedSize64: 4 << 30, CRC32: 0})
			if err == nil {
				_, err = w.Write([]byte("abcd"))
			}
			return err
		})
		cases := []struct {
			name, method, path, auth, ctype string
			body                            []byte
		}{
			{"zip bomb", "POST", fwPath, admin, "application/zip", bomb},
			{"path traversal member", "POST", fwPath, admin, "application/zip", traversal},
			{"absolute member name", "POST", fwPath, admin, "application/zip", traversal2},
			{"4 GiB declared member", "POST", fwPath, admin, "application/zip", huge},
			{"truncated bundle", "POST", fwPath, admin, "application/zip", good[:len(good)/2]},
			{"not a zip", "POST", fwPath, admin, "application/zip", []byte("PK\x03\x04 but not really")},
			{"empty bundle", "POST", fwPath, admin, "application/zip", nil},
			{"bundle over limit", "POST", fwPath, admin, "application/zip", make([]byte, 17<<20)},
			{"multipart without file", "POST", fwPath, admin, "multipart/form-data; boundary=x", []byte("--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nhi\r\n--x--\r\n")},
			{"multipart malformed", "POST", fwPath, admin, "multipart/form-data; boundary=x", []byte("garbage")},
			{"core dump over limit", "POST", dumpPath, devAuth, "", make([]byte, 65537)},
			{"empty core dump", "POST", dumpPath, devAuth, "", nil},
			{"core dump bad version", "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=../x", devAuth, "", []byte("dump")},
			{"core dump bad chip", "POST", "/api/iot/coredump?chip=z80&firmware_version=1.0.0", devAuth, "", []byte("dump")},
			{"malformed JSON", "POST", "/api/device-models", admin, "application/json", []byte(`{"code":`)},
			{"JSON wrong types", "POST", "/api/device-models", admin, "application/json", []byte(`{"code":5,"name":[]}`)},
			{"JSON over limit", "POST", "/api/device-models", admin, "application/json", append(append([]byte(`{"code":"x","name":"`), bytes.Repeat([]byte("a"), 2<<20)...), `"}`...)},
			{"wrong content type", "POST", "/api/device-models", admin, "text/plain", []byte(`{"code":"plain","name":"Plain"}`)},
			{"device JSON malformed", "POST", "/api/devices", admin, "application/json", []byte(`[1,2`)},
			{"bad version path", "DELETE", fmt.Sprintf("/api/device-models/%d/firmware-versions/..%%2F..%%2Fx", mid), admin, "", nil},
		}
		for _, tc := range cases {
			code, b := raw(t, tc.method, p.URL+tc.path, tc.body, tc.auth, tc.ctype)
			if code < 400 || code >= 500 || !bytes.Contains(b, []byte(`"code":"`)) || !bytes.Contains(b, []byte(`"correlationId":"`)) {
				t.Errorf("%s: want a 4xx with the error envelope, got %d %s", tc.name, code, b)
			} else {
				t.Logf("%-24s %d %.120s", tc.name, code, b)
			}
		}
		// Slow loris: a body that stops arriving is cut off after REQUEST_BODY_TIMEOUT.
		for _, s := range []struct{ name, path, auth string }{{"stalled bundle", fwPath, admin}, {"stalled core dump", dumpPath, devAuth}} {
			line, took := stall(t, p.URL, s.path, s.auth, 60000, 1000)
			if took > 10*time.Second || (line != "" && !strings.Contains(line, " 4")) {
				t.Errorf("%s: %q after %v", s.name, line, took)
			}
			t.Logf("%-24s %q after %v", s.name, line, took.Round(time.Millisecond))
		}
		// Truncated body: the client declares more than it sends and hangs up.
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: 5000\r\n\r\nshort", dumpPath, devAuth)
		conn.Close()
		time.Sleep(300 * time.Millisecond)

		if after := snapshot(t, env); after != before {
			t.Errorf("hostile input changed state:\nbefore %s\nafter  %s", before, after)
		}
		// The server is still healthy and serves the good data.
		if resp, err := http.Get(p.URL + "/health/readyz"); err != nil || resp.StatusCode != 200 {
			t.Errorf("readyz after hostile input: %v %v", resp, err)
		}
	})
}
