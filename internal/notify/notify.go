// Package notify publishes MQTT v5 notifications to devices after changes commit:
// a new current firmware version for a model, or a device's changed config.
package notify

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
)

// Topics, as the older service used them.
const (
	TopicFirmware = "iotsupport/updates/firmware"
	TopicConfig   = "iotsupport/updates/config"
	// TopicCrashGroups carries crash group events (a new group, a regression) for operators.
	TopicCrashGroups = "iotsupport/events/crash-groups"
	// TopicRollouts carries staged rollout events (started, advanced, halted, …).
	TopicRollouts = "iotsupport/events/rollouts"
)

// Notifier is what services call after a commit. Failures are logged and counted,
// never returned: a broker outage must not fail an upload.
type Notifier interface {
	FirmwareUpdated(ctx context.Context, clientIDs []string, version string)
	ConfigChanged(ctx context.Context, clientID string)
}

// Nop is used when MQTT is not configured.
type Nop struct{}

func (Nop) FirmwareUpdated(context.Context, []string, string) {}
func (Nop) ConfigChanged(context.Context, string)             {}
func (Nop) CrashGroupEvent(context.Context, any)              {}
func (Nop) PublishEvent(context.Context, string, any)         {}

// Config addresses the broker.
type Config struct {
	URL      string // mqtt://host[:1883] or mqtts://host[:8883]
	Username string
	Password string
	ClientID string
}

// MQTT publishes with QoS 1 over a persistent session that reconnects by itself.
type MQTT struct {
	cm       *autopaho.ConnectionManager
	log      *slog.Logger
	timeout  time.Duration
	attempts *prometheus.CounterVec
	state    prometheus.Gauge
}

// New connects in the background; publishing before the connection is up fails fast
// (and is counted) rather than blocking requests.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*MQTT, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("MQTT_URL: %w", err)
	}
	var tlsCfg *tls.Config
	switch u.Scheme {
	case "mqtt", "tcp":
		u.Scheme = "mqtt"
		if u.Port() == "" {
			u.Host += ":1883"
		}
	case "mqtts", "tls", "ssl":
		u.Scheme = "tls"
		if u.Port() == "" {
			u.Host += ":8883"
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	default:
		return nil, fmt.Errorf("MQTT_URL: scheme must be mqtt:// or mqtts://")
	}
	clientID := cfg.ClientID
	if clientID == "" {
		clientID = cfg.Username
	}
	if clientID == "" {
		clientID = "iotsupport-backend"
	}
	m := &MQTT{log: log, timeout: 5 * time.Second,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotsupport_mqtt_publish_total",
			Help: "MQTT publishes by topic and outcome."}, []string{"topic", "status"}),
		state: prometheus.NewGauge(prometheus.GaugeOpts{Name: "iotsupport_mqtt_connected", Help: "1 while connected to the broker."}),
	}
	if reg != nil {
		reg.MustRegister(m.attempts, m.state)
	}
	pc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         3600,
		ConnectTimeout:                5 * time.Second,
		ReconnectBackoff:              func(int) time.Duration { return 2 * time.Second },
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			m.state.Set(1)
			log.Info("MQTT connected", "broker", u.Host)
		},
		OnConnectionDown: func() bool { m.state.Set(0); log.Warn("MQTT connection lost"); return true },
		OnConnectError:   func(err error) { log.Warn("MQTT connect failed", "error", err) },
		ClientConfig:     paho.ClientConfig{ClientID: clientID},
	}
	if cfg.Username != "" {
		pc.ConnectUsername = cfg.Username
		pc.ConnectPassword = []byte(cfg.Password)
	}
	cm, err := autopaho.NewConnection(context.WithoutCancel(ctx), pc)
	if err != nil {
		return nil, err
	}
	m.cm = cm
	return m, nil
}

// AwaitConnection waits until connected (for tests and start-up logs).
func (m *MQTT) AwaitConnection(ctx context.Context) error { return m.cm.AwaitConnection(ctx) }

// Close disconnects cleanly.
func (m *MQTT) Close(ctx context.Context) error { return m.cm.Disconnect(ctx) }

func (m *MQTT) publish(ctx context.Context, topic string, payload any) {
	b, _ := json.Marshal(payload)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.timeout)
	defer cancel()
	// autopaho fails at once while the connection is down: the miss is counted, never waited on.
	_, err := m.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: b, Retain: false})
	if err != nil {
		m.attempts.WithLabelValues(topic, "error").Inc()
		m.log.Warn("MQTT publish failed", "topic", topic, "error", err)
		return
	}
	m.attempts.WithLabelValues(topic, "ok").Inc()
}

// FirmwareUpdated sends one message per device.
func (m *MQTT) FirmwareUpdated(ctx context.Context, clientIDs []string, version string) {
	for _, id := range clientIDs {
		m.publish(ctx, TopicFirmware, map[string]string{"client_id": id, "firmware_version": version})
	}
}

// ConfigChanged tells one device to fetch its config.
func (m *MQTT) ConfigChanged(ctx context.Context, clientID string) {
	m.publish(ctx, TopicConfig, map[string]string{"client_id": clientID})
}

// CrashGroupEvent publishes a crash group event (crashgroups.Event) on TopicCrashGroups.
func (m *MQTT) CrashGroupEvent(ctx context.Context, event any) {
	m.publish(ctx, TopicCrashGroups, event)
}

// PublishEvent publishes an event on an events topic (TopicRollouts).
func (m *MQTT) PublishEvent(ctx context.Context, topic string, event any) {
	m.publish(ctx, topic, event)
}
