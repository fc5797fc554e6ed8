package coredumps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

// Upload stores a device's core dump: the row (PENDING) and its object in one transaction,
// with per-device retention and the hourly rate limit. It returns the new row.
//
// Uploads are the hot write path (whole fleets crash at once after a bad release), so the
// transaction is kept to few round trips: on PostgreSQL the device lock, one statement
// for the counts, one that records the upload and inserts the row (returning it and
// whether the outbox holds a deletion for its key), the object, the decode job and, when
// the device is over MAX_COREDUMPS, one statement that prunes and queues the deletions.
func (s *Service) Upload(ctx context.Context, in UploadInput) (*Coredump, error) {
	chip, err := CheckUploadParams(in.Chip, in.FirmwareVersion)
	if err != nil {
		return nil, err
	}
	if !deviceKeyPattern.MatchString(in.DeviceKey) {
		return nil, apperr.Validationf("Invalid device key format")
	}
	// A crash-looping device this replica already refused is turned away before its body
	// is read; the transaction below is what enforces the limit.
	if wait, ok := s.refused.check(in.DeviceID, in.DeviceKey, s.now()); ok {
		return nil, s.rateLimited(wait)
	}
	body, err := readLimited(in.Body, s.opts.MaxBytes)
	if err != nil {
		return nil, err
	}
	h := Inspect(body)
	sum := sha256.Sum256(body)
	now := s.now()
	row := newRow{deviceID: in.DeviceID, deviceKey: in.DeviceKey, chip: chip, version: in.FirmwareVersion,
		size: len(body), header: h, sha: hex.EncodeToString(sum[:]), now: now}
	var written string
	var writtenID int64
	var c *Coredump
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		st, err := s.lockDevice(ctx, tx, in.DeviceID, now)
		if err != nil {
			return err
		}
		if st.recent >= s.opts.UploadsPerHour {
			return s.refuse(ctx, tx, in.DeviceID, in.DeviceKey, now)
		}
		if st.expired {
			if _, err := tx.ExecContext(ctx, `DELETE FROM coredump_uploads WHERE device_id = $1 AND uploaded_at <= $2`, in.DeviceID, now.Add(-time.Hour)); err != nil {
				return fmt.Errorf("prune upload log: %w", err)
			}
		}
		var queued bool
		if c, queued, err = s.insert(ctx, tx, row); err != nil {
			return err
		}
		key := Key(in.DeviceKey, c.ID)
		if queued {
			if err := outbox.Settle(ctx, tx, s.store, key); err != nil {
				return storeErr(err)
			}
		}
		written, writtenID = key, c.ID // before the Put: a failed Put may still have stored it
		if err := s.store.Put(ctx, key, bytes.NewReader(body), int64(len(body)), "application/octet-stream"); err != nil {
			return storeErr(err)
		}
		// Decode jobs go in this transaction: a committed dump always has its job.
		for _, h := range s.OnCreated {
			if err := h(ctx, tx, c.ID); err != nil {
				return err
			}
		}
		if st.dumps >= s.opts.Keep {
			return s.prune(ctx, tx, in.DeviceID, in.DeviceKey, c.ID)
		}
		return nil
	})
	if err != nil {
		if written != "" {
			// Rule 1: the row is gone, so the object must go too (now, or through the outbox).
			outbox.Cleanup(ctx, s.db, s.store, s.log, func(ctx context.Context, tx *sql.Tx) (bool, error) {
				// SQLite may hand the rolled-back id to a later upload: then the key is its.
				var n int
				err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps WHERE id = $1`, writtenID).Scan(&n)
				return n > 0, err
			}, written)
		}
		return nil, db.Err("upload coredump", err)
	}
	return c, nil
}

// deviceState is what an upload needs to know about its device, read under its lock.
type deviceState struct {
	recent  int  // uploads in the last hour
	expired bool // the upload log holds entries older than that
	dumps   int  // stored core dumps
}

// lockDevice holds the device row for the rest of the transaction, so concurrent uploads
// of one device (on any replica) count and prune one after another, and shares its
// model's row, which firmware changes lock exclusively: firmware retention then either
// sees this PENDING dump and keeps the version it needs, or commits before the dump
// exists. SQLite transactions already take the write lock when they begin.
//
// On PostgreSQL the counts are a second statement: one taken with the lock would be read
// from the snapshot of before the wait, missing a concurrent upload of the same device.
func (s *Service) lockDevice(ctx context.Context, tx *sql.Tx, deviceID int64, now time.Time) (deviceState, error) {
	counts := `(SELECT COUNT(*) FROM coredump_uploads WHERE device_id = $1 AND uploaded_at > $2),
		EXISTS (SELECT 1 FROM coredump_uploads WHERE device_id = $1 AND uploaded_at <= $2),
		(SELECT COUNT(*) FROM coredumps WHERE device_id = $1)`
	var q string
	if s.db.Dialect == db.Postgres {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT d.id FROM devices d JOIN device_models m ON m.id = d.device_model_id WHERE d.id = $1
			FOR UPDATE OF d FOR SHARE OF m`, deviceID).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return deviceState{}, apperr.NotFoundf("Device %d was not found", deviceID)
		}
		if err != nil {
			return deviceState{}, err
		}
		q = `SELECT ` + counts
	} else {
		q = `SELECT ` + counts + ` FROM devices WHERE id = $1`
	}
	var st deviceState
	err := tx.QueryRowContext(ctx, q, deviceID, now.Add(-time.Hour)).Scan(&st.recent, &st.expired, &st.dumps)
	if errors.Is(err, sql.ErrNoRows) {
		return st, apperr.NotFoundf("Device %d was not found", deviceID)
	}
	if err != nil {
		return st, fmt.Errorf("count uploads: %w", err)
	}
	return st, nil
}

