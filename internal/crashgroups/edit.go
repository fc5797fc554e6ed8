package crashgroups

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/naming"
)

// Update sets a group's status; resolvedIn (only with resolved, optional) is the version
// that fixes it: a later dump of a version uploaded after it reopens the group.
func (s *Service) Update(ctx context.Context, id int64, status string, resolvedIn *string) (*Group, error) {
	switch status {
	case StatusOpen, StatusIgnored:
		if resolvedIn != nil && *resolvedIn != "" {
			return nil, apperr.Validationf("resolved_in_version is only allowed with status resolved")
		}
		resolvedIn = nil
	case StatusResolved:
		if resolvedIn != nil && *resolvedIn == "" {
			resolvedIn = nil
		}
		if resolvedIn != nil && !naming.ValidVersion(*resolvedIn) {
			return nil, apperr.Validationf("Invalid resolved_in_version: 1-32 characters of A-Z, a-z, 0-9, '.', '_', '+' and '-'")
		}
	default:
		return nil, apperr.Validationf("status must be open, resolved or ignored")
	}
	var g *Group
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE crash_groups SET status = $2, resolved_in_version = $3, updated_at = $4 WHERE id = $1`,
			id, status, resolvedIn, s.now())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.NotFoundf("Crash group %d was not found", id)
		}
		g, err = s.get(ctx, tx, id)
		return err
	})
	return g, db.Err("update crash group", err)
}

// Merge moves group id into group into (one bug, two signatures): its fingerprints, dumps,
// devices and daily counts; later dumps of either signature land in into. id is deleted.
func (s *Service) Merge(ctx context.Context, id, into int64) (*Group, error) {
	if id == into {
		return nil, apperr.Validationf("A crash group cannot be merged into itself")
	}
	var g *Group
	var err error
	// A decode re-grouping a dump of either group at the same moment takes their rows in
	// another order; PostgreSQL then aborts one transaction, and the merge runs again.
	for attempt := 0; attempt < 3; attempt++ {
		if g, err = s.merge(ctx, id, into); !db.IsDeadlock(err) {
			break
		}
	}
	return g, db.Err("merge crash groups", err)
}

func (s *Service) merge(ctx context.Context, id, into int64) (*Group, error) {
	var g *Group
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		// Both rows, in id order: two merges of one pair wait for each other instead of deadlocking.
		lo, hi := min(id, into), max(id, into)
		for _, gid := range []int64{lo, hi} {
			if err := s.db.LockRow(ctx, tx, db.ForUpdate, "crash_groups", "id", gid); err != nil {
				return err
			}
		}
		src, err := s.get(ctx, tx, id)
		if err != nil {
			return err
		}
		dst, err := s.get(ctx, tx, into)
		if err != nil {
			return apperr.Validationf("Crash group %d (into) was not found", into)
		}
		if src.ModelID != dst.ModelID {
			return apperr.Validationf("Crash groups %d and %d belong to different device models", id, into)
		}
		var shared int64
		err = s.db.Batch(ctx, tx,
			db.Query{SQL: `SELECT COUNT(*) FROM crash_group_devices a JOIN crash_group_devices b ON b.device_id = a.device_id
				WHERE a.group_id = $1 AND b.group_id = $2`, Args: []any{id, into}, Scan: func(r db.Row) error { return r.Scan(&shared) }},
			db.Query{SQL: `UPDATE crash_group_fingerprints SET group_id = $2 WHERE group_id = $1`, Args: []any{id, into}},
			db.Query{SQL: `INSERT INTO crash_group_devices (group_id, device_id, dump_count, first_seen_at, last_seen_at, last_version)
				SELECT $2, device_id, dump_count, first_seen_at, last_seen_at, last_version FROM crash_group_devices WHERE group_id = $1
				ON CONFLICT (group_id, device_id) DO UPDATE SET dump_count = crash_group_devices.dump_count + excluded.dump_count,
				first_seen_at = CASE WHEN excluded.first_seen_at < crash_group_devices.first_seen_at THEN excluded.first_seen_at ELSE crash_group_devices.first_seen_at END,
				last_version = CASE WHEN excluded.last_seen_at > crash_group_devices.last_seen_at THEN excluded.last_version ELSE crash_group_devices.last_version END,
				last_seen_at = CASE WHEN excluded.last_seen_at > crash_group_devices.last_seen_at THEN excluded.last_seen_at ELSE crash_group_devices.last_seen_at END`,
				Args: []any{id, into}},
			db.Query{SQL: `INSERT INTO crash_group_daily (group_id, version, day, device_id, dumps)
				SELECT $2, version, day, device_id, dumps FROM crash_group_daily WHERE group_id = $1
				ON CONFLICT (group_id, version, day, device_id) DO UPDATE SET dumps = crash_group_daily.dumps + excluded.dumps`,
				Args: []any{id, into}},
			db.Query{SQL: `UPDATE crash_group_dumps SET group_id = $2 WHERE group_id = $1`, Args: []any{id, into}},
		)
		if err != nil {
			return fmt.Errorf("move crash group %d into %d: %w", id, into, err)
		}
		firstVersion, firstSeen := dst.FirstVersion, dst.FirstSeenAt
		if src.FirstSeenAt.Before(firstSeen) {
			firstVersion, firstSeen = src.FirstVersion, src.FirstSeenAt
		}
		lastVersion, lastSeen, culprit := dst.LastVersion, dst.LastSeenAt, dst.Culprit
		if src.LastSeenAt.After(lastSeen) {
			lastVersion, lastSeen, culprit = src.LastVersion, src.LastSeenAt, src.Culprit
		}
		if _, err := tx.ExecContext(ctx, `UPDATE crash_groups SET dump_count = dump_count + $2, device_count = device_count + $3,
			first_version = $4, first_seen_at = $5, last_version = $6, last_seen_at = $7, culprit = $8, updated_at = $9 WHERE id = $1`,
			into, src.DumpCount, src.DeviceCount-shared, firstVersion, firstSeen, lastVersion, lastSeen, culprit, s.now()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM crash_groups WHERE id = $1`, id); err != nil {
			return err
		}
		g, err = s.get(ctx, tx, into)
		return err
	})
	return g, err
}
