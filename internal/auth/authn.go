package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// Mode values.
const (
	ModeStandard    = "standard"
	ModeInsecureDev = "insecure-dev"
)

// DeviceStore looks devices up for authentication.
type DeviceStore interface {
	Credentials(ctx context.Context, key string) (*devices.Device, string, error)
	GetDeviceByKey(ctx context.Context, key string) (*devices.Device, error)
}

// Options configure the Authenticator.
type Options struct {
	Mode       string
	AppEnv     string
	CookieName string
	// DeviceFailuresPerMinute limits failed logins per device key.
	DeviceFailuresPerMinute int
	// UnknownDeviceFailuresPerMinute limits logins with unknown device keys per source
	// address (key guessing); far higher, as a whole site may sit behind one address.
	UnknownDeviceFailuresPerMinute int
	// BearerFailuresPerMinute limits failed API token and JWT logins per source address.
	BearerFailuresPerMinute int
	// TrustProxy takes the client address from X-Forwarded-For.
	TrustProxy bool
	// TestSession, set only with APP_ENV=testing, resolves a session cookie made by
	// /api/testing/auth/session (nil when the value is not such a session).
	TestSession func(cookie string) *Identity
	// Sessions resolves the web console's session cookie (SessionCookie), so /api answers
	// a signed-in browser too; nil when there is no console.
	Sessions      Sessions
	SessionCookie string
}

// Sessions looks up a console session by its cookie value: nil when unknown or expired.
type Sessions interface {
	Identity(ctx context.Context, cookie string) (*Identity, error)
}

// Authenticator resolves identities and checks route policy.
type Authenticator struct {
	tokens  *Tokens
	devices DeviceStore
	oidc    *OIDC // nil when OIDC is disabled
	opts    Options
	// keys counts wrong secrets per device key, sources unknown device keys per address,
	// bearers failed token logins per address.
	keys, sources, bearers *FailureLimiter
	log                    *slog.Logger
}

// NewAuthenticator builds an Authenticator; oidc may be nil.
func NewAuthenticator(tokens *Tokens, devs DeviceStore, oidc *OIDC, opts Options, log *slog.Logger) *Authenticator {
	if opts.CookieName == "" {
		opts.CookieName = "access_token"
	}
	if opts.DeviceFailuresPerMinute <= 0 {
		opts.DeviceFailuresPerMinute = 10
	}
	if opts.UnknownDeviceFailuresPerMinute <= 0 {
		opts.UnknownDeviceFailuresPerMinute = 300
	}
	if opts.BearerFailuresPerMinute <= 0 {
		opts.BearerFailuresPerMinute = 30
	}
	if log == nil {
		log = slog.Default()
	}
	return &Authenticator{tokens: tokens, devices: devs, oidc: oidc, opts: opts,
		keys:    NewFailureLimiter(opts.DeviceFailuresPerMinute, time.Minute),
		sources: NewFailureLimiter(opts.UnknownDeviceFailuresPerMinute, time.Minute),
		bearers: NewFailureLimiter(opts.BearerFailuresPerMinute, time.Minute), log: log}
}

var deviceClientID = regexp.MustCompile(`^iotdevice-([a-z0-9_]+)-([a-z0-9]{8})$`)

func unauthenticated(msg string) error {
	return &apperr.Error{Kind: apperr.Unauthenticated, Msg: msg}
}

func forbidden(msg string) error {
	return &apperr.Error{Kind: apperr.Forbidden, Msg: msg}
}

// dummyHash is compared against when a device key is unknown, so the work done does
// not reveal whether the key exists.
var dummyHash = Hash("no-such-device")

// Authenticate returns the caller's identity for a route with the given need. A request
// without credentials is a 401; bad credentials are a 401 (or 429 when rate-limited).
func (a *Authenticator) Authenticate(r *http.Request, need Need) (*Identity, error) {
	if a.opts.Mode == ModeInsecureDev {
		return a.insecure(r, need)
	}
	authz := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(authz, "Basic "):
		return a.basicDevice(r)
	case strings.HasPrefix(authz, "Bearer "):
		raw := strings.TrimSpace(strings.TrimPrefix(authz, "Bearer "))
		return a.bearer(r, raw, false)
	case authz != "":
		return nil, unauthenticated("Unsupported Authorization scheme")
	}
	if a.opts.TestSession != nil && need != DeviceOnly {
		if c, err := r.Cookie(a.opts.CookieName); err == nil {
			if id := a.opts.TestSession(c.Value); id != nil {
				return id, nil
			}
		}
	}
	if a.opts.Sessions != nil && need != DeviceOnly {
		if c, err := r.Cookie(a.opts.SessionCookie); err == nil && c.Value != "" {
			id, err := a.opts.Sessions.Identity(r.Context(), c.Value)
			if err != nil || id != nil {
				return id, err
			}
		}
	}
	if a.oidc != nil && need != DeviceOnly {
		if c, err := r.Cookie(a.opts.CookieName); err == nil && c.Value != "" {
			return a.bearer(r, c.Value, true)
		}
	}
	if need == DeviceOnly {
		return nil, unauthenticated("Device authentication required")
	}
	return nil, unauthenticated("Authentication is required")
}

