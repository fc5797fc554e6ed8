package coredumps

import "context"

// legacyPending reports whether the row still names a file of the older service, i.e.
// `iotsupport migrate-to-s3` has not moved it yet. The filename column exists only in an
// adopted database before `iotsupport migrate --finalize-legacy`; elsewhere the query fails
// and the answer is no.
func legacyPending(ctx context.Context, q querier, id int64) bool {
	var pending bool
	err := q.QueryRowContext(ctx, `SELECT filename IS NOT NULL FROM coredumps WHERE id = $1`, id).Scan(&pending)
	return err == nil && pending
}
