// Package config holds every setting of the service in one table: its environment
// name, default, validation and documentation. The README's settings table is
// generated from the same table (see TestREADMEListsEverySetting).
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config is the effective configuration of one process.
type Config struct {
	DatabaseURL      string
	DatabaseMaxConns int

	StorageBackend string
	StorageDir     string

	// Sources of `migrate-to-s3` (the older service's directories).
	AssetsDir    string
	CoredumpsDir string

	S3Endpoint  string
	S3AccessKey string
	S3SecretKey string
	S3Bucket    string
	S3Region    string
	S3UseSSL    bool
	S3PathStyle bool

	MaxFirmwares int
	MaxCoredumps int

	CoredumpMaxBytes       int
	CoredumpUploadsPerHour int

	Host      string
	Port      int
	LogLevel  string
	LogFormat string

	ShutdownTimeout time.Duration
	// DrainAuthKey is the bearer secret of /health/drain; empty refuses every drain.
	DrainAuthKey      string
	ReadHeaderTimeout time.Duration
	// RequestBodyTimeout bounds each wait for request body bytes (slow-loris uploads).
	RequestBodyTimeout time.Duration
	FsckInterval       time.Duration
	FsckGrace          time.Duration
	AppEnv             string

	AuthMode                string
	OIDCEnabled             bool
	OIDCIssuerURL           string
	OIDCAudience            string
	OIDCClientID            string
	OIDCClientSecret        string
	OIDCClockSkew           time.Duration
	OIDCCookieName          string
	OIDCViewerRole          string
	OIDCEditorRole          string
	OIDCAdminRole           string
	OIDCPipelineRole        string
	DeviceFailuresPerMinute int
	// UnknownDeviceFailuresPerMinute bounds logins with unknown device keys per source address.
	UnknownDeviceFailuresPerMinute int
	BearerFailuresPerMinute        int
	OIDCJWKSMinRefresh             time.Duration
	DeviceCacheTTL                 time.Duration
	TrustProxyHeaders              bool
	// PprofAddr is a loopback host:port serving Go's profiles (debugging only); "" for none.
	PprofAddr string
	// PublicBaseURL is how devices and CI jobs reach this service (scheme://host[:port][/prefix]),
	// used wherever the service writes its own address into something it hands out.
	PublicBaseURL string

	// Provisioning records (NVS images) handed to new devices.
	DeviceMQTTURL                string
	ProvisioningWiFiSSID         string
	ProvisioningWiFiPassword     string
	ProvisioningBatchMax         int
	ProvisioningMaxPartitionSize int

	FirmwareMaxBundleBytes int64
	FirmwareMaxMemberBytes int64
	FirmwareMaxTotalBytes  int64
	FirmwareMaxRatio       int64
	TempDir                string
	SpoolMaxAge            time.Duration
	FirmwareCacheDir       string
	FirmwareCacheMaxBytes  int64

	Decoder           string
	DecodeWorkers     int
	DecodeTimeout     time.Duration
	DecoderCacheBytes int64
	SidecarURL        string
	SidecarXferDir    string
	SidecarTimeout    time.Duration

	AuditRetentionDays int

	FleetFlushInterval   time.Duration
	FleetHistoryDays     int
	FleetPruneBatch      int
	FleetMaxUnsavedBoots int
	AuditWriteTimeout    time.Duration

	ConsoleSessionIdle   time.Duration
	ConsoleSessionMaxAge time.Duration
	ConsolePageSize      int
	ConsoleOverviewTTL   time.Duration

	RolloutEvalInterval time.Duration

	MQTTURL      string
	MQTTUsername string
	MQTTPassword string
	MQTTClientID string

	WebhookURL         string
	WebhookSecret      string
	WebhookMaxAttempts int
	WebhookTimeout     time.Duration
	CrashEventWorkers  int
}

// Audience is the expected JWT audience: OIDC_AUDIENCE, else OIDC_CLIENT_ID.
func (c *Config) Audience() string {
	if c.OIDCAudience != "" {
		return c.OIDCAudience
	}
	return c.OIDCClientID
}

// Setting describes one environment variable.
type Setting struct {
	Name    string
	Default string
	Doc     string
	Secret  bool
	apply   func(c *Config, v string) error
}

