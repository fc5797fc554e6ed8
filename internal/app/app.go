// Package app wires configuration, database, object storage, services and the HTTP
// server into a running process. Commands in cmd/iotsupport call into it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/blobcache"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/console"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/decoding"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/fsck"
	"github.com/iotsupport/iotsupport/internal/httpapi"
	"github.com/iotsupport/iotsupport/internal/jobs"
	"github.com/iotsupport/iotsupport/internal/legacy"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/outbox"
	"github.com/iotsupport/iotsupport/internal/provisioning"
	"github.com/iotsupport/iotsupport/internal/publicurl"
	"github.com/iotsupport/iotsupport/internal/rollouts"
	"github.com/iotsupport/iotsupport/internal/sessions"
	"github.com/iotsupport/iotsupport/internal/testsession"
)

// NewLogger builds the process logger from LOG_LEVEL and LOG_FORMAT.
func NewLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// OpenStore opens the configured object store (creating the S3 bucket when missing).
func OpenStore(ctx context.Context, cfg *config.Config) (blob.Store, error) {
	switch cfg.StorageBackend {
	case "s3":
		s, err := blob.NewS3(ctx, blob.S3Config{Endpoint: cfg.S3Endpoint, AccessKeyID: cfg.S3AccessKey, SecretAccessKey: cfg.S3SecretKey,
			Bucket: cfg.S3Bucket, Region: cfg.S3Region, UseSSL: cfg.S3UseSSL, PathStyle: cfg.S3PathStyle})
		if err != nil {
			return nil, fmt.Errorf("object storage (S3 %s, bucket %s): %w", cfg.S3Endpoint, cfg.S3Bucket, storeCause(err))
		}
		return s, nil
	default:
		s, err := blob.NewLocal(cfg.StorageDir)
		if err != nil {
			return nil, fmt.Errorf("object storage (directory %s): %w", cfg.StorageDir, err)
		}
		return s, nil
	}
}

// OpenDB opens the database and brings the schema up to date, or refuses when
// migrate is false and migrations are pending. It creates a missing database: only
// `serve` and `migrate` call it.
func OpenDB(ctx context.Context, cfg *config.Config, migrate bool, log *slog.Logger) (*db.DB, error) {
	return openDB(ctx, cfg, migrate, false, log)
}

// OpenExistingDB is OpenDB for every other command: a missing database (no SQLite file,
// or a database without our schema) is refused instead of created, so a command run
// from another directory or with a mistyped DATABASE_URL cannot write into a new empty
// database the server never sees.
func OpenExistingDB(ctx context.Context, cfg *config.Config, migrate bool, log *slog.Logger) (*db.DB, error) {
	return openDB(ctx, cfg, migrate, true, log)
}

func openDB(ctx context.Context, cfg *config.Config, migrate, mustExist bool, log *slog.Logger) (*db.DB, error) {
	d, err := db.OpenWith(ctx, cfg.DatabaseURL, db.Options{MaxConns: cfg.DatabaseMaxConns, MustExist: mustExist})
	if err != nil {
		if errors.Is(err, db.ErrNoDatabase) {
			return nil, fmt.Errorf("%w; create it with `iotsupport migrate` (or `serve`), or set DATABASE_URL to the service's database", err)
		}
		return nil, err
	}
	// An older service's database is adopted only by `iotsupport migrate`, never silently.
	if err := legacy.CheckAdopted(ctx, d); err != nil {
		d.Close()
		return nil, err
	}
	if mustExist {
		ok, err := d.HasSchema(ctx)
		if err == nil && !ok {
			err = fmt.Errorf("%w: %s holds no IoT Support schema; create it with `iotsupport migrate` (or `serve`), or set DATABASE_URL to the service's database",
				db.ErrNoDatabase, cfg.DatabaseLabel())
		}
		if err != nil {
			d.Close()
			return nil, err
		}
	}
	if migrate {
		n, err := d.Migrate(ctx)
		if err == nil {
			err = jobs.Migrate(ctx, d)
		}
		if err != nil {
			d.Close()
			return nil, err
		}
		if n > 0 {
			log.Info("applied database migrations", "count", n)
		}
		return d, nil
	}
	pending, err := d.Pending(ctx)
	if err != nil {
		d.Close()
		return nil, err
	}
	if jp, err := jobs.Pending(ctx, d); err == nil && jp {
		pending++
	}
	if pending > 0 {
		d.Close()
		return nil, fmt.Errorf("database schema is behind by %d migration(s); run `iotsupport migrate` or start without --no-migrate", pending)
	}
	return d, nil
}

