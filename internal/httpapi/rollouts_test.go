package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/cohort"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

type deviceAnswer struct {
	FirmwareVersion *string `json:"firmware_version"`
	Size            *int64  `json:"size"`
	SHA256          *string `json:"sha256"`
}

func answerOf(t *testing.T, s *apitest.Server, d fleetDevice) deviceAnswer {
	t.Helper()
	var a deviceAnswer
	s.Basic(d.Key, d.Secret).Expect(200, "GET", "/api/iot/firmware-version", nil).JSON(t, &a)
	if a.FirmwareVersion == nil || a.SHA256 == nil || a.Size == nil {
		t.Fatalf("answer of %s: %+v", d.Key, a)
	}
	return a
}

// firmwareNotes collects iotsupport/updates/firmware messages by client id until every
// one of want arrived (or fails after 15 s); any other message fails the test.
func firmwareNotes(t *testing.T, msgs <-chan string, want map[string]string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	got := map[string]string{}
	for len(got) < len(want) {
		select {
		case m := <-msgs:
			var n struct {
				ClientID        string `json:"client_id"`
				FirmwareVersion string `json:"firmware_version"`
			}
			_ = json.Unmarshal([]byte(strings.TrimPrefix(m, "iotsupport/updates/firmware ")), &n)
			if want[n.ClientID] != n.FirmwareVersion {
				t.Fatalf("unexpected notification %s (want %v)", m, want)
			}
			got[n.ClientID] = n.FirmwareVersion
		case <-deadline:
			t.Fatalf("notified %v, want %v", got, want)
		}
	}
}

