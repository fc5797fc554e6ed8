// Package auth decides who a request comes from (API tokens, OIDC JWTs, device
// credentials) and whether that identity may call the route, and keeps the audit log.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// Role is an admin-side role. Roles are hierarchical for viewer < editor < admin;
// pipeline stands apart and grants only the pipeline API.
type Role string

const (
	Viewer   Role = "viewer"
	Editor   Role = "editor"
	Admin    Role = "admin"
	Pipeline Role = "pipeline"
)

// ValidRole reports whether r is one of the roles tokens can carry.
func ValidRole(r string) bool {
	switch Role(r) {
	case Viewer, Editor, Admin, Pipeline:
		return true
	}
	return false
}

// Kind is where an identity came from.
type Kind string

const (
	KindToken    Kind = "token"
	KindOIDC     Kind = "oidc"
	KindDevice   Kind = "device"
	KindInsecure Kind = "insecure-dev"
	// KindTestSession is a browser session made by /api/testing/auth/session (APP_ENV=testing).
	KindTestSession Kind = "test-session"
)

// Identity is an authenticated caller.
type Identity struct {
	Kind Kind
	// Name is the token name, OIDC subject or device key (for the audit log).
	Name  string
	Roles map[Role]bool
	// Email and FullName come from OIDC claims or a test session (for /api/auth/self).
	Email    string
	FullName string
	// Device fields are set when Kind is KindDevice.
	DeviceID  int64
	DeviceKey string
	// ModelID is the device's model (fleet telemetry is kept per model).
	ModelID int64
	Active  bool
	// FromCookie marks browser sessions, whose writes need the CSRF check.
	FromCookie bool
	// TokenID is the API token's id (KindToken, and console sessions signed in with one).
	TokenID int64
}

// Has reports whether the identity holds role, counting the viewer < editor < admin ladder.
func (id *Identity) Has(r Role) bool {
	if id == nil || id.Kind == KindDevice {
		return false
	}
	switch r {
	case Viewer:
		return id.Roles[Viewer] || id.Roles[Editor] || id.Roles[Admin]
	case Editor:
		return id.Roles[Editor] || id.Roles[Admin]
	default:
		return id.Roles[r]
	}
}

// IsDevice reports whether this is a device identity.
func (id *Identity) IsDevice() bool { return id != nil && id.Kind == KindDevice }

type ctxKey struct{}

// WithIdentity stores id in ctx.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the request's identity, or nil.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(ctxKey{}).(*Identity)
	return id
}

// NewSecret returns a random credential with a readable prefix, e.g. "iots_…".
func NewSecret(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Hash is the stored form of a high-entropy secret: hex SHA-256. Secrets are random
// 256-bit values, so a slow password hash would add nothing but latency.
func Hash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}
