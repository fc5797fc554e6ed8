package coredumps

import (
	"context"
	"database/sql"
	"sync"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/fleet"
)

// queued records the decode jobs the service asked for, by dump id.
type queued struct {
	mu  sync.Mutex
	ids []int64
}

func (q *queued) EnqueueTx(_ context.Context, _ *sql.Tx, id int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ids = append(q.ids, id)
	return nil
}

type noAudit struct{}

func (noAudit) RecordPendingTx(context.Context, *sql.Tx, int) error { return nil }

func newTestService(d *db.DB, store blob.Store, opts Options) *Service {
	return NewService(d, store, &queued{}, noAudit{}, fleet.Dumps{}, opts, nil)
}
