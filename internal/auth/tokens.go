package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
)

// TokenPrefix starts every API token so they are recognisable in logs and secret scanners.
const TokenPrefix = "iots_"

// Token is a stored API token (never its secret).
type Token struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// Tokens manages API tokens.
type Tokens struct{ db *db.DB }

// NewTokens returns the token store over d.
func NewTokens(d *db.DB) *Tokens { return &Tokens{db: d} }

// Create stores a new token and returns it with its secret, shown only this once.
func (t *Tokens) Create(ctx context.Context, name, role string) (*Token, string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return nil, "", apperr.Validationf("token name must be 1-100 characters")
	}
	if !ValidRole(role) {
		return nil, "", apperr.Validationf("role must be one of viewer, editor, admin, pipeline")
	}
	secret := NewSecret(TokenPrefix)
	now := db.Now()
	var id int64
	err := t.db.Tx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO api_tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id`,
			name, role, Hash(secret), now).Scan(&id)
	})
	if db.IsUniqueViolation(err) {
		return nil, "", apperr.Existsf("Token for %s already exists", name)
	}
	if err != nil {
		return nil, "", db.Err("create token", err)
	}
	return &Token{ID: id, Name: name, Role: role, CreatedAt: now}, secret, nil
}

// List returns every token, newest first.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	rows, err := t.db.QueryContext(ctx, `SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id DESC`)
	if err != nil {
		return nil, db.Err("list tokens", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		var tk Token
		var used, revoked sql.NullTime
		if err := rows.Scan(&tk.ID, &tk.Name, &tk.Role, &tk.CreatedAt, &used, &revoked); err != nil {
			return nil, db.Err("list tokens", err)
		}
		tk.CreatedAt = tk.CreatedAt.UTC()
		tk.LastUsedAt, tk.RevokedAt = utcPtr(used), utcPtr(revoked)
		out = append(out, tk)
	}
	return out, db.Err("list tokens", rows.Err())
}

func utcPtr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

// RevokeByID revokes the active token with this id; revoking twice is NotFound the
// second time.
func (t *Tokens) RevokeByID(ctx context.Context, id int64) error {
	return t.revoke(ctx, `id = $2`, id, fmt.Sprintf("Token %d was not found", id))
}

// RevokeByName revokes the active token with this name. Ids and names are separate
// look-ups: a token named "8" is never the token with id 8.
func (t *Tokens) RevokeByName(ctx context.Context, name string) error {
	return t.revoke(ctx, `name = $2`, name, fmt.Sprintf("Token %q was not found", name))
}

func (t *Tokens) revoke(ctx context.Context, where string, arg any, notFound string) error {
	var res sql.Result
	err := t.db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND `+where, db.Now(), arg)
		return err
	})
	if err != nil {
		return db.Err("revoke token", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.NotFoundf("%s", notFound)
	}
	return nil
}

// ActiveCount counts tokens that are not revoked.
func (t *Tokens) ActiveCount(ctx context.Context) (int, error) {
	var n int
	err := t.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL`).Scan(&n)
	return n, db.Err("count tokens", err)
}

// Authenticate returns the identity for a presented token secret, or nil when unknown or revoked.
func (t *Tokens) Authenticate(ctx context.Context, secret string) (*Identity, error) {
	var id int64
	var name, role string
	err := t.db.QueryRowContext(ctx, `SELECT id, name, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL`, Hash(secret)).
		Scan(&id, &name, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, db.Err("authenticate token", err)
	}
	// last_used_at is best-effort bookkeeping; at most once a minute per token to spare writes.
	_, _ = t.db.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)`,
		db.Now(), id, db.Now().Add(-time.Minute))
	return &Identity{Kind: KindToken, Name: name, Roles: map[Role]bool{Role(role): true}, TokenID: id}, nil
}