// CleanSpools removes the upload spool files a crash left in TEMP_DIR (older than
// SPOOL_MAX_AGE, so other replicas' uploads in flight stay) and returns how many.
func CleanSpools(cfg *config.Config, log *slog.Logger) int {
	stale, err := firmware.StaleSpools(cfg.TempDir, cfg.SpoolMaxAge, time.Now())
	if err != nil {
		log.Warn("spool cleanup skipped", "error", err)
		return 0
	}
	n := 0
	for _, p := range stale {
		if err := os.Remove(p); err == nil {
			n++
		} else if !errors.Is(err, os.ErrNotExist) {
			log.Warn("remove stale spool file", "path", p, "error", err)
		}
	}
	if n > 0 {
		log.Info("removed upload spool files left by a crash", "count", n)
	}
	return n
}

// Services is the domain service graph: each table's owner, wired to the owners it
// depends on through its constructor. Assemble is the one place that builds it; every
// command that touches tables or objects gets its services from there.
type Services struct {
	Devices   *devices.Service
	Firmware  *firmware.Service
	Coredumps *coredumps.Service
	Audit     *auth.Audit
	// Queue inserts decode jobs (insert-only: it needs no workers).
	Queue *decoding.Queue
	// CrashGroups groups decoded dumps (assigned in the decode's transaction).
	CrashGroups *crashgroups.Service
	// Decoding decodes dumps; Jobs runs it as River workers when started.
	Decoding *decoding.Service
	Jobs     *jobs.Client
	Fsck     *fsck.Checker
	// Fleet records device telemetry and answers the fleet view.
	Fleet *fleet.Service
	// Rollouts runs staged rollouts and device pins.
	Rollouts *rollouts.Service
}

// Assemble builds the service graph over an open database and store. notifier tells
// devices about changes (notify.Nop{} for commands that send nothing); reg may be nil.
func Assemble(cfg *config.Config, log *slog.Logger, d *db.DB, store blob.Store, notifier notify.Notifier, reg prometheus.Registerer) (*Services, error) {
	s := &Services{Audit: auth.NewAudit(d)}
	s.Devices = devices.NewService(d, auth.Hash, firmware.ModelObjects{}, coredumps.DeviceObjects{}, notifier)
	s.Devices.CacheCredentials(cfg.DeviceCacheTTL)
	inserts, err := jobs.New(d, nil, jobs.Config{Timeout: cfg.DecodeTimeout}, log)
	if err != nil {
		return nil, err
	}
	if s.Queue, err = decoding.NewQueue(d, inserts, log); err != nil {
		return nil, err
	}
	s.Coredumps = coredumps.NewService(d, store, s.Queue, s.Audit, fleet.Dumps{}, coredumps.Options{MaxBytes: int64(cfg.CoredumpMaxBytes), Keep: cfg.MaxCoredumps,
		UploadsPerHour: cfg.CoredumpUploadsPerHour}, log)
	s.Firmware = firmware.NewService(d, store, s.Devices, s.Coredumps, notifier, log, firmware.Config{
		MaxFirmwares: cfg.MaxFirmwares, MaxBundleBytes: cfg.FirmwareMaxBundleBytes, TempDir: cfg.TempDir,
		Limits: bundle.Limits{MaxMemberBytes: cfg.FirmwareMaxMemberBytes, MaxTotalBytes: cfg.FirmwareMaxTotalBytes, MaxRatio: cfg.FirmwareMaxRatio},
	})
	s.Firmware.CacheCurrent(cfg.DeviceCacheTTL)
	var dec decoding.Decoder
	if cfg.Decoder == "sidecar" {
		dec = decoding.NewSidecar(cfg.SidecarURL, cfg.SidecarXferDir, cfg.SidecarTimeout)
	}
	jobInserter, err := jobs.NewInserter(d, inserts, log)
	if err != nil {
		return nil, err
	}
	webhookAttempts := 0
	if cfg.WebhookURL != "" {
		webhookAttempts = cfg.WebhookMaxAttempts
	}
	s.CrashGroups = crashgroups.NewService(d, s.Firmware, jobInserter, s.Coredumps, crashgroups.Options{WebhookAttempts: webhookAttempts, MQTTEvents: cfg.MQTTURL != ""}, log)
	s.Fleet = fleet.NewService(d, s.CrashGroups, fleet.Options{FlushInterval: cfg.FleetFlushInterval, HistoryDays: cfg.FleetHistoryDays,
		PruneBatch: cfg.FleetPruneBatch, MaxUnsavedBoots: cfg.FleetMaxUnsavedBoots}, log, reg)
	s.Rollouts = rollouts.NewService(d, s.Firmware, s.Fleet, s.CrashGroups, s.Devices, s.Audit, s.CrashGroups, rollouts.Options{EvalInterval: cfg.RolloutEvalInterval}, log)
	s.Decoding = decoding.NewService(d, s.Coredumps, s.Firmware, s.CrashGroups, dec, decoding.Config{CacheBytes: cfg.DecoderCacheBytes,
		MaxDumpBytes: int64(cfg.CoredumpMaxBytes) * 2}, log, reg)
	workers := decoding.Workers(s.Decoding)
	// Crash group events go out over MQTT when the notifier can publish them (notify.MQTT).
	var pub crashgroups.Publisher = notify.Nop{}
	if p, ok := notifier.(crashgroups.Publisher); ok {
		pub = p
	}
	crashgroups.AddWorkers(workers, s.CrashGroups, pub, crashgroups.Webhook{URL: cfg.WebhookURL, Secret: cfg.WebhookSecret, Timeout: cfg.WebhookTimeout})
	if s.Jobs, err = jobs.New(d, workers, jobs.Config{Workers: cfg.DecodeWorkers, Timeout: cfg.DecodeTimeout,
		Queues: map[string]int{crashgroups.EventsQueue: cfg.CrashEventWorkers}}, log); err != nil {
		return nil, err
	}
	s.Fsck = fsck.New(d, store, s.Firmware, s.Coredumps)
	return s, nil
}