// newRow is an upload's coredumps row.
type newRow struct {
	deviceID      int64
	deviceKey     string
	chip, version string
	size          int
	header        Header
	sha           string
	now           time.Time
}

// insert records the upload in the rate-limit log and inserts the row, returning it as
// stored and whether the outbox holds a deletion that covers its object's key.
func (s *Service) insert(ctx context.Context, tx *sql.Tx, r newRow) (*Coredump, bool, error) {
	h := r.header
	args := []any{r.deviceID, r.chip, r.version, r.size, StatusPending, r.now,
		h.Container, versionValue(h), h.ChecksumOK, nullIfEmpty(h.AppELFSHAPrefix), h.Recognized, r.sha, nullIfEmpty(h.Problem)}
	insert := `INSERT INTO coredumps AS c (device_id, chip, firmware_version, size, parse_status, uploaded_at,
		created_at, updated_at, container, dump_version, checksum_ok, app_elf_sha_prefix, recognized, sha256, parse_error)
		VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING ` + columns
	parents := outbox.ParentPrefixes(Key(r.deviceKey, 0))
	var queued bool
	if s.db.Dialect == db.Postgres {
		// One round trip: the log entry, the row, and the outbox check for the row's key.
		args = append(args, DevicePrefix(r.deviceKey))
		in := make([]string, len(parents))
		for i, p := range parents {
			args = append(args, p)
			in[i] = fmt.Sprintf("$%d", len(args))
		}
		// The key expression is Key(): DevicePrefix || id || '.dmp'.
		q := `WITH logged AS (INSERT INTO coredump_uploads (device_id, uploaded_at) VALUES ($1, $6)) ` + insert + `,
			EXISTS (SELECT 1 FROM blob_deletions b WHERE b.key = CAST($14 AS TEXT) || c.id || '.dmp'
				OR (b.is_prefix AND b.key IN (` + strings.Join(in, ", ") + `)))`
		c, err := scan(withExtra{tx.QueryRowContext(ctx, q, args...), &queued})
		if err != nil {
			return nil, false, fmt.Errorf("insert coredump: %w", err)
		}
		return c, queued, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO coredump_uploads (device_id, uploaded_at) VALUES ($1, $2)`, r.deviceID, r.now); err != nil {
		return nil, false, fmt.Errorf("record upload: %w", err)
	}
	c, err := scan(tx.QueryRowContext(ctx, insert, args...))
	if err != nil {
		return nil, false, fmt.Errorf("insert coredump: %w", err)
	}
	queued, err = outbox.Queued(ctx, tx, Key(r.deviceKey, c.ID))
	return c, queued, err
}

// withExtra scans one more trailing column into extra.
type withExtra struct {
	row   *sql.Row
	extra any
}

func (w withExtra) Scan(dest ...any) error { return w.row.Scan(append(dest, w.extra)...) }

// refuse turns an upload away for the rate limit, with the seconds until the oldest
// counted upload leaves the window, and remembers the refusal on this replica.
func (s *Service) refuse(ctx context.Context, tx *sql.Tx, deviceID int64, deviceKey string, now time.Time) error {
	var oldest time.Time
	err := tx.QueryRowContext(ctx, `SELECT uploaded_at FROM coredump_uploads WHERE device_id = $1 AND uploaded_at > $2
		ORDER BY uploaded_at LIMIT 1`, deviceID, now.Add(-time.Hour)).Scan(&oldest)
	if err != nil {
		return fmt.Errorf("count recent uploads: %w", err)
	}
	until := oldest.UTC().Add(time.Hour)
	s.refused.add(deviceID, deviceKey, until, now)
	return s.rateLimited(until.Sub(now))
}

func (s *Service) rateLimited(wait time.Duration) error {
	secs := max(1, int((wait+time.Second-1)/time.Second))
	return &apperr.Error{Kind: apperr.RateLimited, RetryAfterSeconds: secs,
		Msg: fmt.Sprintf("Too many coredump uploads: at most %d per device per hour; retry in %d s", s.opts.UploadsPerHour, secs)}
}

// refusals remembers, per replica, until when a device stays over its upload limit.
// Entries are keyed by id and checked against the key, as SQLite may reuse the id of a
// deleted device.
type refusals struct {
	mu    sync.Mutex
	until map[int64]refusal
}

type refusal struct {
	key   string
	until time.Time
}

// maxRefusals bounds the memory: past it, expired entries are dropped on the next add.
const maxRefusals = 4096

func (r *refusals) add(id int64, key string, until, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.until) >= maxRefusals {
		for k, v := range r.until {
			if !now.Before(v.until) {
				delete(r.until, k)
			}
		}
	}
	r.until[id] = refusal{key: key, until: until}
}

// check returns how long the device stays refused, when this replica refused it and the
// window has not moved on since.
func (r *refusals) check(id int64, key string, now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.until[id]
	if !ok {
		return 0, false
	}
	if v.key != key || !now.Before(v.until) {
		delete(r.until, id)
		return 0, false
	}
	return v.until.Sub(now), true
}

// prune deletes the device's dumps beyond the newest Keep (never the one just inserted)
// and queues their objects in the outbox.
func (s *Service) prune(ctx context.Context, tx *sql.Tx, deviceID int64, deviceKey string, keepID int64) error {
	if s.db.Dialect == db.Postgres {
		// One round trip; the key expression is Key(): DevicePrefix || id || '.dmp'.
		now := db.Now()
		_, err := tx.ExecContext(ctx, `WITH doomed AS (
				SELECT id FROM coredumps WHERE device_id = $1 AND id <> $2 ORDER BY uploaded_at DESC, id DESC OFFSET $3),
			gone AS (DELETE FROM coredumps c USING doomed WHERE c.id = doomed.id RETURNING c.id)
			INSERT INTO blob_deletions (key, is_prefix, created_at, next_attempt_at)
			SELECT CAST($4 AS TEXT) || id || '.dmp', false, $5, $5 FROM gone`,
			deviceID, keepID, s.opts.Keep-1, DevicePrefix(deviceKey), now)
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT id FROM coredumps WHERE device_id = $1 AND id <> $2 ORDER BY uploaded_at DESC, id DESC`, deviceID, keepID)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(ids) < s.opts.Keep {
		return nil
	}
	return deleteRows(ctx, tx, deviceKey, ids[s.opts.Keep-1:])
}