// bearer checks an API token or a JWT. Failures are counted per source address, and a
// source over the limit is refused before any work: each failure may cost a database
// lookup or (for an unknown key id) a JWKS request.
func (a *Authenticator) bearer(r *http.Request, raw string, fromCookie bool) (*Identity, error) {
	src := a.clientIP(r)
	if blocked, wait := a.bearers.Blocked(src); blocked {
		return nil, rateLimited("Too many failed logins", wait)
	}
	var id *Identity
	var err error
	if strings.HasPrefix(raw, TokenPrefix) && !fromCookie {
		id, err = a.tokens.Authenticate(r.Context(), raw)
		if err == nil && id == nil {
			err = unauthenticated("Invalid or revoked API token")
		}
	} else {
		id, err = a.jwt(r.Context(), raw, fromCookie)
	}
	if apperr.KindOf(err) == apperr.Unauthenticated {
		a.bearers.Fail(src)
	}
	return id, err
}

// invalidToken is every JWT refusal's text: why a token failed (issuer, audience, key)
// would tell a forger what to change, so the detail goes to the log only.
const invalidToken = "Invalid or expired token"

func (a *Authenticator) jwt(ctx context.Context, raw string, fromCookie bool) (*Identity, error) {
	if a.oidc == nil {
		return nil, unauthenticated("Invalid API token")
	}
	c, err := a.oidc.Verify(ctx, raw)
	if err != nil {
		a.log.Info("JWT refused", "error", err)
		return nil, unauthenticated(invalidToken)
	}
	if m := deviceClientID.FindStringSubmatch(c.Azp); m != nil && !fromCookie {
		d, err := a.devices.GetDeviceByKey(ctx, m[2])
		if apperr.KindOf(err) == apperr.NotFound {
			a.log.Info("JWT refused", "error", "unknown device", "azp", c.Azp)
			return nil, unauthenticated(invalidToken)
		}
		if err != nil {
			return nil, err
		}
		if d.ModelCode != m[1] {
			a.log.Info("JWT refused", "error", "client id does not match the device's model", "azp", c.Azp)
			return nil, unauthenticated(invalidToken)
		}
		return deviceIdentity(d), nil
	}
	return &Identity{Kind: KindOIDC, Name: c.Subject, Roles: a.oidc.MapRoles(c.Roles), Email: c.Email, FullName: c.Name, FromCookie: fromCookie}, nil
}

func deviceIdentity(d *devices.Device) *Identity {
	return &Identity{Kind: KindDevice, Name: d.Key, DeviceID: d.ID, DeviceKey: d.Key, ModelID: d.DeviceModelID, Active: d.Active}
}

// basicDevice checks a device's key and secret. A correct login is never refused: limits
// apply only to failing attempts, so one misconfigured device cannot lock out the others
// behind its address (a site's NAT), nor can anyone who knows a key lock its device out.
// Wrong secrets count against their key; unknown keys (guessing) against the source
// address, with a far higher bound. Once either is over its limit, failures answer 429.
func (a *Authenticator) basicDevice(r *http.Request) (*Identity, error) {
	key, secret, ok := r.BasicAuth()
	if !ok {
		return nil, unauthenticated("Malformed Basic credentials")
	}
	var d *devices.Device
	stored := dummyHash
	if naming.ValidDeviceKey(key) {
		dev, h, err := a.devices.Credentials(r.Context(), key)
		if err != nil && apperr.KindOf(err) != apperr.NotFound {
			return nil, err
		}
		if err == nil && h != "" {
			d, stored = dev, h
		}
	}
	if subtle.ConstantTimeCompare([]byte(Hash(secret)), []byte(stored)) == 1 && d != nil {
		return deviceIdentity(d), nil
	}
	src := "ip:" + a.clientIP(r)
	if d == nil {
		a.sources.Fail(src)
	} else {
		a.keys.Fail(key)
		if blocked, wait := a.keys.Blocked(key); blocked {
			return nil, rateLimited("Too many failed device logins", wait)
		}
	}
	// A source over its limit gets 429 for known keys too, or 401 against 429 would tell
	// which keys exist.
	if blocked, wait := a.sources.Blocked(src); blocked {
		return nil, rateLimited("Too many failed device logins", wait)
	}
	return nil, unauthenticated("Invalid device credentials")
}

