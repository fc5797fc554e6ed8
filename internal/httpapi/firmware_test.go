package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"net/url"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func newModel(t *testing.T, s *apitest.Server, code string) int {
	t.Helper()
	return int(s.Expect(201, "POST", "/api/device-models", map[string]any{"code": code, "name": code}).Map(t)["id"].(float64))
}

func newDevice(t *testing.T, s *apitest.Server, modelID int) (key, secret string) {
	t.Helper()
	d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": modelID, "config": `{}`}).Map(t)
	return d["key"].(string), d["secret"].(string)
}

func listKeys(t *testing.T, st blob.Store, prefix string) []string {
	t.Helper()
	var keys []string
	if err := blob.Walk(context.Background(), st, prefix, func(i blob.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	return keys
}

func drain(t *testing.T, s *apitest.Server) {
	t.Helper()
	if _, _, err := s.App.Outbox.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFirmwareUploadStoresVerifiedArtifacts(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		for _, tc := range []string{"esp32", "esp32c3", "esp32c6"} {
			code := "m_" + tc
			mid := newModel(t, s, code)
			zip := bundletest.BuildCase(t, code, tc, bundletest.Options{Version: "1.9.0", GitCommit: "abc123"})
			var r *apitest.Response
			if tc == "esp32c3" {
				// Multipart field "file" through the pipeline API.
				var buf bytes.Buffer
				mw := multipart.NewWriter(&buf)
				fw, _ := mw.CreateFormFile("file", "bundle.zip")
				_, _ = fw.Write(zip)
				_ = mw.Close()
				r = s.Role("pipeline").Expect(200, "POST", "/api/pipeline/models/"+code+"/firmware", buf.Bytes(), "Content-Type", mw.FormDataContentType())
			} else {
				r = s.Role("editor").Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), zip, "Content-Type", "application/zip")
			}
			got := r.Map(t)
			if got["code"] != code || got["firmware_version"] != "1.9.0" || int(got["id"].(float64)) != mid {
				t.Fatalf("%s upload: %v", tc, got)
			}
			vs := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", mid), nil).Map(t)
			v := vs["firmware_versions"].([]any)[0].(map[string]any)
			elfBytes := readFile(t, espimagetest.ELFPath(t, tc))
			elfSum := sha256.Sum256(elfBytes)
			wantChip := map[string]string{"esp32": "esp32", "esp32c3": "esp32c3", "esp32c6": "esp32c6"}[tc]
			if v["version"] != "1.9.0" || v["current"] != true || v["chip"] != wantChip || v["elf_sha256"] != hex.EncodeToString(elfSum[:]) ||
				v["git_commit"] != "abc123" || v["project_name"] == "" || v["idf_version"] == "" || vs["current"] != "1.9.0" {
				t.Fatalf("%s version identity: %v", tc, v)
			}
			// Each artifact is stored under its generic name with the recorded size and hash.
			arts := v["artifacts"].(map[string]any)
			keys := listKeys(t, env.Store, "firmware/"+code+"/1.9.0/")
			if len(keys) != 5 || len(arts) != 5 {
				t.Fatalf("%s objects %v artifacts %v", tc, keys, arts)
			}
			for name, a := range arts {
				body := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions/1.9.0/%s", mid, name), nil).Body
				sum := sha256.Sum256(body)
				am := a.(map[string]any)
				if hex.EncodeToString(sum[:]) != am["sha256"] || int(am["size"].(float64)) != len(body) {
					t.Fatalf("%s %s: stored bytes differ from recorded identity", tc, name)
				}
				if name == "firmware.elf" && !bytes.Equal(body, elfBytes) {
					t.Fatalf("%s: stored ELF differs", tc)
				}
			}
			m := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d", mid), nil).Map(t)
			if m["firmware_version"] != "1.9.0" {
				t.Fatalf("model pointer: %v", m)
			}
		}
		pv := s.Role("pipeline").Expect(200, "GET", "/api/pipeline/models/m_esp32/firmware-version", nil).Map(t)
		if pv["code"] != "m_esp32" || pv["firmware_version"] != "1.9.0" {
			t.Fatalf("pipeline version: %v", pv)
		}
		s.Role("pipeline").Expect(404, "GET", "/api/pipeline/models/nope/firmware-version", nil)
		s.Role("pipeline").Expect(404, "POST", "/api/pipeline/models/nope/firmware", []byte("x"))
	})
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := readAll(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFirmwareReuploadRules(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "lamp")
		path := fmt.Sprintf("/api/device-models/%d/firmware", mid)
		v1 := bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "2.0.0"})
		other := bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "2.1.0"})
		s.Expect(200, "POST", path, v1)
		first := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", mid), nil).Map(t)["firmware_versions"].([]any)[0].(map[string]any)["uploaded_at"].(string)
		s.Expect(200, "POST", path, other)
		time.Sleep(20 * time.Millisecond)
		// Identical content again: accepted, current again, upload time refreshed.
		s.Expect(200, "POST", path, v1)
		vs := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", mid), nil).Map(t)
		top := vs["firmware_versions"].([]any)[0].(map[string]any)
		if vs["current"] != "2.0.0" || top["version"] != "2.0.0" || top["uploaded_at"].(string) <= first {
			t.Fatalf("identical re-upload: %v", vs)
		}
		// Same version, different build: refused unless replace=true.
		changed := bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "2.0.0", GitCommit: "other"})
		r := s.Expect(409, "POST", path, changed).Map(t)
		if r["code"] != "RECORD_EXISTS" {
			t.Fatalf("%v", r)
		}
		s.Expect(200, "POST", path+"?replace=true", changed)
		got := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions/2.0.0/version.json", mid), nil).Body
		if !strings.Contains(string(got), "other") {
			t.Fatalf("replace did not store the new version.json: %s", got)
		}
	})
}

