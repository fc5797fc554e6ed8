// Package sessions keeps the web console's server-side sessions (table console_sessions):
// the browser holds only a random id, the database its SHA-256, the identity and the
// session's CSRF token. A session made from an API token ends when the token is revoked.
package sessions

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/db"
)

// CookieName is the console's session cookie.
const CookieName = "iotsupport_session"

// Config bounds a session's life.
type Config struct {
	// Idle ends a session not used for this long (CONSOLE_SESSION_IDLE_TIMEOUT).
	Idle time.Duration
	// Max ends a session this long after sign-in, used or not (CONSOLE_SESSION_MAX_AGE).
	Max time.Duration
}

// Session is a signed-in browser.
type Session struct {
	Identity *auth.Identity
	CSRF     string
	Expires  time.Time
}

// Store is the only writer of console_sessions.
type Store struct {
	db  *db.DB
	cfg Config
	now func() time.Time
}

// New returns the store over d.
func New(d *db.DB, cfg Config) *Store {
	if cfg.Idle <= 0 {
		cfg.Idle = 2 * time.Hour
	}
	if cfg.Max <= 0 {
		cfg.Max = 24 * time.Hour
	}
	return &Store{db: d, cfg: cfg, now: db.Now}
}

// SetClock replaces the clock (tests of expiry).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// touchEvery spares a write per request: last_seen_at moves at most this often, so idle
// expiry is exact to within it.
const touchEvery = time.Minute

// Create starts a session for id and returns the cookie value, shown to the browser only.
// Sessions that have expired are removed on the way.
func (s *Store) Create(ctx context.Context, id *auth.Identity) (string, *Session, error) {
	raw := auth.NewSecret("")
	csrf := auth.NewSecret("")
	now := s.now()
	var roles []string
	for _, r := range []auth.Role{auth.Viewer, auth.Editor, auth.Admin, auth.Pipeline} {
		if id.Roles[r] {
			roles = append(roles, string(r))
		}
	}
	var tokenID any
	if id.TokenID != 0 {
		tokenID = id.TokenID
	}
	expires := now.Add(s.cfg.Max)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE expires_at < $1 OR last_seen_at < $2`, now, now.Add(-s.cfg.Idle)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO console_sessions (id_hash, csrf_token, kind, token_id, subject, name, email, roles, created_at, last_seen_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)`,
			auth.Hash(raw), csrf, string(id.Kind), tokenID, id.Name, nullable(id.FullName), nullable(id.Email), strings.Join(roles, ","), now, expires)
		return err
	})
	if err != nil {
		return "", nil, db.Err("create session", err)
	}
	sid := *id
	sid.FromCookie = true
	return raw, &Session{Identity: &sid, CSRF: csrf, Expires: expires}, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Get returns the live session of a cookie value, or nil when it is unknown, expired,
// idle too long, or its API token was revoked.
func (s *Store) Get(ctx context.Context, raw string) (*Session, error) {
	if raw == "" || len(raw) > 100 {
		return nil, nil
	}
	h := auth.Hash(raw)
	var kind, subject, roles, csrf string
	var name, email sql.NullString
	var tokenID sql.NullInt64
	var lastSeen, expires time.Time
	var revoked sql.NullTime
	var tokenRole sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT s.kind, s.subject, s.name, s.email, s.roles, s.csrf_token, s.token_id, s.last_seen_at, s.expires_at, t.revoked_at, t.role
		FROM console_sessions s LEFT JOIN api_tokens t ON t.id = s.token_id WHERE s.id_hash = $1`, h).
		Scan(&kind, &subject, &name, &email, &roles, &csrf, &tokenID, &lastSeen, &expires, &revoked, &tokenRole)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, db.Err("read session", err)
	}
	now := s.now()
	if now.After(expires) || now.Sub(lastSeen) > s.cfg.Idle || (tokenID.Valid && (revoked.Valid || !tokenRole.Valid)) {
		return nil, nil
	}
	if now.Sub(lastSeen) >= touchEvery {
		// Best effort: a failed touch only shortens the session.
		_ = s.db.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2`, now, h)
			return err
		})
	}
	id := &auth.Identity{Kind: auth.Kind(kind), Name: subject, Email: name2(email), FullName: name2(name),
		Roles: map[auth.Role]bool{}, FromCookie: true, TokenID: tokenID.Int64}
	for _, r := range strings.Split(roles, ",") {
		if r != "" {
			id.Roles[auth.Role(r)] = true
		}
	}
	return &Session{Identity: id, CSRF: csrf, Expires: expires}, nil
}

func name2(s sql.NullString) string { return s.String }

// Identity resolves a session cookie for the API's authenticator (auth.Sessions).
func (s *Store) Identity(ctx context.Context, raw string) (*auth.Identity, error) {
	sess, err := s.Get(ctx, raw)
	if sess == nil || err != nil {
		return nil, err
	}
	return sess.Identity, nil
}

// Delete ends the session of a cookie value (signing out); an unknown one is no error.
func (s *Store) Delete(ctx context.Context, raw string) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, auth.Hash(raw))
		return err
	})
	return db.Err("delete session", err)
}