// Settings is the single source of truth for configuration; order is the README order.
var Settings = []Setting{
	{Name: "DATABASE_URL", Default: "sqlite:./data/iotsupport.db", Secret: true,
		Doc: "Database: `sqlite:PATH` (embedded, default) or `postgres://user:pass@host:port/db` (also `postgresql://`).",
		apply: func(c *Config, v string) error {
			if !strings.HasPrefix(v, "sqlite:") && !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
				return fmt.Errorf("must start with sqlite:, postgres:// or postgresql://")
			}
			if strings.HasPrefix(v, "sqlite:") && strings.TrimPrefix(v, "sqlite:") == "" {
				return fmt.Errorf("sqlite: needs a file path")
			}
			c.DatabaseURL = v
			return nil
		}},
	{Name: "DATABASE_MAX_CONNS", Default: "0", Doc: "Database connections each process opens at most; 0 means 20 on PostgreSQL, 8 on SQLite. Transactions beyond it wait, first come first served (on SQLite, which has one writer, transactions always run one at a time). Keep replicas × this below PostgreSQL's `max_connections`.",
		apply: intSetting(0, 1000, func(c *Config) *int { return &c.DatabaseMaxConns })},
	{Name: "STORAGE_BACKEND", Default: "local", Doc: "Object storage backend: `local` (a directory) or `s3`.",
		apply: func(c *Config, v string) error {
			if v != "local" && v != "s3" {
				return fmt.Errorf("must be local or s3")
			}
			c.StorageBackend = v
			return nil
		}},
	{Name: "STORAGE_DIR", Default: "./data/blobs", Doc: "Root directory of the `local` storage backend.",
		apply: func(c *Config, v string) error { return nonEmpty(&c.StorageDir, v) }},
	{Name: "ASSETS_DIR", Default: "", Doc: "Only for `migrate-to-s3`: the older service's firmware directory (`{code}/firmware-{version}.zip`); empty skips firmware.",
		apply: func(c *Config, v string) error { c.AssetsDir = v; return nil }},
	{Name: "COREDUMPS_DIR", Default: "", Doc: "Only for `migrate-to-s3`: the older service's core dump directory (`{device_key}/coredump_*.dmp`); empty skips core dumps.",
		apply: func(c *Config, v string) error { c.CoredumpsDir = v; return nil }},
	{Name: "S3_ENDPOINT_URL", Default: "", Doc: "S3 endpoint, e.g. `http://127.0.0.1:7070`; empty means AWS. Required when `STORAGE_BACKEND=s3` unless using AWS.",
		apply: func(c *Config, v string) error {
			if v != "" {
				if u, err := url.Parse(v); err != nil || u.Host == "" && !strings.Contains(v, ":") {
					return fmt.Errorf("not a URL or host:port")
				}
			}
			c.S3Endpoint = v
			return nil
		}},
	{Name: "S3_ACCESS_KEY_ID", Default: "", Doc: "S3 access key.", apply: func(c *Config, v string) error { c.S3AccessKey = v; return nil }},
	{Name: "S3_SECRET_ACCESS_KEY", Default: "", Secret: true, Doc: "S3 secret key.", apply: func(c *Config, v string) error { c.S3SecretKey = v; return nil }},
	{Name: "S3_BUCKET_NAME", Default: "iot-support-attachments", Doc: "Bucket holding every object; created at start-up when missing.",
		apply: func(c *Config, v string) error {
			if len(v) < 3 || len(v) > 63 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
				return fmt.Errorf("must be 3-63 characters of a-z, 0-9, '.' and '-'")
			}
			c.S3Bucket = v
			return nil
		}},
	{Name: "S3_REGION", Default: "us-east-1", Doc: "S3 region.", apply: func(c *Config, v string) error { return nonEmpty(&c.S3Region, v) }},
	{Name: "S3_USE_SSL", Default: "false", Doc: "Use https when `S3_ENDPOINT_URL` has no scheme.", apply: boolSetting(func(c *Config) *bool { return &c.S3UseSSL })},
	{Name: "S3_PATH_STYLE", Default: "true", Doc: "Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted S3 servers.", apply: boolSetting(func(c *Config) *bool { return &c.S3PathStyle })},
	{Name: "MAX_FIRMWARES", Default: "5", Doc: "Firmware versions kept per model (≥ 1); the current version is never pruned.", apply: intSetting(1, 10000, func(c *Config) *int { return &c.MaxFirmwares })},
	{Name: "MAX_COREDUMPS", Default: "20", Doc: "Core dumps kept per device (≥ 1).", apply: intSetting(1, 100000, func(c *Config) *int { return &c.MaxCoredumps })},
	{Name: "COREDUMP_MAX_BYTES", Default: "1048576", Doc: "Largest accepted core dump upload (1 MiB); more is refused with 413 while reading.", apply: intSetting(1, 1<<30, func(c *Config) *int { return &c.CoredumpMaxBytes })},
	{Name: "COREDUMP_UPLOADS_PER_HOUR", Default: "30", Doc: "Core dump uploads accepted per device in any hour (crash-loop guard); more get 429 with `Retry-After`.", apply: intSetting(1, 100000, func(c *Config) *int { return &c.CoredumpUploadsPerHour })},
	{Name: "HOST", Default: "127.0.0.1", Doc: "Listen address. Use `0.0.0.0` to accept connections from other machines.",
		apply: func(c *Config, v string) error {
			if v != "localhost" && net.ParseIP(v) == nil {
				return fmt.Errorf("must be an IP address or localhost")
			}
			c.Host = v
			return nil
		}},
	{Name: "PORT", Default: "3101", Doc: "Listen port.", apply: intSetting(1, 65535, func(c *Config) *int { return &c.Port })},
	{Name: "LOG_LEVEL", Default: "info", Doc: "`debug`, `info`, `warn` or `error`.",
		apply: func(c *Config, v string) error { return oneOf(&c.LogLevel, v, "debug", "info", "warn", "error") }},
	{Name: "LOG_FORMAT", Default: "json", Doc: "`json` or `text`.",
		apply: func(c *Config, v string) error { return oneOf(&c.LogFormat, v, "json", "text") }},
	{Name: "SHUTDOWN_TIMEOUT", Default: "30s", Doc: "On SIGTERM, how long in-flight requests may take to finish.", apply: durationSetting(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{Name: "DRAIN_AUTH_KEY", Default: "", Secret: true, Doc: "Bearer secret of `GET /health/drain`, which makes readiness fail (503) so a load balancer stops sending traffic before the process is stopped; empty refuses every drain.",
		apply: func(c *Config, v string) error { c.DrainAuthKey = v; return nil }},
	{Name: "READ_HEADER_TIMEOUT", Default: "10s", Doc: "Time a client has to send request headers (slow-loris guard).", apply: durationSetting(func(c *Config) *time.Duration { return &c.ReadHeaderTimeout })},
	{Name: "REQUEST_BODY_TIMEOUT", Default: "60s", Doc: "Longest a request body may stall (no bytes arriving) before the upload is cut off and rolled back (slow-loris guard; a slow but steady upload is fine).", apply: durationSetting(func(c *Config) *time.Duration { return &c.RequestBodyTimeout })},
	{Name: "FSCK_INTERVAL", Default: "24h", Doc: "How often `serve` runs fsck in report-only mode (findings in the `iotsupport_fsck_*` metrics); `0` turns it off.",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return fmt.Errorf("must be a duration like 24h, or 0 to turn it off")
			}
			c.FsckInterval = d
			return nil
		}},
	{Name: "FSCK_GRACE", Default: "1h", Doc: "Objects without a row younger than this are uploads in flight, not orphans; queued deletions older than this are stuck (fsck and its periodic run).", apply: durationSetting(func(c *Config) *time.Duration { return &c.FsckGrace })},
	{Name: "APP_ENV", Default: "production", Doc: "`production`, `development` or `testing` (testing enables `/api/testing/*`).",
		apply: func(c *Config, v string) error { return oneOf(&c.AppEnv, v, "production", "development", "testing") }},
	{Name: "AUTH_MODE", Default: "standard", Doc: "`standard` (tokens, device secrets, optional OIDC) or `insecure-dev` (open admin API and `?device_key=` device identification; loopback `HOST` only).",
		apply: func(c *Config, v string) error { return oneOf(&c.AuthMode, v, "standard", "insecure-dev") }},
	{Name: "OIDC_ENABLED", Default: "false", Doc: "Accept JWTs from an OpenID Connect issuer (Authorization: Bearer or the session cookie).", apply: boolSetting(func(c *Config) *bool { return &c.OIDCEnabled })},
	{Name: "OIDC_ISSUER_URL", Default: "", Doc: "Issuer URL; its `/.well-known/openid-configuration` names the JWKS.", apply: func(c *Config, v string) error { c.OIDCIssuerURL = v; return nil }},
	{Name: "OIDC_AUDIENCE", Default: "", Doc: "Expected `aud` of tokens; defaults to `OIDC_CLIENT_ID`. Client roles are read from `resource_access[<audience>]`.", apply: func(c *Config, v string) error { c.OIDCAudience = v; return nil }},
	{Name: "OIDC_CLIENT_ID", Default: "", Doc: "This service's client id at the issuer (audience fallback). With it set, the web console offers \"Sign in with SSO\" (authorization code with PKCE, callback `/auth/callback`).", apply: func(c *Config, v string) error { c.OIDCClientID = v; return nil }},
	{Name: "OIDC_CLIENT_SECRET", Default: "", Secret: true, Doc: "The console's client secret at the issuer for the SSO code exchange; empty for a public client (PKCE only).", apply: func(c *Config, v string) error { c.OIDCClientSecret = v; return nil }},
	{Name: "OIDC_CLOCK_SKEW_SECONDS", Default: "30", Doc: "Leeway on token expiry.", apply: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 3600 {
			return fmt.Errorf("must be an integer between 0 and 3600")
		}
		c.OIDCClockSkew = time.Duration(n) * time.Second
		return nil
	}},
	{Name: "OIDC_COOKIE_NAME", Default: "access_token", Doc: "Cookie holding a browser session's JWT; writes with it must pass the same-origin check.", apply: func(c *Config, v string) error { return nonEmpty(&c.OIDCCookieName, v) }},
	{Name: "OIDC_VIEWER_ROLE", Default: "viewer", Doc: "IdP role name granting read access.", apply: func(c *Config, v string) error { return nonEmpty(&c.OIDCViewerRole, v) }},
	{Name: "OIDC_EDITOR_ROLE", Default: "editor", Doc: "IdP role name granting writes.", apply: func(c *Config, v string) error { return nonEmpty(&c.OIDCEditorRole, v) }},
	{Name: "OIDC_ADMIN_ROLE", Default: "admin", Doc: "IdP role name granting token management and the audit log.", apply: func(c *Config, v string) error { return nonEmpty(&c.OIDCAdminRole, v) }},
	{Name: "OIDC_PIPELINE_ROLE", Default: "pipeline", Doc: "IdP role name granting the pipeline API only.", apply: func(c *Config, v string) error { return nonEmpty(&c.OIDCPipelineRole, v) }},
	{Name: "DEVICE_AUTH_FAILURES_PER_MINUTE", Default: "10", Doc: "Wrong secrets allowed per device key each minute; more get 429 with `Retry-After`. The right secret is never refused.", apply: intSetting(1, 100000, func(c *Config) *int { return &c.DeviceFailuresPerMinute })},
	{Name: "DEVICE_AUTH_UNKNOWN_KEY_FAILURES_PER_MINUTE", Default: "300", Doc: "Device logins with unknown keys allowed per source address each minute (key guessing); past it, failing device logins from that address get 429. High, as a whole site's devices may share one address.", apply: intSetting(1, 1000000, func(c *Config) *int { return &c.UnknownDeviceFailuresPerMinute })},
	{Name: "BEARER_AUTH_FAILURES_PER_MINUTE", Default: "30", Doc: "Failed API token and JWT logins allowed per source address each minute; past it, every bearer login from that address gets 429 with `Retry-After` until the minute has passed.", apply: intSetting(1, 1000000, func(c *Config) *int { return &c.BearerFailuresPerMinute })},
	{Name: "OIDC_JWKS_MIN_REFRESH_INTERVAL", Default: "60s", Doc: "Least time between two fetches of the issuer's JWKS for tokens naming an unknown key id (followed key rotation; a forged key id cannot make every request fetch).", apply: durationSetting(func(c *Config) *time.Duration { return &c.OIDCJWKSMinRefresh })},
	{Name: "DEVICE_CACHE_TTL", Default: "5s", Doc: "How long a replica answers device authentication and firmware checks from memory before asking the database again. Changes made through the same replica apply at once; through other replicas (secret rotation, deactivation, a new current firmware) within this time, and firmware notifications wait for it. 0 disables.",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > 10*time.Minute {
				return fmt.Errorf("must be a duration from 0 (off) to 10m, like 5s")
			}
			c.DeviceCacheTTL = d
			return nil
		}},
	{Name: "FIRMWARE_MAX_BUNDLE_BYTES", Default: "67108864", Doc: "Largest firmware bundle upload (64 MiB); more is refused with 413 while reading.", apply: int64Setting(1024, 1<<40, func(c *Config) *int64 { return &c.FirmwareMaxBundleBytes })},
	{Name: "FIRMWARE_MAX_MEMBER_BYTES", Default: "67108864", Doc: "Largest uncompressed size of one bundle member (ZIP bomb guard).", apply: int64Setting(1024, 1<<40, func(c *Config) *int64 { return &c.FirmwareMaxMemberBytes })},
	{Name: "FIRMWARE_MAX_TOTAL_BYTES", Default: "268435456", Doc: "Largest uncompressed size of a whole bundle (ZIP bomb guard).", apply: int64Setting(1024, 1<<40, func(c *Config) *int64 { return &c.FirmwareMaxTotalBytes })},
	{Name: "FIRMWARE_MAX_COMPRESSION_RATIO", Default: "200", Doc: "Largest uncompressed/compressed ratio of a bundle member over 1 MiB (ZIP bomb guard).", apply: int64Setting(2, 100000, func(c *Config) *int64 { return &c.FirmwareMaxRatio })},
	{Name: "TEMP_DIR", Default: "", Doc: "Where uploads are spooled while validated; empty means the system temp directory.", apply: func(c *Config, v string) error { c.TempDir = v; return nil }},
	{Name: "SPOOL_MAX_AGE", Default: "1h", Doc: "Upload spool files (`iotsupport-bundle-*` in `TEMP_DIR`) not written for this long are left over from a crash: `serve` removes them at start, `fsck` counts them (`--repair` removes them). Keep it above the longest upload, so other replicas' uploads in flight are safe.", apply: durationSetting(func(c *Config) *time.Duration { return &c.SpoolMaxAge })},
	{Name: "FIRMWARE_CACHE_DIR", Default: "./data/cache", Doc: "Only with `STORAGE_BACKEND=s3`: local directory caching firmware artifacts by SHA-256, so downloads are sent from disk instead of proxied from S3. Disposable; may be shared by replicas.", apply: func(c *Config, v string) error { return nonEmpty(&c.FirmwareCacheDir, v) }},
	{Name: "FIRMWARE_CACHE_MAX_BYTES", Default: "1073741824", Doc: "Bound of `FIRMWARE_CACHE_DIR` (1 GiB; least recently used artifacts are evicted, larger ones are never cached); `0` turns the cache off.", apply: int64Setting(0, 1<<50, func(c *Config) *int64 { return &c.FirmwareCacheMaxBytes })},
	{Name: "DECODER", Default: "native", Doc: "`native` (built-in Go decoder) or `sidecar` (the older service's HTTP parse sidecar).",
		apply: func(c *Config, v string) error { return oneOf(&c.Decoder, v, "native", "sidecar") }},
	{Name: "DECODE_WORKERS", Default: "2", Doc: "Concurrent decodes in each `serve` or `worker` process; 0 runs none in `serve` (use `iotsupport worker`).", apply: intSetting(0, 256, func(c *Config) *int { return &c.DecodeWorkers })},
	{Name: "DECODE_TIMEOUT", Default: "60s", Doc: "Longest one decode may take; then it ends in ERROR/timeout.", apply: durationSetting(func(c *Config) *time.Duration { return &c.DecodeTimeout })},
	{Name: "DECODER_CACHE_BYTES", Default: "268435456", Doc: "Memory for parsed firmware ELF indexes, kept by ELF SHA-256 (least recently used evicted).", apply: int64Setting(1<<20, 1<<40, func(c *Config) *int64 { return &c.DecoderCacheBytes })},
	{Name: "PARSE_SIDECAR_URL", Default: "", Doc: "Base URL of the parse sidecar (`DECODER=sidecar`).", apply: func(c *Config, v string) error { c.SidecarURL = strings.TrimRight(v, "/"); return nil }},
	{Name: "PARSE_SIDECAR_XFER_DIR", Default: "", Doc: "Directory shared with the sidecar; files are named `coredump_{id}.dmp` / `.elf` and removed afterwards.", apply: func(c *Config, v string) error { c.SidecarXferDir = v; return nil }},
	{Name: "PARSE_SIDECAR_TIMEOUT", Default: "120s", Doc: "Timeout of one sidecar request.", apply: durationSetting(func(c *Config) *time.Duration { return &c.SidecarTimeout })},
	{Name: "AUDIT_RETENTION_DAYS", Default: "365", Doc: "Audit log entries older than this many days are deleted (hourly, in batches).", apply: intSetting(1, 100000, func(c *Config) *int { return &c.AuditRetentionDays })},
	{Name: "FLEET_FLUSH_INTERVAL", Default: "10s", Doc: "How often each replica writes the device check-ins it coalesced in memory (last seen, running version), one statement per table. A crashed replica loses at most this much last-seen history; boots and core dumps are written at once. At most 5m.",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond || d > 5*time.Minute {
				return fmt.Errorf("must be a duration from 100ms to 5m, like 10s")
			}
			c.FleetFlushInterval = d
			return nil
		}},
	{Name: "FLEET_HISTORY_DAYS", Default: "90", Doc: "Days of fleet history kept (devices seen per version and day, boots, crashes); older rows are pruned hourly, in batches. Fleet-view windows reach back at most this far.", apply: intSetting(1, 3650, func(c *Config) *int { return &c.FleetHistoryDays })},
	{Name: "FLEET_PRUNE_BATCH", Default: "1000", Doc: "Fleet history rows one pruning statement deletes.", apply: intSetting(1, 1000000, func(c *Config) *int { return &c.FleetPruneBatch })},
	{Name: "FLEET_MAX_UNSAVED_BOOTS", Default: "100000", Doc: "Device boots a replica holds in memory while the database cannot store them (retried every flush); past it the oldest are dropped and counted in `iotsupport_fleet_dropped_boots_total`.", apply: intSetting(1, 10000000, func(c *Config) *int { return &c.FleetMaxUnsavedBoots })},
	{Name: "ROLLOUT_EVAL_INTERVAL", Default: "1m", Doc: "How often staged rollouts are evaluated (advance, halt, complete). Every replica runs the loop; one evaluation of a rollout at a time. From 1s to 1h.",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > time.Hour {
				return fmt.Errorf("must be a duration from 1s to 1h, like 1m")
			}
			c.RolloutEvalInterval = d
			return nil
		}},
	{Name: "AUDIT_WRITE_TIMEOUT", Default: "10s", Doc: "Longest an audit log write may take after its request; it does not depend on the client staying connected.", apply: durationSetting(func(c *Config) *time.Duration { return &c.AuditWriteTimeout })},
	{Name: "CONSOLE_SESSION_IDLE_TIMEOUT", Default: "2h", Doc: "A web console session not used for this long ends (sign in again).", apply: durationSetting(func(c *Config) *time.Duration { return &c.ConsoleSessionIdle })},
	{Name: "CONSOLE_SESSION_MAX_AGE", Default: "24h", Doc: "A web console session ends this long after sign-in, used or not.", apply: durationSetting(func(c *Config) *time.Duration { return &c.ConsoleSessionMaxAge })},
	{Name: "CONSOLE_OVERVIEW_CACHE_TTL", Default: "10s", Doc: "How long the web console's overview reuses its fleet counts and top crash groups (they read the last week's fleet view rows); `0` counts on every view.", apply: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("must be a duration like 10s, or 0")
		}
		c.ConsoleOverviewTTL = d
		return nil
	}},
	{Name: "CONSOLE_PAGE_SIZE", Default: "50", Doc: "Rows per page of the web console's lists (devices, core dumps, audit log).", apply: intSetting(5, 1000, func(c *Config) *int { return &c.ConsolePageSize })},
	{Name: "MQTT_URL", Default: "", Doc: "Broker for device notifications, `mqtt://host[:1883]` or `mqtts://host[:8883]`; empty disables MQTT.", apply: func(c *Config, v string) error {
		if v != "" && !strings.HasPrefix(v, "mqtt://") && !strings.HasPrefix(v, "mqtts://") {
			return fmt.Errorf("must start with mqtt:// or mqtts://")
		}
		c.MQTTURL = v
		return nil
	}},
	{Name: "MQTT_USERNAME", Default: "", Doc: "MQTT user name.", apply: func(c *Config, v string) error { c.MQTTUsername = v; return nil }},
	{Name: "MQTT_PASSWORD", Default: "", Secret: true, Doc: "MQTT password.", apply: func(c *Config, v string) error { c.MQTTPassword = v; return nil }},
	{Name: "MQTT_CLIENT_ID", Default: "", Doc: "MQTT client id; defaults to `MQTT_USERNAME`, else `iotsupport-backend`. Give each replica its own.", apply: func(c *Config, v string) error { c.MQTTClientID = v; return nil }},
	{Name: "WEBHOOK_URL", Default: "", Doc: "Crash group events (a new group, a regression) and rollout events (started, advanced, halted, …) are POSTed here as JSON, signed in `X-IoTSupport-Signature`; `http://` or `https://`, empty sends none.", apply: func(c *Config, v string) error {
		if v != "" {
			if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("must be an http:// or https:// URL")
			}
		}
		c.WebhookURL = v
		return nil
	}},
	{Name: "WEBHOOK_SECRET", Default: "", Secret: true, Doc: "Key of the webhook's `X-IoTSupport-Signature: sha256=<hex HMAC-SHA256 of the body>`.", apply: func(c *Config, v string) error { c.WebhookSecret = v; return nil }},
	{Name: "WEBHOOK_MAX_ATTEMPTS", Default: "12", Doc: "Deliveries of one webhook event before it is given up (retried with exponential backoff up to 10 minutes apart).", apply: intSetting(1, 100, func(c *Config) *int { return &c.WebhookMaxAttempts })},
	{Name: "WEBHOOK_TIMEOUT", Default: "10s", Doc: "Longest one webhook delivery may take; a slower one is retried like a refused one.", apply: durationSetting(func(c *Config) *time.Duration { return &c.WebhookTimeout })},
	{Name: "CRASH_EVENT_WORKERS", Default: "2", Doc: "Concurrent crash group event deliveries (MQTT, webhook) in each process that runs decode workers; apart from the decodes, so a slow webhook holds none.", apply: intSetting(1, 64, func(c *Config) *int { return &c.CrashEventWorkers })},
	{Name: "TRUST_PROXY_HEADERS", Default: "false", Doc: "Trust the one proxy in front: take the client address from `X-Forwarded-For` and the request's host and scheme from `X-Forwarded-Host`/`-Proto`. Only behind a proxy that sets them.", apply: boolSetting(func(c *Config) *bool { return &c.TrustProxyHeaders })},
	{Name: "IOTSUPPORT_PPROF_ADDR", Default: "", Doc: "Debugging only: a loopback `host:port` (e.g. `127.0.0.1:6060`) on which `serve` exposes Go's `/debug/pprof/` profiles; any other host is refused. Empty: off. `iotsupport bench --profile` sets it for the server it starts.",
		apply: func(c *Config, v string) error {
			if v == "" {
				c.PprofAddr = ""
				return nil
			}
			host, port, err := net.SplitHostPort(v)
			if ip := net.ParseIP(host); err != nil || port == "" || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
				return fmt.Errorf("must be a loopback host:port such as 127.0.0.1:6060 (profiles are never served to the network)")
			}
			c.PprofAddr = v
			return nil
		}},
	{Name: "PUBLIC_BASE_URL", Default: "", Doc: "The URL devices and CI jobs reach this service at (`https://iot.example.com`, optionally with a path prefix), written into the CI upload scripts and provisioning records; empty means derived from each request's `Host` (`X-Forwarded-Host`/`-Proto` only with `TRUST_PROXY_HEADERS`), which must then be a plain host[:port] or the scripts are refused (400).", apply: func(c *Config, v string) error {
		if v == "" {
			c.PublicBaseURL = ""
			return nil
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("must be an http:// or https:// URL with a host and no query, fragment or credentials")
		}
		c.PublicBaseURL = strings.TrimRight(u.String(), "/")
		return nil
	}},
	{Name: "DEVICE_MQTT_URL", Default: "", Doc: "Broker address written into provisioning records as `mqtt_url` (`mqtt://` or `mqtts://`); empty leaves the key out.", apply: func(c *Config, v string) error {
		if v != "" && !strings.HasPrefix(v, "mqtt://") && !strings.HasPrefix(v, "mqtts://") {
			return fmt.Errorf("must start with mqtt:// or mqtts://")
		}
		if len(v) > 1000 || strings.ContainsFunc(v, isControl) {
			return fmt.Errorf("must be at most 1000 characters without control characters")
		}
		c.DeviceMQTTURL = v
		return nil
	}},
	{Name: "PROVISIONING_WIFI_SSID", Default: "", Doc: "Wi-Fi network written into provisioning records as `wifi_ssid` (at most 32 bytes); empty leaves it out.", apply: func(c *Config, v string) error {
		if len(v) > 32 || strings.ContainsFunc(v, isControl) {
			return fmt.Errorf("must be at most 32 bytes without control characters")
		}
		c.ProvisioningWiFiSSID = v
		return nil
	}},
	{Name: "PROVISIONING_WIFI_PASSWORD", Default: "", Secret: true, Doc: "Wi-Fi passphrase written into provisioning records as `wifi_password` (8 to 64 printable ASCII characters); empty leaves it out.", apply: func(c *Config, v string) error {
		if v != "" && (len(v) < 8 || len(v) > 64 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e })) {
			return fmt.Errorf("must be 8 to 64 printable ASCII characters")
		}
		c.ProvisioningWiFiPassword = v
		return nil
	}},
	{Name: "PROVISIONING_BATCH_MAX", Default: "1000", Doc: "Most devices one `POST /api/device-models/{id}/provisioning-batch` creates; the whole ZIP is built in memory before it is sent.", apply: intSetting(1, 100000, func(c *Config) *int { return &c.ProvisioningBatchMax })},
	{Name: "PROVISIONING_MAX_PARTITION_SIZE", Default: "1048576", Doc: "Largest `partition_size` of a provisioning image in bytes (1 MiB); the smallest is 0x3000, as ESP-IDF's generator requires.", apply: intSetting(0x3000, 1<<30, func(c *Config) *int { return &c.ProvisioningMaxPartitionSize })},
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func nonEmpty(dst *string, v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("must not be empty")
	}
	*dst = v
	return nil
}