func TestFirmwareValidationFailuresWriteNothing(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "FIRMWARE_MAX_BUNDLE_BYTES", "2000000")
		mid := newModel(t, s, "lamp")
		path := fmt.Sprintf("/api/device-models/%d/firmware", mid)
		cases := map[string][]byte{
			"empty":          {},
			"not a zip":      []byte("hello"),
			"missing member": bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Omit: []string{"sdkconfig"}}),
			"wrong model":    bundletest.BuildCase(t, "other", "esp32c3", bundletest.Options{}),
			"elf mismatch": bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{
				Image: espimagetest.Options{ELFSHA256: &[32]byte{1, 2, 3}}}),
			"bad version": bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "1.0/../x"}),
		}
		for name, body := range cases {
			r := s.Expect(400, "POST", path, body).Map(t)
			if r["code"] != "VALIDATION_FAILED" || r["error"] == "" {
				t.Fatalf("%s: %v", name, r)
			}
		}
		big := bytes.Repeat([]byte("x"), 2000001)
		if r := s.Expect(413, "POST", path, big).Map(t); r["code"] != "PAYLOAD_TOO_LARGE" {
			t.Fatalf("too large: %v", r)
		}
		if n := testenv.Count(t, env.DB, "firmware_versions"); n != 0 {
			t.Fatalf("%d version rows after failures", n)
		}
		if keys := listKeys(t, env.Store, "firmware/"); len(keys) != 0 {
			t.Fatalf("objects after failures: %v", keys)
		}
		m := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d", mid), nil).Map(t)
		if m["firmware_version"] != nil {
			t.Fatalf("current changed: %v", m)
		}
	})
}