// App is a running service's parts: the service graph and what serves it.
type App struct {
	*Services
	Cfg      *config.Config
	Log      *slog.Logger
	DB       *db.DB
	Store    blob.Store
	Metrics  *prometheus.Registry
	Tokens   *auth.Tokens
	Auth     *auth.Authenticator
	Outbox   *outbox.Worker
	Notifier notify.Notifier
	HTTP     *httpapi.Server

	// Provisioning issues provisioning records.
	Provisioning *provisioning.Service
}

// StartBackground runs the outbox drain and, when DECODE_WORKERS > 0, the decode
// workers until ctx ends; stop waits for running decodes (bounded by SHUTDOWN_TIMEOUT).
func (a *App) StartBackground(ctx context.Context) (stop func(), err error) {
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go a.Outbox.Run(bg)
	go a.Fleet.Run(bg)
	go a.Rollouts.Run(bg)
	go a.Audit.RunPruner(bg, time.Duration(a.Cfg.AuditRetentionDays)*24*time.Hour, time.Hour, a.Log)
	if a.Cfg.FsckInterval > 0 {
		go fsck.NewPeriodic(a.Fsck, a.Cfg.FsckGrace, a.Log, a.Metrics).Run(bg, a.Cfg.FsckInterval)
	}
	workers := a.Cfg.DecodeWorkers > 0
	if workers {
		// Dumps decoded before crash grouping (or under an older GROUPING_VERSION) are
		// grouped by a one-off durable job, queued once whichever process starts first.
		if err := a.CrashGroups.EnsureBackfill(ctx); err != nil {
			cancel()
			return nil, err
		}
		if err := a.Jobs.Start(bg); err != nil {
			cancel()
			return nil, fmt.Errorf("start decode workers: %w", err)
		}
		// Every retry schedule ends well within 30 minutes; older PENDING rows lost their job.
		go a.Coredumps.RunSweeper(bg, 5*time.Minute, 30*time.Minute, a.Log)
	}
	return func() {
		if workers {
			sctx, c := context.WithTimeout(context.Background(), a.Cfg.ShutdownTimeout)
			defer c()
			// Running decodes finish or, past the deadline, are cancelled and return to the queue.
			if err := a.Jobs.Stop(sctx); err != nil {
				_ = a.Jobs.StopAndCancel(context.Background())
			}
		}
		cancel()
	}, nil
}