func oneOf(dst *string, v string, allowed ...string) error {
	v = strings.ToLower(v)
	for _, a := range allowed {
		if v == a {
			*dst = v
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
}

func boolSetting(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("must be true or false")
		}
		*field(c) = b
		return nil
	}
}

func intSetting(lo, hi int, field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("must be an integer")
		}
		if n < lo || n > hi {
			return fmt.Errorf("must be between %d and %d", lo, hi)
		}
		*field(c) = n
		return nil
	}
}

func int64Setting(lo, hi int64, field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("must be an integer")
		}
		if n < lo || n > hi {
			return fmt.Errorf("must be between %d and %d", lo, hi)
		}
		*field(c) = n
		return nil
	}
}

func durationSetting(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("must be a duration like 30s or 2m")
		}
		if d <= 0 {
			return fmt.Errorf("must be positive")
		}
		*field(c) = d
		return nil
	}
}

// Load builds the configuration from a lookup function (os.LookupEnv in production).
// The first invalid setting is returned as an error naming it.
func Load(lookup func(string) (string, bool)) (*Config, error) {
	c := &Config{}
	for _, s := range Settings {
		v, ok := lookup(s.Name)
		if !ok || v == "" {
			v = s.Default
		}
		if err := s.apply(c, v); err != nil {
			if ok {
				return nil, fmt.Errorf("invalid %s=%q: %v", s.Name, mask(s, v), err)
			}
			return nil, fmt.Errorf("invalid %s: %v", s.Name, err)
		}
	}
	if c.StorageBackend == "s3" && c.S3AccessKey == "" != (c.S3SecretKey == "") {
		return nil, fmt.Errorf("invalid S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY: set both or neither")
	}
	if c.Decoder == "sidecar" && (c.SidecarURL == "" || c.SidecarXferDir == "") {
		return nil, fmt.Errorf("invalid DECODER=sidecar: PARSE_SIDECAR_URL and PARSE_SIDECAR_XFER_DIR are required")
	}
	if c.OIDCEnabled && (c.OIDCIssuerURL == "" || c.Audience() == "") {
		return nil, fmt.Errorf("invalid OIDC_ENABLED=true: OIDC_ISSUER_URL and OIDC_AUDIENCE (or OIDC_CLIENT_ID) are required")
	}
	if c.AuthMode == "insecure-dev" {
		if ip := net.ParseIP(c.Host); c.Host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("invalid AUTH_MODE=insecure-dev: HOST must be a loopback address, not %s", c.Host)
		}
	}
	return c, nil
}