// TestRolloutThroughTwoReplicas: a rollout started on one replica reaches its cohort on
// both: after the MQTT notification (sent DEVICE_CACHE_TTL after the change, so neither
// replica's cache still answers the old version) every cohort device's firmware-version,
// its download (ETag = the SHA-256, Range) and its notification name the rollout's
// version, and every other device keeps the current one; a pin overrides it; an abort on
// the other replica sends the cohort back.
func TestRolloutThroughTwoReplicas(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		msgs := subscribe(t, "iotsupport/updates/firmware")
		const ttl = time.Second
		start := func() *apitest.Server {
			s := apitest.Start(t, env, "MQTT_URL", "mqtt://127.0.0.1:1883", "MQTT_CLIENT_ID", fmt.Sprintf("iotsupport-ro-%d", time.Now().UnixNano()),
				"DEVICE_CACHE_TTL", ttl.String())
			waitConnected(t, s)
			return s
		}
		a, b := start(), start()
		code := "roll" + strings.ReplaceAll(strings.ReplaceAll(env.Name, "+", ""), "sqlite", "")
		model, devs := newFleetModel(t, a, code, 24)
		a.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", model), bundletest.BuildCase(t, code, "esp32c3", bundletest.Options{Version: "1.0.0"}))
		newBundle := bundletest.BuildCase(t, code, "esp32c3", bundletest.Options{Version: "1.1.0"})
		bad := a.Role("pipeline").Expect(400, "POST", "/api/pipeline/models/"+code+"/firmware?make_current=maybe", newBundle)
		apitest.CheckEnvelope(t, bad)
		a.Role("pipeline").Expect(200, "POST", "/api/pipeline/models/"+code+"/firmware?make_current=false", newBundle)
		// Both replicas answer (and cache) 1.0.0 for every device.
		for _, d := range devs {
			for _, s := range []*apitest.Server{a, b} {
				if v := *answerOf(t, s, d).FirmwareVersion; v != "1.0.0" {
					t.Fatalf("before the rollout %s answers %s", d.Key, v)
				}
			}
		}
		// The 1.0.0 upload told every device (and the make_current=false upload none).
		all := map[string]string{}
		for _, d := range devs {
			all["iotdevice-"+code+"-"+d.Key] = "1.0.0"
		}
		firmwareNotes(t, msgs, all)

		// Refusals change nothing.
		base := fmt.Sprintf("/api/device-models/%d/rollouts", model)
		for _, c := range []struct {
			status int
			body   map[string]any
		}{
			{400, map[string]any{"version": "1.1.0", "stages": []map[string]any{{"percent": 50}}}},
			{400, map[string]any{"version": "1.1.0", "stages": []map[string]any{{"percent": 50}, {"percent": 40}, {"percent": 100}}}},
			{400, map[string]any{"version": "1.1.0", "stages": []map[string]any{{"percent": 100}}, "on_halt": "explode"}},
			{404, map[string]any{"version": "9.9.9", "stages": []map[string]any{{"percent": 100}}}},
			{409, map[string]any{"version": "1.0.0", "stages": []map[string]any{{"percent": 100}}}},
		} {
			apitest.CheckEnvelope(t, a.Role("editor").Expect(c.status, "POST", base, c.body))
		}
		a.Role("viewer").Expect(403, "POST", base, map[string]any{"version": "1.1.0", "stages": []map[string]any{{"percent": 100}}})

		var r struct {
			ID      int64  `json:"id"`
			State   string `json:"state"`
			Percent int    `json:"percent"`
		}
		began := time.Now()
		a.Role("editor").Expect(201, "POST", base, map[string]any{"version": "1.1.0", "min_devices": 5,
			"stages": []map[string]any{{"percent": 50, "min_minutes": 600}, {"percent": 100}}}).JSON(t, &r)
		if r.State != "active" || r.Percent != 50 {
			t.Fatalf("started: %+v", r)
		}
		a.Role("editor").Expect(409, "POST", base, map[string]any{"version": "1.1.0", "stages": []map[string]any{{"percent": 100}}})
		// While it runs, no other way makes a version current: the rollout's previous
		// version must stay what the other devices run.
		mv := fmt.Sprintf("/api/device-models/%d/firmware-version", model)
		apitest.CheckEnvelope(t, a.Role("editor").Expect(409, "PUT", mv, map[string]any{"version": "1.1.0"}))
		apitest.CheckEnvelope(t, a.Role("editor").Expect(409, "POST", fmt.Sprintf("/api/device-models/%d/firmware", model), newBundle))
		if v := a.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d", model), nil).Map(t)["firmware_version"]; v != "1.0.0" {
			t.Fatalf("current version during the rollout: %v", v)
		}
		want := map[string]string{}
		in := map[string]bool{}
		for _, d := range devs {
			if cohort.In(d.Key, r.ID, 50) {
				in[d.Key] = true
				want["iotdevice-"+code+"-"+d.Key] = "1.1.0"
			}
		}
		if len(in) == 0 || len(in) == len(devs) {
			t.Fatalf("a 50 %% cohort of %d devices holds %d", len(devs), len(in))
		}
		firmwareNotes(t, msgs, want)
		if time.Since(began) < ttl {
			t.Fatalf("notified %v after the start, before DEVICE_CACHE_TTL", time.Since(began))
		}
		for _, d := range devs {
			wantV := map[bool]string{true: "1.1.0", false: "1.0.0"}[in[d.Key]]
			for _, s := range []*apitest.Server{a, b} {
				ans := answerOf(t, s, d)
				if *ans.FirmwareVersion != wantV {
					t.Fatalf("%s (cohort %v) answers %s", d.Key, in[d.Key], *ans.FirmwareVersion)
				}
				full := s.Basic(d.Key, d.Secret).Expect(200, "GET", "/api/iot/firmware", nil)
				sum := sha256.Sum256(full.Body)
				if hex.EncodeToString(sum[:]) != *ans.SHA256 || int64(len(full.Body)) != *ans.Size ||
					full.Header.Get("ETag") != `"`+*ans.SHA256+`"` || full.Header.Get("X-Firmware-Version") != wantV {
					t.Fatalf("%s download: etag %s version %s, answer %+v", d.Key, full.Header.Get("ETag"), full.Header.Get("X-Firmware-Version"), ans)
				}
				part := s.Basic(d.Key, d.Secret).Expect(206, "GET", "/api/iot/firmware", nil, "Range", "bytes=16-47")
				if string(part.Body) != string(full.Body[16:48]) || part.Header.Get("X-Firmware-Version") != wantV {
					t.Fatalf("%s range: %d bytes of %s", d.Key, len(part.Body), part.Header.Get("X-Firmware-Version"))
				}
				s.Basic(d.Key, d.Secret).Expect(304, "GET", "/api/iot/firmware", nil, "If-None-Match", `"`+*ans.SHA256+`"`)
			}
		}
		var st struct {
			Health struct {
				Targeted int `json:"targeted"`
			} `json:"health"`
			StageFigures []struct {
				Targeted int `json:"targeted"`
			} `json:"stage_figures"`
		}
		b.Role("viewer").Expect(200, "GET", fmt.Sprintf("%s/%d", base, r.ID), nil).JSON(t, &st)
		if st.Health.Targeted != len(in) || len(st.StageFigures) != 2 || st.StageFigures[1].Targeted != len(devs) {
			t.Fatalf("figures: %+v", st)
		}

		// A pin on replica b holds a cohort device on 1.0.0.
		var pinned fleetDevice
		var pinnedID int
		for _, d := range devs {
			if in[d.Key] {
				pinned, pinnedID = d, d.ID
				break
			}
		}
		apitest.CheckEnvelope(t, b.Role("editor").Expect(400, "PUT", fmt.Sprintf("/api/devices/%d/firmware-version", pinnedID), map[string]any{"version": "../x"}))
		apitest.CheckEnvelope(t, b.Role("editor").Expect(404, "PUT", fmt.Sprintf("/api/devices/%d/firmware-version", pinnedID), map[string]any{"version": "7.7.7"}))
		b.Role("editor").Expect(200, "PUT", fmt.Sprintf("/api/devices/%d/firmware-version", pinnedID), map[string]any{"version": "1.0.0"})
		firmwareNotes(t, msgs, map[string]string{"iotdevice-" + code + "-" + pinned.Key: "1.0.0"})
		for _, s := range []*apitest.Server{a, b} {
			if v := *answerOf(t, s, pinned).FirmwareVersion; v != "1.0.0" {
				t.Fatalf("pinned device answers %s", v)
			}
		}

		// Abort on replica b: the rest of the cohort goes back to 1.0.0 everywhere.
		b.Role("editor").Expect(200, "POST", fmt.Sprintf("%s/%d/abort", base, r.ID), nil)
		delete(want, "iotdevice-"+code+"-"+pinned.Key)
		for k := range want {
			want[k] = "1.0.0"
		}
		firmwareNotes(t, msgs, want)
		for _, d := range devs {
			for _, s := range []*apitest.Server{a, b} {
				if v := *answerOf(t, s, d).FirmwareVersion; v != "1.0.0" {
					t.Fatalf("after the abort %s answers %s", d.Key, v)
				}
			}
		}
		// Every change above is in the audit log.
		audit := a.Expect(200, "GET", "/api/audit?limit=200", nil).Body
		for _, p := range []string{fmt.Sprintf("%s/%d/abort", base, r.ID), fmt.Sprintf("/api/devices/%d/firmware-version", pinnedID)} {
			if !strings.Contains(string(audit), p) {
				t.Errorf("audit log lacks %s", p)
			}
		}
	})
}