// New builds every service over an open database and store. It contacts the OIDC
// issuer when OIDC is enabled.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, d *db.DB, store blob.Store) (*App, error) {
	if cfg.TempDir != "" {
		// In the container images TEMP_DIR sits on a fresh volume (an emptyDir on /data).
		if err := os.MkdirAll(cfg.TempDir, 0o700); err != nil {
			return nil, fmt.Errorf("create TEMP_DIR: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	httpapi.RegisterCollectors(reg)
	a := &App{Cfg: cfg, Log: log, DB: d, Store: store, Metrics: reg}
	a.Tokens = auth.NewTokens(d)
	var verifier *auth.OIDC
	if cfg.OIDCEnabled {
		v, err := auth.NewOIDC(ctx, auth.OIDCConfig{IssuerURL: cfg.OIDCIssuerURL, Audience: cfg.Audience(), ClockSkew: cfg.OIDCClockSkew, JWKSMinRefresh: cfg.OIDCJWKSMinRefresh,
			ViewerRole: cfg.OIDCViewerRole, EditorRole: cfg.OIDCEditorRole, AdminRole: cfg.OIDCAdminRole, PipelineRole: cfg.OIDCPipelineRole})
		if err != nil {
			return nil, err
		}
		verifier = v
	}
	authOpts := auth.Options{Mode: cfg.AuthMode, AppEnv: cfg.AppEnv,
		CookieName: cfg.OIDCCookieName, DeviceFailuresPerMinute: cfg.DeviceFailuresPerMinute,
		UnknownDeviceFailuresPerMinute: cfg.UnknownDeviceFailuresPerMinute, BearerFailuresPerMinute: cfg.BearerFailuresPerMinute,
		TrustProxy: cfg.TrustProxyHeaders}
	consoleSessions := sessions.New(d, sessions.Config{Idle: cfg.ConsoleSessionIdle, Max: cfg.ConsoleSessionMaxAge})
	authOpts.Sessions, authOpts.SessionCookie = consoleSessions, sessions.CookieName
	var testSessions *testsession.Store
	if cfg.AppEnv == "testing" {
		testSessions = testsession.New(nil)
		authOpts.TestSession = testSessions.Identity
	}
	a.Notifier = notify.Nop{}
	if cfg.MQTTURL != "" {
		n, err := notify.New(ctx, notify.Config{URL: cfg.MQTTURL, Username: cfg.MQTTUsername, Password: cfg.MQTTPassword, ClientID: cfg.MQTTClientID}, log, reg)
		if err != nil {
			return nil, err
		}
		a.Notifier = n
	}
	svc, err := Assemble(cfg, log, d, store, a.Notifier, reg)
	if err != nil {
		return nil, err
	}
	a.Services = svc
	a.Auth = auth.NewAuthenticator(a.Tokens, a.Devices, verifier, authOpts, log)
	a.Outbox = outbox.NewWorker(d, store, log, reg)
	if cfg.StorageBackend == "s3" && cfg.FirmwareCacheMaxBytes > 0 {
		// Downloads then go out of a local file (sendfile) instead of through the process.
		fc, err := blobcache.New(store, cfg.FirmwareCacheDir, cfg.FirmwareCacheMaxBytes, blobcache.Options{Log: log, Registerer: reg})
		if err != nil {
			log.Warn("firmware cache disabled, downloads stream from S3", "dir", cfg.FirmwareCacheDir, "error", err)
		} else {
			a.Firmware.Cache = fc
		}
	}
	a.Provisioning = provisioning.NewService(a.Devices, provisioning.Config{BaseURL: cfg.PublicBaseURL, MQTTURL: cfg.DeviceMQTTURL,
		WiFiSSID: cfg.ProvisioningWiFiSSID, WiFiPassword: cfg.ProvisioningWiFiPassword,
		BatchMax: cfg.ProvisioningBatchMax, MaxPartitionSize: cfg.ProvisioningMaxPartitionSize})
	var sso *auth.SSO
	if verifier != nil && cfg.OIDCClientID != "" {
		if sso, err = auth.NewSSO(ctx, verifier, cfg.OIDCIssuerURL, cfg.OIDCClientID, cfg.OIDCClientSecret); err != nil {
			return nil, err
		}
	}
	pub := publicurl.Resolver{Configured: cfg.PublicBaseURL, TrustProxy: cfg.TrustProxyHeaders}
	ui, err := console.New(console.Deps{Log: log, Devices: a.Devices, Firmware: a.Firmware, Coredumps: a.Coredumps,
		CrashGroups: a.CrashGroups, Fleet: a.Fleet, Tokens: a.Tokens,
		Audit: a.Audit, Auth: a.Auth, Sessions: consoleSessions, TrustProxy: cfg.TrustProxyHeaders, PageSize: cfg.ConsolePageSize, OverviewTTL: cfg.ConsoleOverviewTTL,
		SSO: sso, PublicURL: pub})
	if err != nil {
		return nil, err
	}
	a.HTTP = httpapi.New(httpapi.Deps{Console: ui, Log: log, Devices: a.Devices, Coredumps: a.Coredumps, CrashGroups: a.CrashGroups, Metrics: reg, AppEnv: cfg.AppEnv,
		PublicURL: pub,
		Auth:      a.Auth, Tokens: a.Tokens, Audit: a.Audit, AuditWriteTimeout: cfg.AuditWriteTimeout, Firmware: a.Firmware, Fleet: a.Fleet, Rollouts: a.Rollouts, InsecureDev: cfg.AuthMode == auth.ModeInsecureDev,
		TestSessions: testSessions, CookieName: cfg.OIDCCookieName, DrainKey: cfg.DrainAuthKey, Provisioning: a.Provisioning,
		Ready: []httpapi.Checker{httpapi.DatabaseCheck(d), httpapi.StorageCheck(store),
			httpapi.OutboxCheck(func(ctx context.Context) (int, *time.Time, error) { return outbox.Backlog(ctx, d) })}})
	return a, nil
}

// EnsureAdminToken creates an admin token on first start when no token exists and
// OIDC is off, so a fresh install is usable without being open. It returns the
// secret ("" when nothing was created).
func (a *App) EnsureAdminToken(ctx context.Context) (string, error) {
	if a.Cfg.OIDCEnabled || a.Cfg.AuthMode == auth.ModeInsecureDev {
		return "", nil
	}
	n, err := a.Tokens.ActiveCount(ctx)
	if err != nil || n > 0 {
		return "", err
	}
	_, secret, err := a.Tokens.Create(ctx, "initial-admin", string(auth.Admin))
	if apperr.KindOf(err) == apperr.Exists {
		return "", nil // another replica made it first
	}
	return secret, err
}

// HTTPServer is the server Serve runs a.HTTP with: request bodies bounded by
// REQUEST_BODY_TIMEOUT (whether or not the handler reads them), headers by
// READ_HEADER_TIMEOUT. Serve it on httpapi.Listener(ln).
func (a *App) HTTPServer(ctx context.Context) *http.Server {
	return &http.Server{
		Handler:           bodyIdleTimeout(a.HTTP, a.Cfg.RequestBodyTimeout),
		ReadHeaderTimeout: a.Cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.Log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// Serve listens on the configured address until ctx is cancelled, then stops
// accepting and lets in-flight requests finish within SHUTDOWN_TIMEOUT.
func (a *App) Serve(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", a.Cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.Cfg.Addr(), err)
	}
	srv := a.HTTPServer(ctx)
	if a.Cfg.PprofAddr != "" {
		stopPprof, err := startPprof(a.Cfg.PprofAddr, a.Log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		defer stopPprof()
	}
	a.Log.Info("listening", "addr", ln.Addr().String(), "database", strings.SplitN(a.Cfg.DatabaseURL, ":", 2)[0], "storage", a.Cfg.StorageBackend)
	if ready != nil {
		ready(ln.Addr().String())
	}
	stopBG, err := a.StartBackground(ctx)
	if err != nil {
		return err
	}
	defer stopBG()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(httpapi.Listener(ln)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.Log.Info("shutting down", "timeout", a.Cfg.ShutdownTimeout.String())
	a.HTTP.SetShuttingDown()
	sctx, cancel := context.WithTimeout(context.Background(), a.Cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		a.Log.Warn("shutdown deadline passed; closing remaining connections", "error", err)
		_ = srv.Close()
	}
	// Firmware notifications still waiting for other replicas' caches go out now.
	a.Firmware.FlushNotifications()
	// Check-ins coalesced since the last flush are written before the process ends.
	if err := a.Fleet.Flush(sctx); err != nil {
		a.Log.Error("fleet: final flush failed; last-seen updates since the previous flush are lost", "error", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