// FromEnv loads the configuration from the process environment.
func FromEnv() (*Config, error) { return Load(os.LookupEnv) }

func mask(s Setting, v string) string {
	if !s.Secret || v == "" {
		return v
	}
	if u, err := url.Parse(v); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxx")
			// Readable as masked: "****" itself would be escaped to %2A%2A%2A%2A.
			return strings.Replace(u.String(), ":xxxx@", ":****@", 1)
		}
		return v
	}
	if strings.HasPrefix(v, "sqlite:") {
		return v
	}
	return "****"
}

// Effective returns NAME=value lines for every setting, secrets masked, sorted as in
// Settings; a setting left at its default (unset, empty or equal to it) ends in "  # default".
func Effective(lookup func(string) (string, bool)) []string {
	out := make([]string, 0, len(Settings))
	for _, s := range Settings {
		v, ok := lookup(s.Name)
		if !ok || v == "" {
			v = s.Default
		}
		l := s.Name + "=" + mask(s, v)
		if v == s.Default {
			l += "  # default"
		}
		out = append(out, l)
	}
	return out
}

// Names returns every setting name, sorted.
func Names() []string {
	n := make([]string, len(Settings))
	for i, s := range Settings {
		n[i] = s.Name
	}
	sort.Strings(n)
	return n
}

// DatabaseLabel names the database for people: a SQLite path made absolute (so a
// command run from another directory shows which file it used), a PostgreSQL URL
// with its password masked.
func (c *Config) DatabaseLabel() string {
	if p, ok := strings.CutPrefix(c.DatabaseURL, "sqlite:"); ok {
		if a, err := filepath.Abs(p); err == nil && p != ":memory:" {
			return "sqlite:" + a
		}
		return c.DatabaseURL
	}
	return mask(Setting{Secret: true}, c.DatabaseURL)
}

// Addr is the listen address.
func (c *Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// MarkdownTable renders the settings table kept in the README.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| setting | default | meaning |\n|---|---|---|\n")
	for _, s := range Settings {
		def := "(empty)"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.Name, def, s.Doc)
	}
	return b.String()
}
