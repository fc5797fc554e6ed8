package auth

import (
	"context"
	"database/sql"
	"log/slog"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
)

// AuditEntry is one write made through the API.
type AuditEntry struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	ActorKind string    `json:"actor_kind"`
	Actor     string    `json:"actor"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	Route     string    `json:"route"`
	Status    int       `json:"status"`
	RequestID string    `json:"request_id"`
}

// Audit stores and lists audit entries.
type Audit struct{ db *db.DB }

// NewAudit returns the audit log over d.
func NewAudit(d *db.DB) *Audit { return &Audit{db: d} }

// Record appends an entry.
func (a *Audit) Record(ctx context.Context, e AuditEntry) error {
	return db.Err("record audit entry", a.insert(ctx, a.db, e))
}

// Pending is the audit entry of a write request in progress. A service can record it in
// the write's own transaction (RecordPendingTx), one commit fewer on a hot path; the
// middleware then records nothing more when the request succeeded.
type Pending struct {
	Entry AuditEntry
	// Route is called for the route pattern once the request is routed.
	Route func() string
	inTx  bool
}

type pendingKey struct{}

// WithPending returns ctx carrying p.
func WithPending(ctx context.Context, p *Pending) context.Context {
	return context.WithValue(ctx, pendingKey{}, p)
}

// RecordedInTx reports whether the entry was written in a service's transaction. That
// transaction committed exactly when the request then succeeded.
func (p *Pending) RecordedInTx() bool { return p.inTx }

// RecordPendingTx writes the request's pending entry, with the status the request answers
// when tx commits, inside tx. Only for writes whose success status implies that commit.
// Without a pending entry (not an API request) it does nothing.
func (a *Audit) RecordPendingTx(ctx context.Context, tx *sql.Tx, status int) error {
	p, _ := ctx.Value(pendingKey{}).(*Pending)
	if p == nil {
		return nil
	}
	e := p.Entry
	e.Status = status
	if p.Route != nil {
		e.Route = p.Route()
	}
	if err := a.insert(ctx, tx, e); err != nil {
		return err
	}
	p.inTx = true
	return nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (a *Audit) insert(ctx context.Context, q execer, e AuditEntry) error {
	if len(e.Path) > 500 {
		e.Path = e.Path[:500]
	}
	_, err := q.ExecContext(ctx, `INSERT INTO audit_log (at, actor_kind, actor, method, path, route, status, request_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, db.Now(), e.ActorKind, e.Actor, e.Method, e.Path, e.Route, e.Status, e.RequestID)
	return err
}

// List returns entries newest first, before beforeID when it is > 0, and the total count.
func (a *Audit) List(ctx context.Context, limit int, beforeID int64) ([]AuditEntry, int, error) {
	q := `SELECT id, at, actor_kind, actor, method, path, route, status, COALESCE(request_id, '') FROM audit_log`
	args := []any{limit}
	if beforeID > 0 {
		q += ` WHERE id < $2`
		args = append(args, beforeID)
	}
	rows, err := a.db.QueryContext(ctx, q+` ORDER BY id DESC LIMIT $1`, args...)
	if err != nil {
		return nil, 0, db.Err("list audit log", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.ID, &e.At, &e.ActorKind, &e.Actor, &e.Method, &e.Path, &e.Route, &e.Status, &e.RequestID); err != nil {
			return nil, 0, db.Err("list audit log", err)
		}
		e.At = e.At.UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, db.Err("list audit log", err)
	}
	var total int
	err = a.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log`).Scan(&total)
	return out, total, db.Err("count audit log", err)
}

// Prune deletes entries older than before, batch rows per statement so no statement holds
// the table for long, and returns how many it deleted. Old entries have the lowest ids, so
// each batch is found by walking the primary key from its start.
func (a *Audit) Prune(ctx context.Context, before time.Time, batch int) (int64, error) {
	var total int64
	for {
		res, err := a.db.ExecContext(ctx, `DELETE FROM audit_log WHERE id IN
			(SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)`, before, batch)
		if err != nil {
			return total, db.Err("prune audit log", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, db.Err("prune audit log", err)
		}
		total += n
		if n < int64(batch) {
			return total, nil
		}
	}
}

// PruneBatch is how many audit entries one pruning statement deletes.
const PruneBatch = 1000

// RunPruner deletes entries older than retention at once and then every interval, until
// ctx ends.
func (a *Audit) RunPruner(ctx context.Context, retention, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := a.Prune(ctx, time.Now().Add(-retention), PruneBatch)
		if err != nil && ctx.Err() == nil {
			log.Warn("audit log pruning failed", "error", err)
		} else if n > 0 {
			log.Info("pruned the audit log", "deleted", n, "retention_days", int(retention/(24*time.Hour)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DeleteRequest removes the entries of one request id (the benchmark's baseline writes
// audit entries under its own id and removes them afterwards).
func (a *Audit) DeleteRequest(ctx context.Context, requestID string) error {
	_, err := a.db.ExecContext(ctx, `DELETE FROM audit_log WHERE request_id = $1`, requestID)
	return err
}