func TestFirmwareRetentionKeepsCurrentAndDeletesAfterCommit(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, "MAX_FIRMWARES", "2")
		mid := newModel(t, s, "lamp")
		path := fmt.Sprintf("/api/device-models/%d/firmware", mid)
		for _, v := range []string{"1.0.0", "1.1.0"} {
			s.Expect(200, "POST", path, bundletest.BuildCase(t, "lamp", "esp32", bundletest.Options{Version: v}))
		}
		// Pin the oldest; then two more uploads: 1.0.0 stays while current.
		s.Expect(200, "PUT", fmt.Sprintf("/api/device-models/%d/firmware-version", mid), map[string]any{"version": "1.0.0"})
		s.Expect(409, "DELETE", fmt.Sprintf("/api/device-models/%d/firmware-versions/1.0.0", mid), nil)
		s.Expect(200, "POST", path, bundletest.BuildCase(t, "lamp", "esp32", bundletest.Options{Version: "1.2.0"}))
		versions := func() []string {
			var out []string
			for _, v := range s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", mid), nil).Map(t)["firmware_versions"].([]any) {
				out = append(out, v.(map[string]any)["version"].(string))
			}
			return out
		}
		if got := strings.Join(versions(), ","); got != "1.2.0,1.1.0" {
			t.Fatalf("after third upload: %s", got)
		}
		// 1.0.0's objects are queued, not yet deleted; the worker removes them.
		if keys := listKeys(t, env.Store, "firmware/lamp/1.0.0/"); len(keys) != 5 {
			t.Fatalf("objects deleted before the outbox ran: %v", keys)
		}
		drain(t, s)
		if keys := listKeys(t, env.Store, "firmware/lamp/1.0.0/"); len(keys) != 0 {
			t.Fatalf("pruned objects left: %v", keys)
		}
		s.Expect(200, "POST", path, bundletest.BuildCase(t, "lamp", "esp32", bundletest.Options{Version: "1.3.0"}))
		if got := strings.Join(versions(), ","); got != "1.3.0,1.2.0" {
			t.Fatalf("after fourth upload: %s", got)
		}
		s.Expect(204, "DELETE", fmt.Sprintf("/api/device-models/%d/firmware-versions/1.2.0", mid), nil)
		s.Expect(404, "DELETE", fmt.Sprintf("/api/device-models/%d/firmware-versions/1.2.0", mid), nil)
		drain(t, s)
		if keys := listKeys(t, env.Store, "firmware/lamp/"); len(keys) != 5 || !strings.HasPrefix(keys[0], "firmware/lamp/1.3.0/") {
			t.Fatalf("objects: %v", keys)
		}
		// Deleting the model (no devices) removes every version's objects.
		s.Expect(204, "DELETE", fmt.Sprintf("/api/device-models/%d", mid), nil)
		drain(t, s)
		if keys := listKeys(t, env.Store, "firmware/"); len(keys) != 0 {
			t.Fatalf("objects after model delete: %v", keys)
		}
	})
}

// failingStore fails the Nth Put.
type failingStore struct {
	blob.Store
	puts   atomic.Int32
	failAt int32
}

func (f *failingStore) Put(ctx context.Context, key string, r io.Reader, size int64, ct string) error {
	if f.puts.Add(1) == f.failAt {
		return fmt.Errorf("injected: %w", blob.ErrUnavailable)
	}
	return f.Store.Put(ctx, key, r, size, ct)
}

func TestFirmwarePartialWriteFailureLeavesNothing(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		fs := &failingStore{Store: env.Store, failAt: 4}
		env.Store = fs
		s := apitest.Start(t, env)
		mid := newModel(t, s, "lamp")
		r := s.Expect(503, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "3.0.0"}))
		if r.Map(t)["code"] != "SERVICE_UNAVAILABLE" {
			t.Fatalf("%s", r.Body)
		}
		if n := testenv.Count(t, env.DB, "firmware_versions"); n != 0 {
			t.Fatalf("row left: %d", n)
		}
		if m := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d", mid), nil).Map(t); m["firmware_version"] != nil {
			t.Fatalf("current changed: %v", m)
		}
		drain(t, s)
		if keys := listKeys(t, fs.Store, "firmware/"); len(keys) != 0 {
			t.Fatalf("objects left: %v", keys)
		}
	})
}

func TestFirmwareStoreOutageDuringUpload(t *testing.T) {
	cfg, stop, start := testenv.StoppableS3(t)
	env := testenv.New(t, "postgres+s3")
	st, err := blob.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	env.Store, env.S3 = st, &cfg
	s := apitest.Start(t, env)
	mid := newModel(t, s, "lamp")
	zip := bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "4.0.0"})
	stop()
	s.Expect(503, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), zip)
	resp, err := http.Get(s.URL + "/health/readyz")
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(rb), `"storage":{"error"`) {
		t.Fatalf("readyz during outage: %d %s", resp.StatusCode, rb)
	}
	if n := testenv.Count(t, env.DB, "firmware_versions"); n != 0 {
		t.Fatalf("row committed during outage")
	}
	start()
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), zip)
	if keys := listKeys(t, st, "firmware/"); len(keys) != 5 {
		t.Fatalf("objects after recovery: %v", keys)
	}
}