// TestRolloutEventsDelivered: a rollout's changes go out as events through the crash
// group events' durable deliveries: on MQTT iotsupport/events/rollouts and POSTed,
// signed, to WEBHOOK_URL.
func TestRolloutEventsDelivered(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		const secret = "s3cret"
		hooks := make(chan string, 20)
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if r.Header.Get("X-IoTSupport-Signature") != crashgroups.SignBody(secret, b) {
				t.Errorf("webhook signature %q", r.Header.Get("X-IoTSupport-Signature"))
			}
			hooks <- string(b)
		}))
		t.Cleanup(hook.Close)
		msgs := subscribe(t, notify.TopicRollouts)
		s := apitest.Start(t, env, "MQTT_URL", "mqtt://127.0.0.1:1883", "MQTT_CLIENT_ID", fmt.Sprintf("iotsupport-ev-%d", time.Now().UnixNano()),
			"WEBHOOK_URL", hook.URL, "WEBHOOK_SECRET", secret, "DECODE_WORKERS", "1")
		waitConnected(t, s)
		stop, err := s.App.StartBackground(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		code := "ev" + strings.ReplaceAll(strings.ReplaceAll(env.Name, "+", ""), "sqlite", "")
		model, _ := newFleetModel(t, s, code, 2)
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware", model), bundletest.BuildCase(t, code, "esp32c3", bundletest.Options{Version: "1.0.0"}))
		s.Expect(200, "POST", fmt.Sprintf("/api/device-models/%d/firmware?make_current=false", model), bundletest.BuildCase(t, code, "esp32c3", bundletest.Options{Version: "1.1.0"}))
		var r struct{ ID int64 }
		base := fmt.Sprintf("/api/device-models/%d/rollouts", model)
		s.Expect(201, "POST", base, map[string]any{"version": "1.1.0", "stages": []map[string]any{{"percent": 10}, {"percent": 100}}}).JSON(t, &r)
		s.Expect(200, "POST", fmt.Sprintf("%s/%d/advance", base, r.ID), nil)
		s.Expect(200, "POST", fmt.Sprintf("%s/%d/pause", base, r.ID), nil)
		s.Expect(200, "POST", fmt.Sprintf("%s/%d/abort", base, r.ID), nil)
		want := []string{"started", "advanced", "paused", "aborted"}
		for _, ch := range []struct {
			name string
			c    <-chan string
		}{{"webhook", hooks}, {"mqtt", msgs}} {
			got := map[string]bool{}
			deadline := time.After(20 * time.Second)
			for len(got) < len(want) {
				select {
				case m := <-ch.c:
					var e struct {
						Event, Model, Version string
						RolloutID             int64 `json:"rollout_id"`
					}
					if err := json.Unmarshal([]byte(strings.TrimPrefix(m, notify.TopicRollouts+" ")), &e); err != nil || e.Model != code ||
						e.Version != "1.1.0" || e.RolloutID != r.ID {
						t.Fatalf("%s event %s", ch.name, m)
					}
					got[e.Event] = true
				case <-deadline:
					t.Fatalf("%s delivered %v, want %v", ch.name, got, want)
				}
			}
			for _, w := range want {
				if !got[w] {
					t.Fatalf("%s delivered %v, want %v", ch.name, got, want)
				}
			}
		}
	})
}
