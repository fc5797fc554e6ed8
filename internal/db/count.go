package db

import (
	"context"
	"database/sql"
)

// QueryContext runs a query outside a transaction and counts it (Statements).
func (d *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	d.statements.Add(1)
	return d.DB.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a one-row query outside a transaction and counts it (Statements).
func (d *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	d.statements.Add(1)
	return d.DB.QueryRowContext(ctx, query, args...)
}

// ExecContext runs a statement outside a transaction and counts it (Statements).
func (d *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	d.statements.Add(1)
	return d.DB.ExecContext(ctx, query, args...)
}

// Statements is how many statements have run outside transactions on d: reads mostly,
// which is what a test counts to show a page's queries do not grow with its rows (no
// query per row). Statements inside Tx are not counted.
func (d *DB) Statements() int64 { return d.statements.Load() }