func TestFirmwareDownloads(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "lamp")
		key, secret := newDevice(t, s, mid)
		dev := s.Basic(key, secret)
		if v := dev.Expect(200, "GET", "/api/iot/firmware-version", nil).Map(t); v["firmware_version"] != nil {
			t.Fatalf("%v", v)
		}
		dev.Expect(404, "GET", "/api/iot/firmware", nil)
		s.Expect(404, "GET", fmt.Sprintf("/api/device-models/%d/firmware", mid), nil)

		zip := bundletest.BuildCase(t, "lamp", "esp32c6", bundletest.Options{Version: "5.0.0", Image: espimagetest.Options{PadTo: 300000}})
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), zip)
		img := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions/5.0.0/firmware.bin", mid), nil).Body
		sum := sha256.Sum256(img)
		etag := `"` + hex.EncodeToString(sum[:]) + `"`

		v := dev.Expect(200, "GET", "/api/iot/firmware-version", nil).Map(t)
		if v["firmware_version"] != "5.0.0" || int(v["size"].(float64)) != len(img) || `"`+v["sha256"].(string)+`"` != etag {
			t.Fatalf("firmware-version: %v", v)
		}
		for _, c := range []*apitest.Server{dev, s.Role("viewer")} {
			p := "/api/iot/firmware"
			if c != dev {
				p = fmt.Sprintf("/api/device-models/%d/firmware", mid)
			}
			r := c.Expect(200, "GET", p, nil)
			if !bytes.Equal(r.Body, img) || r.Header.Get("Content-Length") != fmt.Sprint(len(img)) || r.Header.Get("ETag") != etag ||
				r.Header.Get("X-Firmware-Version") != "5.0.0" || r.Header.Get("Content-Disposition") != "attachment; filename=firmware-lamp.bin" ||
				r.Header.Get("Accept-Ranges") != "bytes" {
				t.Fatalf("full download headers: %v", r.Header)
			}
			r = c.Expect(206, "GET", p, nil, "Range", "bytes=4096-8191")
			if !bytes.Equal(r.Body, img[4096:8192]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 4096-8191/%d", len(img)) ||
				r.Header.Get("Content-Length") != "4096" {
				t.Fatalf("range: %v %d", r.Header, len(r.Body))
			}
			r = c.Expect(206, "GET", p, nil, "Range", "bytes=-100")
			if !bytes.Equal(r.Body, img[len(img)-100:]) {
				t.Fatal("suffix range")
			}
			c.Expect(416, "GET", p, nil, "Range", fmt.Sprintf("bytes=%d-", len(img)))
			r = c.Do("GET", p, nil, "If-None-Match", etag)
			if r.Status != 304 || len(r.Body) != 0 {
				t.Fatalf("If-None-Match: %d", r.Status)
			}
		}
		// A missing object is 404, not 500.
		if err := env.Store.Delete(context.Background(), "firmware/lamp/5.0.0/firmware.bin"); err != nil {
			t.Fatal(err)
		}
		dev.Expect(404, "GET", "/api/iot/firmware", nil)
	})
}

