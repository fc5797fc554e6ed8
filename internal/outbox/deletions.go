package outbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
)

// Deletion is one queued deletion, as a consistency check (fsck) sees it.
type Deletion struct {
	Key      string
	Prefix   bool // every object under Key
	QueuedAt time.Time
}

// Covers reports whether the deletion takes the object key.
func (d Deletion) Covers(key string) bool {
	return d.Key == key || (d.Prefix && strings.HasPrefix(key, d.Key))
}

// Deletions returns every queued deletion.
func Deletions(ctx context.Context, q db.Querier) ([]Deletion, error) {
	rows, err := q.QueryContext(ctx, `SELECT key, is_prefix, created_at FROM blob_deletions ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", db.Classify(err))
	}
	defer rows.Close()
	var out []Deletion
	for rows.Next() {
		var d Deletion
		if err := rows.Scan(&d.Key, &d.Prefix, &d.QueuedAt); err != nil {
			return nil, err
		}
		d.QueuedAt = d.QueuedAt.UTC()
		out = append(out, d)
	}
	return out, db.Classify(rows.Err())
}
