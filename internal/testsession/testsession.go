// Package testsession keeps the browser sessions of APP_ENV=testing. The older service's
// end-to-end tests log in through /api/testing/auth/session instead of an identity
// provider; a session lives in this process's memory only, like the older service's.
package testsession

import (
	"strings"
	"sync"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/auth"
)

// Prefix starts every session token, as in the older service.
const Prefix = "test-session-"

// TTL is how long a session (and its cookie) lasts.
const TTL = time.Hour

// Session is who a test session stands for.
type Session struct {
	Subject string   `json:"subject"`
	Name    string   `json:"name,omitempty"`
	Email   string   `json:"email,omitempty"`
	Roles   []string `json:"roles"`
	expires time.Time
}

// Store holds the sessions and the one-shot error of /api/auth/self.
type Store struct {
	mu       sync.Mutex
	sessions map[string]Session
	forced   int
	now      func() time.Time
}

// New returns an empty store; now is the clock (time.Now when nil).
func New(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{sessions: map[string]Session{}, now: now}
}

// Create validates s and starts a session; it returns the cookie value and its expiry.
func (st *Store) Create(s Session) (string, time.Time, error) {
	if strings.TrimSpace(s.Subject) == "" || len(s.Subject) > 255 {
		return "", time.Time{}, apperr.Validationf("subject must be 1-255 characters")
	}
	if len(s.Name) > 255 || len(s.Email) > 255 {
		return "", time.Time{}, apperr.Validationf("name and email must be at most 255 characters")
	}
	for _, r := range s.Roles {
		if !auth.ValidRole(r) {
			return "", time.Time{}, apperr.Validationf("unknown role %q; roles are viewer, editor, admin and pipeline", r)
		}
	}
	if s.Roles == nil {
		s.Roles = []string{}
	}
	token := auth.NewSecret(Prefix)
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	for t, old := range st.sessions { // expired sessions go when new ones come
		if !now.Before(old.expires) {
			delete(st.sessions, t)
		}
	}
	s.expires = now.Add(TTL)
	st.sessions[token] = s
	return token, s.expires, nil
}

// Identity resolves a cookie value; nil when it is not a live session.
func (st *Store) Identity(token string) *auth.Identity {
	if !strings.HasPrefix(token, Prefix) {
		return nil
	}
	st.mu.Lock()
	s, ok := st.sessions[token]
	st.mu.Unlock()
	if !ok || !st.now().Before(s.expires) {
		return nil
	}
	roles := map[auth.Role]bool{}
	for _, r := range s.Roles {
		roles[auth.Role(r)] = true
	}
	return &auth.Identity{Kind: auth.KindTestSession, Name: s.Subject, Roles: roles, Email: s.Email, FullName: s.Name, FromCookie: true}
}

// Delete ends a session (unknown tokens are ignored).
func (st *Store) Delete(token string) {
	st.mu.Lock()
	delete(st.sessions, token)
	st.mu.Unlock()
}

// ForceError makes the next /api/auth/self answer status (400-599) once.
func (st *Store) ForceError(status int) error {
	if status < 400 || status > 599 {
		return apperr.Validationf("status must be an HTTP error status (400-599), got %d", status)
	}
	st.mu.Lock()
	st.forced = status
	st.mu.Unlock()
	return nil
}

// TakeForcedError returns the forced status (0 when none) and clears it.
func (st *Store) TakeForcedError() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.forced
	st.forced = 0
	return n
}
