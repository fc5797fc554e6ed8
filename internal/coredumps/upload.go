package coredumps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

// Upload stores a device's core dump: the row (PENDING) and its object in one transaction,
// with per-device retention and the hourly rate limit. It returns the new row.
//
// Uploads are the hot write path (whole fleets crash at once after a bad release), so on
// PostgreSQL the transaction is the device lock, one statement for everything the rows
// need (insertPostgres), the object, and the decode job.
func (s *Service) Upload(ctx context.Context, in UploadInput) (*Coredump, error) {
	return s.upload(ctx, in, s.OnCreated)
}

// upload is Upload with the functions run in its transaction once the row and object exist.
func (s *Service) upload(ctx context.Context, in UploadInput, onCreated []func(ctx context.Context, tx *sql.Tx, id int64) error) (*Coredump, error) {
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
	body, err := readLimited(in.Body, s.opts.MaxBytes, in.Size)
	if err != nil {
		return nil, err
	}
	h := Inspect(body)
	sum := sha256.Sum256(body)
	now := s.now()
	row := newRow{deviceID: in.DeviceID, deviceKey: in.DeviceKey, chip: chip, version: in.FirmwareVersion,
		size: len(body), header: h, sha: hex.EncodeToString(sum[:]), now: now}
	if h.Recognized && h.Chip != "" && h.Chip != chip {
		// The dump's header is what the crash ran on; keep what the device said beside it.
		row.chip, row.reportedChip = h.Chip, chip
	}
	var written string
	var writtenID int64
	var c *Coredump
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		var st deviceState
		var queued bool
		var err error
		if s.db.Dialect == db.Postgres {
			c, st, queued, err = s.insertPostgres(ctx, tx, row)
		} else {
			c, st, queued, err = s.insertSQLite(ctx, tx, row)
		}
		if err != nil {
			return err
		}
		if st.recent >= s.opts.UploadsPerHour {
			return s.refuse(ctx, tx, in.DeviceID, in.DeviceKey, now) // rolls back what was written
		}
		if st.expired {
			if _, err := tx.ExecContext(ctx, `DELETE FROM coredump_uploads WHERE device_id = $1 AND uploaded_at <= $2`, in.DeviceID, now.Add(-time.Hour)); err != nil {
				return fmt.Errorf("prune upload log: %w", err)
			}
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
		for _, h := range onCreated {
			if err := h(ctx, tx, c.ID); err != nil {
				return err
			}
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

// deviceState is what an upload needs to know about its device, as of before the upload.
type deviceState struct {
	recent  int  // uploads in the last hour
	expired bool // the upload log holds entries older than that
	dumps   int  // stored core dumps (SQLite only)
}

// newRow is an upload's coredumps row.
type newRow struct {
	deviceID      int64
	deviceKey     string
	chip, version string
	reportedChip  string // set when the dump's header names another chip than the device did
	size          int
	header        Header
	sha           string
	now           time.Time
}

func (r newRow) args() []any {
	h := r.header
	return []any{r.deviceID, r.chip, r.version, r.size, StatusPending, r.now,
		h.Container, versionValue(h), h.ChecksumOK, nullIfEmpty(h.AppELFSHAPrefix), h.Recognized, r.sha, nullIfEmpty(h.Problem),
		nullIfEmpty(r.reportedChip)}
}

const insertRow = `INSERT INTO coredumps AS c (device_id, chip, firmware_version, size, parse_status, uploaded_at,
	created_at, updated_at, container, dump_version, checksum_ok, app_elf_sha_prefix, recognized, sha256, parse_error, reported_chip)
	VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING ` + columns

// insertPostgres locks the device, then in one statement reads the rate-limit counts,
// records the upload, deletes the dumps beyond the newest Keep (never the new one) and
// queues their objects, and inserts the row, returning it with the counts and whether
// the outbox holds a deletion covering its key. Over the limit, the caller refuses and
// the transaction's rollback undoes all of it.
//
// The device row is held for the rest of the transaction, so concurrent uploads of one
// device (on any replica) count and prune one after another; its model's row is shared,
// which firmware changes lock exclusively: firmware retention then either sees this
// PENDING dump and keeps the version it needs, or commits before the dump exists. The
// lock is its own statement: a statement that waited for it would still read from the
// snapshot of before the wait and miss a concurrent upload of the same device. Every part
// of the second statement reads one snapshot, from before the upload. The two are sent
// in one round trip (a pgx pipeline on the transaction's connection): statements in a
// pipeline still run, and take their snapshots, one after another.
func (s *Service) insertPostgres(ctx context.Context, tx *sql.Tx, r newRow) (*Coredump, deviceState, bool, error) {
	var st deviceState
	args := append(r.args(), r.now.Add(-time.Hour), DevicePrefix(r.deviceKey), s.opts.Keep-1, db.Now())
	covering, more := outbox.Covering(`CAST($16 AS TEXT) || c.id || '.dmp'`, Key(r.deviceKey, 0), len(args)+1)
	args = append(args, more...)
	// $15 window start, $16 the device's key prefix, $17 Keep-1, $18 the outbox's clock.
	// Object keys are Key(): $16 || id || '.dmp'.
	q := `WITH window_counts AS (
			SELECT (SELECT COUNT(*) FROM coredump_uploads WHERE device_id = $1 AND uploaded_at > $15) AS recent,
				EXISTS (SELECT 1 FROM coredump_uploads WHERE device_id = $1 AND uploaded_at <= $15) AS expired),
		logged AS (INSERT INTO coredump_uploads (device_id, uploaded_at) VALUES ($1, $6)),
		doomed AS (SELECT id FROM coredumps WHERE device_id = $1 ORDER BY uploaded_at DESC, id DESC OFFSET $17),
		gone AS (DELETE FROM coredumps g USING doomed WHERE g.id = doomed.id RETURNING g.id),
		queued AS (INSERT INTO blob_deletions (key, is_prefix, created_at, next_attempt_at)
			SELECT CAST($16 AS TEXT) || id || '.dmp', false, $18, $18 FROM gone)
		` + insertRow + `,
		(SELECT recent FROM window_counts), (SELECT expired FROM window_counts),
		EXISTS (SELECT 1 FROM blob_deletions b WHERE ` + covering + `)`
	var c *Coredump
	var queued bool
	err := s.db.WithPgx(tx, func(conn *pgx.Conn) error {
		var b pgx.Batch
		b.Queue(lockDevice, r.deviceID)
		b.Queue(q, args...)
		br := conn.SendBatch(ctx, &b)
		var id int64
		err := br.QueryRow().Scan(&id)
		if err == nil {
			if c, err = scan(extraScanner{br.QueryRow(), []any{&st.recent, &st.expired, &queued}}); err != nil {
				err = fmt.Errorf("insert coredump: %w", err)
			}
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if errors.Is(err, sql.ErrNoRows) { // pgx.ErrNoRows is sql.ErrNoRows too
		return nil, st, false, apperr.NotFoundf("Device %d was not found", r.deviceID)
	}
	if err != nil {
		return nil, st, false, err
	}
	return c, st, queued, nil
}

// lockDevice holds the device for the rest of the upload's transaction and shares its model.
const lockDevice = `SELECT d.id FROM devices d JOIN device_models m ON m.id = d.device_model_id WHERE d.id = $1
	FOR UPDATE OF d FOR SHARE OF m`

// insertSQLite does what insertPostgres does in several statements (in-process, they are
// cheap); the transaction holds SQLite's write lock from its start. Over the limit it
// returns before writing.
func (s *Service) insertSQLite(ctx context.Context, tx *sql.Tx, r newRow) (*Coredump, deviceState, bool, error) {
	var st deviceState
	err := tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM coredump_uploads WHERE device_id = $1 AND uploaded_at > $2),
		EXISTS (SELECT 1 FROM coredump_uploads WHERE device_id = $1 AND uploaded_at <= $2),
		(SELECT COUNT(*) FROM coredumps WHERE device_id = $1)
		FROM devices WHERE id = $1`, r.deviceID, r.now.Add(-time.Hour)).Scan(&st.recent, &st.expired, &st.dumps)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, st, false, apperr.NotFoundf("Device %d was not found", r.deviceID)
	}
	if err != nil || st.recent >= s.opts.UploadsPerHour {
		return nil, st, false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO coredump_uploads (device_id, uploaded_at) VALUES ($1, $2)`, r.deviceID, r.now); err != nil {
		return nil, st, false, fmt.Errorf("record upload: %w", err)
	}
	if st.dumps >= s.opts.Keep {
		if err := s.prune(ctx, tx, r.deviceID, r.deviceKey); err != nil {
			return nil, st, false, err
		}
	}
	c, err := scan(tx.QueryRowContext(ctx, insertRow, r.args()...))
	if err != nil {
		return nil, st, false, fmt.Errorf("insert coredump: %w", err)
	}
	queued, err := outbox.Queued(ctx, tx, Key(r.deviceKey, c.ID))
	return c, st, queued, err
}

// extraScanner scans trailing columns into extra.
type extraScanner struct {
	row   scanner
	extra []any
}

func (w extraScanner) Scan(dest ...any) error { return w.row.Scan(append(dest, w.extra...)...) }

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

// prune deletes the device's dumps beyond the newest Keep-1, to make room for the one
// being inserted, and queues their objects in the outbox (SQLite; insertPostgres does
// this in its statement).
func (s *Service) prune(ctx context.Context, tx *sql.Tx, deviceID int64, deviceKey string) error {
	ids, err := db.Int64s(ctx, tx, `SELECT id FROM coredumps WHERE device_id = $1 ORDER BY uploaded_at DESC, id DESC`, deviceID)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	if len(ids) < s.opts.Keep {
		return nil
	}
	return deleteRows(ctx, tx, deviceKey, ids[s.opts.Keep-1:])
}