func TestFirmwareMQTTNotifications(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	topicMsgs := subscribe(t, "iotsupport/updates/#")
	// Firmware notifications wait DEVICE_CACHE_TTL, so a notified device asking any
	// replica gets the new version; config ones go out at once.
	const ttl = time.Second
	s := apitest.Start(t, env, "MQTT_URL", "mqtt://127.0.0.1:1883", "MQTT_CLIENT_ID", "iotsupport-test-"+fmt.Sprint(time.Now().UnixNano()),
		"DEVICE_CACHE_TTL", ttl.String())
	mid := newModel(t, s, "lamp")
	k1, _ := newDevice(t, s, mid)
	k2, _ := newDevice(t, s, mid)
	other := newModel(t, s, "other")
	newDevice(t, s, other)
	waitConnected(t, s)
	bundle := bundletest.BuildCase(t, "lamp", "esp32", bundletest.Options{Version: "6.0.0"})
	uploaded := time.Now()
	s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundle)
	d1 := s.Expect(200, "GET", "/api/devices?model_id="+fmt.Sprint(mid), nil).Map(t)["devices"].([]any)[0].(map[string]any)
	s.Expect(200, "PUT", fmt.Sprintf("/api/devices/%d", int(d1["id"].(float64))), map[string]any{"config": `{"x":1}`, "active": true})
	want := map[string]bool{
		`iotsupport/updates/firmware {"client_id":"iotdevice-lamp-` + k1 + `","firmware_version":"6.0.0"}`: true,
		`iotsupport/updates/firmware {"client_id":"iotdevice-lamp-` + k2 + `","firmware_version":"6.0.0"}`: true,
		`iotsupport/updates/config {"client_id":"iotdevice-lamp-` + d1["key"].(string) + `"}`:              true,
	}
	deadline := time.After(10 * time.Second)
	got := map[string]bool{}
	for len(got) < len(want) {
		select {
		case m := <-topicMsgs:
			got[m] = true
			if !want[m] {
				t.Fatalf("unexpected message %s", m)
			}
			if strings.HasPrefix(m, "iotsupport/updates/firmware ") && time.Since(uploaded) < ttl {
				t.Errorf("firmware notification %v after the upload began, before DEVICE_CACHE_TTL %v", time.Since(uploaded), ttl)
			}
		case <-deadline:
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func waitConnected(t *testing.T, s *apitest.Server) {
	type waiter interface{ AwaitConnection(context.Context) error }
	w, ok := s.App.Notifier.(waiter)
	if !ok {
		t.Fatal("MQTT notifier not configured")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.AwaitConnection(ctx); err != nil {
		t.Fatalf("MQTT at 127.0.0.1:1883 is required (mosquitto -d -c /etc/mosquitto/mosquitto.conf): %v", err)
	}
}

// subscribe returns "topic payload" strings received from the real broker.
func subscribe(t *testing.T, filter string) <-chan string {
	t.Helper()
	out := make(chan string, 100)
	u, _ := url.Parse("mqtt://127.0.0.1:1883")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var once sync.Once
	ready := make(chan error, 1)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 10, CleanStartOnInitialConnection: true,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
			once.Do(func() { ready <- err })
		},
		ClientConfig: paho.ClientConfig{ClientID: fmt.Sprintf("sub-%d", time.Now().UnixNano()),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				var v any
				if json.Unmarshal(pr.Packet.Payload, &v) == nil {
					b, _ := json.Marshal(v)
					out <- pr.Packet.Topic + " " + string(b)
				}
				return true, nil
			}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("MQTT at 127.0.0.1:1883 is required (mosquitto -d -c /etc/mosquitto/mosquitto.conf)")
	}
	t.Cleanup(func() { _ = cm.Disconnect(context.Background()) })
	return out
}

func readAll(p string) ([]byte, error) { return os.ReadFile(p) }

// stopAfter stops the real S3 server just before the Nth Put, so an upload dies mid-way.
type stopAfter struct {
	blob.Store
	puts atomic.Int32
	n    int32
	stop func()
}

func (s *stopAfter) Put(ctx context.Context, key string, r io.Reader, size int64, ct string) error {
	if s.puts.Add(1) == s.n {
		s.stop()
	}
	return s.Store.Put(ctx, key, r, size, ct)
}

func TestFirmwareStoreStoppedMidUpload(t *testing.T) {
	cfg, stop, start := testenv.StoppableS3(t)
	env := testenv.New(t, "postgres+s3")
	st, err := blob.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	env.Store, env.S3 = &stopAfter{Store: st, n: 3, stop: stop}, &cfg
	s := apitest.Start(t, env)
	mid := newModel(t, s, "lamp")
	s.Expect(503, "POST", fmt.Sprintf("/api/device-models/%d/firmware", mid), bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{Version: "7.0.0"}))
	if n := testenv.Count(t, env.DB, "firmware_versions"); n != 0 {
		t.Fatalf("row left: %d", n)
	}
	// Two objects were written before the outage; they could not be removed at once, so
	// they wait in the outbox and go once the store is back.
	start()
	if keys := listKeys(t, st, "firmware/"); len(keys) != 2 {
		t.Fatalf("objects written before the outage: %v", keys)
	}
	if m := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d", mid), nil).Map(t); m["firmware_version"] != nil {
		t.Fatalf("current changed: %v", m)
	}
	drain(t, s)
	if keys := listKeys(t, st, "firmware/"); len(keys) != 0 {
		t.Fatalf("objects left after the outbox drained: %v", keys)
	}
}