func rateLimited(what string, wait time.Duration) error {
	secs := int(wait.Seconds()) + 1
	return &apperr.Error{Kind: apperr.RateLimited, Msg: fmt.Sprintf("%s; retry in %d s", what, secs), RetryAfterSeconds: secs}
}

func (a *Authenticator) insecure(r *http.Request, need Need) (*Identity, error) {
	if need != DeviceOnly {
		return &Identity{Kind: KindInsecure, Name: "insecure-dev", Roles: map[Role]bool{Admin: true, Pipeline: true}}, nil
	}
	key := r.URL.Query().Get("device_key")
	if key == "" {
		return nil, unauthenticated("Device authentication required")
	}
	d, err := a.devices.GetDeviceByKey(r.Context(), key)
	if err != nil {
		return nil, err
	}
	return deviceIdentity(d), nil
}

// Authorize checks that id may call a route with the given need and method.
func (a *Authenticator) Authorize(r *http.Request, id *Identity, need Need) error {
	switch need {
	case Public, TestingOnly, Authenticated:
		return nil
	case DeviceOnly:
		if !id.IsDevice() {
			return forbidden("Only devices may call this endpoint")
		}
		if !id.Active {
			return forbidden("Device is inactive")
		}
		return nil
	}
	if id.IsDevice() {
		return forbidden("Devices may not call this endpoint")
	}
	if len(id.Roles) == 0 {
		return forbidden("No recognized role -- access denied")
	}
	var ok bool
	switch need {
	case PipelineOnly:
		ok = id.Has(Pipeline)
	case ViewerRole:
		ok = id.Has(Viewer)
	case EditorRole:
		ok = id.Has(Editor)
	case AdminRole, TestingAdmin:
		ok = id.Has(Admin)
	}
	if !ok {
		return forbidden("Your role does not allow this operation; it needs " + needed(need))
	}
	if id.FromCookie && !safeMethod(r.Method) && !sameOrigin(r, a.opts.TrustProxy) {
		return forbidden("Cross-site request refused (Origin/Referer does not match)")
	}
	return nil
}

// needed names the role a refused caller lacks (higher roles include lower ones).
func needed(need Need) string {
	switch need {
	case PipelineOnly:
		return "the pipeline role"
	case ViewerRole:
		return "the viewer role (or editor, admin)"
	case EditorRole:
		return "the editor role (or admin)"
	default:
		return "the admin role"
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin is the CSRF defence for cookie sessions: a browser always sends Origin
// (or at least Referer) on cross-site writes, and it must name this host.
func sameOrigin(r *http.Request, trustProxy bool) bool {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return false
	}
	host := r.Host
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" && trustProxy {
		host = fh
	}
	rest, ok := strings.CutPrefix(src, "https://")
	if !ok {
		rest, ok = strings.CutPrefix(src, "http://")
	}
	if !ok {
		return false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return strings.EqualFold(rest, host)
}

func (a *Authenticator) clientIP(r *http.Request) string {
	if a.opts.TrustProxy {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ErrInsecureNotLoopback is returned when insecure-dev mode is asked for on a public address.
var ErrInsecureNotLoopback = errors.New("AUTH_MODE=insecure-dev requires HOST to be a loopback address")

// Login checks a credential pasted into the console's sign-in form (an API token or, with
// OIDC, a JWT) under the same per-address failure limit as bearer logins. Devices and
// tokens without an admin-side role are refused: the console is for people.
func (a *Authenticator) Login(r *http.Request, credential string) (*Identity, error) {
	credential = strings.TrimSpace(credential)
	if credential == "" {
		return nil, unauthenticated("Paste an API token")
	}
	id, err := a.bearer(r, credential, false)
	if err != nil {
		return nil, err
	}
	if id.IsDevice() || !id.Has(Viewer) {
		return nil, forbidden("This token has no viewer, editor or admin role")
	}
	id.FromCookie = true
	return id, nil
}
