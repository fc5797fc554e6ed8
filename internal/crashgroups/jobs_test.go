package crashgroups_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/riverqueue/river"

	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/jobs"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

type noGroups struct{}

func (noGroups) AssignTx(context.Context, *sql.Tx, crashgroups.Dump, *espcore.Report) (crashgroups.Assignment, error) {
	return crashgroups.Assignment{}, nil
}

// riverGroups replaces the harness's crash groups by one queuing real River jobs, and
// starts River with the package's workers. It returns the client's stop function.
func riverGroups(t *testing.T, h *harness, opts crashgroups.Options, pub crashgroups.Publisher, hook crashgroups.Webhook) {
	t.Helper()
	log := discard()
	inserts, err := jobs.New(h.env.DB, nil, jobs.Config{Timeout: 10 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	in, err := jobs.NewInserter(h.env.DB, inserts, log)
	if err != nil {
		t.Fatal(err)
	}
	h.groups = crashgroups.NewService(h.env.DB, h.fw, in, h.dumps, opts, log)
	h.dec = decoding.NewService(h.env.DB, h.dumps, h.fw, h.groups, nil, decoding.Config{}, log, nil)
	ws := river.NewWorkers()
	crashgroups.AddWorkers(ws, h.groups, pub, hook)
	c, err := jobs.New(h.env.DB, ws, jobs.Config{Workers: 2, Timeout: 10 * time.Second, Queues: map[string]int{crashgroups.EventsQueue: 1}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func count(t *testing.T, h *harness, q string, args ...any) int {
	t.Helper()
	var n int
	if err := h.env.DB.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Dumps decoded before grouping existed are grouped by the backfill job on the first
// start after the upgrade: queued once however often it is asked, resumed from its cursor
// after an interruption, and silent (no events for history).
func TestBackfillAfterUpgrade(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")
		before := decoding.NewService(env.DB, h.dumps, h.fw, noGroups{}, nil, decoding.Config{}, discard(), nil)
		var ids []int64
		for range 5 {
			id := h.upload(t, h.device(t, h.model), "esp32c3", "1.0.0")
			if err := before.Decode(ctx, id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		fan := h.newModel(t, "fan") // without firmware: ERROR, grouped nowhere
		if err := before.Decode(ctx, h.upload(t, h.device(t, fan), "esp32c3", "1.0.0")); err != nil {
			t.Fatal(err)
		}
		if n := count(t, h, `SELECT COUNT(*) FROM crash_groups`); n != 0 {
			t.Fatalf("%d groups before the backfill", n)
		}

		// The first start queues it; a second start (or replica) does not.
		inserts, _ := jobs.New(env.DB, nil, jobs.Config{Timeout: 10 * time.Second}, discard())
		in, _ := jobs.NewInserter(env.DB, inserts, discard())
		first := crashgroups.NewService(env.DB, h.fw, in, h.dumps, crashgroups.Options{BackfillBatch: 2}, discard())
		for range 2 {
			if err := first.EnsureBackfill(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(t, h, `SELECT COUNT(*) FROM river_job WHERE kind = 'crash_group_backfill'`); n != 1 {
			t.Fatalf("%d backfill jobs", n)
		}
		// A first batch ran before the process died: its cursor is stored.
		done, n, err := first.BackfillStep(ctx)
		if err != nil || done || n != 2 {
			t.Fatalf("first step: done %v n %d %v", done, n, err)
		}
		if after := count(t, h, `SELECT after_id FROM crash_group_backfill`); int64(after) != ids[1] {
			t.Fatalf("cursor %d, want %d", after, ids[1])
		}

		riverGroups(t, h, crashgroups.Options{BackfillBatch: 2}, notify.Nop{}, crashgroups.Webhook{})
		eventually(t, "the backfill", func() bool {
			return count(t, h, `SELECT COUNT(*) FROM crash_group_backfill WHERE done_at IS NOT NULL`) == 1
		})
		g := h.only(t, h.model.ID)
		if g.DumpCount != 5 || g.DeviceCount != 5 {
			t.Fatalf("group %+v", g)
		}
		if n := count(t, h, `SELECT COUNT(*) FROM crash_groups`); n != 1 {
			t.Fatalf("%d groups (an ERROR dump grouped?)", n)
		}
		if n := count(t, h, `SELECT COUNT(*) FROM river_job WHERE kind IN ('crash_group_mqtt', 'crash_group_webhook')`); n != 0 {
			t.Fatalf("%d event jobs for history", n)
		}
		// Done stays done: a later start queues nothing.
		if err := h.groups.EnsureBackfill(ctx); err != nil {
			t.Fatal(err)
		}
		if n := count(t, h, `SELECT COUNT(*) FROM river_job WHERE kind = 'crash_group_backfill'`); n != 1 {
			t.Fatalf("%d backfill jobs after a restart", n)
		}
	})
}

// subscribe returns the payloads the real broker delivers on topic.
func subscribe(t *testing.T, topic string) <-chan string {
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
			_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
			once.Do(func() { ready <- err })
		},
		ClientConfig: paho.ClientConfig{ClientID: fmt.Sprintf("sub-%d", time.Now().UnixNano()),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				out <- string(pr.Packet.Payload)
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
		t.Fatal("MQTT at 127.0.0.1:1883 is required")
	}
	t.Cleanup(func() { _ = cm.Disconnect(context.Background()) })
	return out
}

// A new group and a regression go out over the real broker and to the webhook, signed;
// a refused delivery is retried by its durable job.
func TestEventsOverMQTTAndWebhook(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		h := newHarness(t, env, 20)
		h.firmware(t, h.model, "esp32c3", "1.0.0")

		type delivery struct {
			body []byte
			sig  string
		}
		var mu sync.Mutex
		var got []delivery
		calls := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls == 1 {
				w.WriteHeader(http.StatusServiceUnavailable) // the first delivery is refused
				return
			}
			got = append(got, delivery{b, r.Header.Get("X-IoTSupport-Signature")})
		}))
		defer srv.Close()

		mq, err := notify.New(ctx, notify.Config{URL: "mqtt://127.0.0.1:1883", ClientID: fmt.Sprintf("cg-%d", time.Now().UnixNano())}, discard(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer mq.Close(ctx)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := mq.AwaitConnection(wctx); err != nil {
			t.Fatalf("MQTT at 127.0.0.1:1883 is required: %v", err)
		}
		msgs := subscribe(t, notify.TopicCrashGroups)
		riverGroups(t, h, crashgroups.Options{WebhookAttempts: 3, MQTTEvents: true}, mq, crashgroups.Webhook{URL: srv.URL, Secret: "s3cret"})

		d := h.device(t, h.model)
		h.decode(t, h.upload(t, d, "esp32c3", "1.0.0"))
		g := h.only(t, h.model.ID)
		var ev map[string]any
		select {
		case m := <-msgs:
			if err := json.Unmarshal([]byte(m), &ev); err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no MQTT event")
		}
		if ev["event"] != "new" || int64(ev["group_id"].(float64)) != g.ID || ev["model"] != "lamp" || ev["title"] != g.Title || ev["version"] != "1.0.0" {
			t.Fatalf("MQTT event %v", ev)
		}
		eventually(t, "the retried webhook", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
		mu.Lock()
		first := got[0]
		mu.Unlock()
		if first.sig != crashgroups.SignBody("s3cret", first.body) || first.sig == crashgroups.SignBody("other", first.body) {
			t.Fatalf("signature %q of %s", first.sig, first.body)
		}
		var body map[string]any
		if err := json.Unmarshal(first.body, &body); err != nil || body["event"] != "new" || body["title"] != g.Title {
			t.Fatalf("webhook body %s %v", first.body, err)
		}

		v := "1.0.0"
		if _, err := h.groups.Update(ctx, g.ID, crashgroups.StatusResolved, &v); err != nil {
			t.Fatal(err)
		}
		h.firmware(t, h.model, "esp32c3_bin", "1.1.0")
		h.decode(t, h.upload(t, d, "esp32c3_bin", "1.1.0"))
		select {
		case m := <-msgs:
			if err := json.Unmarshal([]byte(m), &ev); err != nil || ev["event"] != "regressed" || ev["version"] != "1.1.0" {
				t.Fatalf("MQTT regression %s", m)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no MQTT regression event")
		}
		eventually(t, "the regression webhook", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	})
}
