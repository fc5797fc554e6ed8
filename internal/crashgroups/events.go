package crashgroups

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/riverqueue/river"
)

// Event kinds.
const (
	EventNew       = "new"
	EventRegressed = "regressed"
)

// EventsQueue is the River queue of event deliveries, apart from the decodes so a slow
// webhook never holds a decode worker.
const EventsQueue = "crash_group_events"

// Event is a new group or a regression, as published over MQTT
// (iotsupport/events/crash-groups) and POSTed to WEBHOOK_URL.
type Event struct {
	Event   string `json:"event"`
	GroupID int64  `json:"group_id"`
	Model   string `json:"model"`
	Title   string `json:"title"`
	Version string `json:"version"`
}

// Publisher publishes an event over MQTT (notify.MQTT; failures are logged, never returned).
type Publisher interface {
	CrashGroupEvent(ctx context.Context, event any)
}

// TopicPublisher publishes another owner's event on its own topic (notify.MQTT).
type TopicPublisher interface {
	PublishEvent(ctx context.Context, topic string, event any)
}

// mqttArgs is the job publishing one event over MQTT after the commit. Topic and
// Payload carry another owner's event (QueueEventTx); without them it is a crash group's.
type mqttArgs struct {
	Event   Event           `json:"event"`
	Topic   string          `json:"topic,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (mqttArgs) Kind() string { return "crash_group_mqtt" }

// webhookArgs is the job POSTing one event to WEBHOOK_URL, retried until it is accepted
// (Payload, when set, is posted instead of Event).
type webhookArgs struct {
	Event   Event           `json:"event"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (webhookArgs) Kind() string { return "crash_group_webhook" }

// queueEvent queues an event's deliveries in tx: they happen only if it commits.
func (s *Service) queueEvent(ctx context.Context, tx *sql.Tx, e Event) error {
	if s.opts.MQTTEvents {
		if err := s.jobs.InsertTx(ctx, tx, mqttArgs{Event: e}, &river.InsertOpts{Queue: EventsQueue, MaxAttempts: 1}); err != nil {
			return fmt.Errorf("queue crash group event: %w", err)
		}
	}
	if s.opts.WebhookAttempts > 0 {
		if err := s.jobs.InsertTx(ctx, tx, webhookArgs{Event: e}, &river.InsertOpts{Queue: EventsQueue, MaxAttempts: s.opts.WebhookAttempts}); err != nil {
			return fmt.Errorf("queue crash group webhook: %w", err)
		}
	}
	return nil
}

// QueueEventTx queues another owner's event (a rollout's) in tx for the same durable
// deliveries as crash group events: MQTT on topic and WEBHOOK_URL, each when configured.
func (s *Service) QueueEventTx(ctx context.Context, tx *sql.Tx, topic string, event any) error {
	b, err := json.Marshal(event)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if s.opts.MQTTEvents {
		if err := s.jobs.InsertTx(ctx, tx, mqttArgs{Topic: topic, Payload: b}, &river.InsertOpts{Queue: EventsQueue, MaxAttempts: 1}); err != nil {
			return fmt.Errorf("queue event: %w", err)
		}
	}
	if s.opts.WebhookAttempts > 0 {
		if err := s.jobs.InsertTx(ctx, tx, webhookArgs{Payload: b}, &river.InsertOpts{Queue: EventsQueue, MaxAttempts: s.opts.WebhookAttempts}); err != nil {
			return fmt.Errorf("queue webhook: %w", err)
		}
	}
	return nil
}

type mqttWorker struct {
	river.WorkerDefaults[mqttArgs]
	pub Publisher
}

func (w *mqttWorker) Work(ctx context.Context, job *river.Job[mqttArgs]) error {
	if job.Args.Topic != "" {
		if p, ok := w.pub.(TopicPublisher); ok {
			p.PublishEvent(ctx, job.Args.Topic, job.Args.Payload)
		}
		return nil
	}
	w.pub.CrashGroupEvent(ctx, job.Args.Event)
	return nil
}

// Webhook is where events are POSTed (WEBHOOK_URL) and the key that signs them (WEBHOOK_SECRET).
type Webhook struct {
	URL    string
	Secret string
	// Timeout bounds one delivery (WEBHOOK_TIMEOUT; 10 s when 0).
	Timeout time.Duration
}

// SignBody is the X-IoTSupport-Signature of a body: "sha256=" and the hex HMAC-SHA256
// of the body with the secret.
func SignBody(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

type webhookWorker struct {
	river.WorkerDefaults[webhookArgs]
	hook Webhook
	log  *slog.Logger
}

// Work POSTs the event; anything but a 2xx answer is retried with River's backoff.
func (w *webhookWorker) Work(ctx context.Context, job *river.Job[webhookArgs]) error {
	if w.hook.URL == "" {
		return nil // WEBHOOK_URL was removed since the event was queued
	}
	body := []byte(job.Args.Payload)
	if len(body) == 0 {
		body, _ = json.Marshal(job.Args.Event)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.hook.URL, bytes.NewReader(body))
	if err != nil {
		return river.JobCancel(fmt.Errorf("webhook request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "iotsupport-webhook")
	req.Header.Set("X-IoTSupport-Signature", SignBody(w.hook.Secret, body))
	timeout := w.hook.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		w.log.Warn("crash group webhook failed; will retry", "attempt", job.Attempt, "error", err)
		return fmt.Errorf("webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		w.log.Warn("crash group webhook refused; will retry", "attempt", job.Attempt, "status", resp.StatusCode)
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

// AddWorkers registers the event deliveries and the backfill with River.
func AddWorkers(ws *river.Workers, s *Service, pub Publisher, hook Webhook) {
	river.AddWorker(ws, &mqttWorker{pub: pub})
	river.AddWorker(ws, &webhookWorker{hook: hook, log: s.log})
	river.AddWorker(ws, &backfillWorker{s: s})
}
