package coredumps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/outbox"
)

// Upload stores a device's core dump: the row (PENDING) and its object in one transaction,
// with per-device retention and the hourly rate limit, the decode job and the device's
// audit entry. It returns the new row.
//
// Uploads are the hot write path (whole fleets crash at once after a bad release): the
// transaction is one batch of statements (one round trip on PostgreSQL, see insert), the
// object, and the decode job.
func (s *Service) Upload(ctx context.Context, in UploadInput) (*Coredump, error) {
	return s.upload(ctx, in, func(ctx context.Context, tx *sql.Tx, id int64) error {
		// Decode jobs go in this transaction: a committed dump always has its job.
		if err := s.decodes.EnqueueTx(ctx, tx, id); err != nil {
			return err
		}
		// The device's upload is audited in its own transaction: one commit fewer per upload.
		return s.audit.RecordPendingTx(ctx, tx, http.StatusCreated)
	})
}

// upload is Upload with the function run in its transaction once the row and object exist.
func (s *Service) upload(ctx context.Context, in UploadInput, created func(ctx context.Context, tx *sql.Tx, id int64) error) (*Coredump, error) {
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
		if c, st, queued, err = s.insert(ctx, tx, row); err != nil {
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
		return created(ctx, tx, c.ID)
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

const insertRow = `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, uploaded_at,
	created_at, updated_at, container, dump_version, checksum_ok, app_elf_sha_prefix, recognized, sha256, parse_error, reported_chip)
	VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING ` + columns

// beyondNewest selects the ids of a device's dumps past its newest keep ones (device id
// and keep are the statement's placeholders).
func beyondNewest(device, keep string) string {
	return `SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY uploaded_at DESC, id DESC) AS n FROM coredumps
		WHERE device_id = ` + device + `) AS ranked WHERE n > ` + keep
}

// insert locks the device, reads the rate-limit counts, records the upload, deletes the
// dumps beyond the newest Keep (never the new one) and queues their objects, and inserts
// the row, returning it with the counts and whether the outbox holds a deletion covering
// its key. Over the limit, the caller refuses and the transaction's rollback undoes all of
// it. The statements go as one batch: a single round trip on PostgreSQL.
//
// The device row is held for the rest of the transaction, so concurrent uploads of one
// device (on any replica) count and prune one after another; its model's row is shared,
// which firmware changes lock exclusively: firmware retention then either sees this
// PENDING dump and keeps the version it needs, or commits before the dump exists. (On
// SQLite the transaction holds the database's write lock from its start.)
func (s *Service) insert(ctx context.Context, tx *sql.Tx, r newRow) (*Coredump, deviceState, bool, error) {
	var st deviceState
	var c *Coredump
	var queued, found bool
	prefix, keep := DevicePrefix(r.deviceKey), s.opts.Keep-1
	rowArgs := append(r.args(), prefix)
	covering, more := outbox.Covering(keySQL("$15", "coredumps.id"), Key(r.deviceKey, 0), len(rowArgs)+1)
	qs := []db.Query{
		{SQL: `SELECT d.id FROM devices d JOIN device_models m ON m.id = d.device_model_id WHERE d.id = $1` +
			s.db.LockOf(db.ForUpdate, "d") + s.db.LockOf(db.ForShare, "m"),
			Args: []any{r.deviceID}, Scan: func(row db.Row) error {
				var id int64
				err := row.Scan(&id)
				found = err == nil
				return err
			}},
		{SQL: `SELECT (SELECT COUNT(*) FROM coredump_uploads WHERE device_id = $1 AND uploaded_at > $2),
			EXISTS (SELECT 1 FROM coredump_uploads WHERE device_id = $1 AND uploaded_at <= $2)`,
			Args: []any{r.deviceID, r.now.Add(-time.Hour)}, Scan: func(row db.Row) error { return row.Scan(&st.recent, &st.expired) }},
		{SQL: `INSERT INTO coredump_uploads (device_id, uploaded_at) VALUES ($1, $2)`, Args: []any{r.deviceID, r.now}},
		{SQL: outbox.EnqueueSelected(`SELECT `+keySQL("$2", "id")+` AS key FROM (`+beyondNewest("$1", "$3")+`) AS doomed`, "$4"),
			Args: []any{r.deviceID, prefix, keep, r.now}},
		{SQL: `DELETE FROM coredumps WHERE id IN (` + beyondNewest("$1", "$2") + `)`, Args: []any{r.deviceID, keep}},
		{SQL: insertRow + `, EXISTS (SELECT 1 FROM blob_deletions b WHERE ` + covering + `)`, Args: append(rowArgs, more...),
			Scan: func(row db.Row) error {
				var err error
				c, err = scan(extraScanner{row, []any{&queued}})
				return err
			}},
	}
	// The dump is its device's crash in the fleet view, and says what it runs.
	err := s.db.Batch(ctx, tx, append(qs, s.fleet.DumpQueries(r.deviceID, r.version, r.now)...)...)
	if !found && errors.Is(err, sql.ErrNoRows) { // pgx.ErrNoRows is sql.ErrNoRows too
		return nil, st, false, apperr.NotFoundf("Device %d was not found", r.deviceID)
	}
	if err != nil {
		return nil, st, false, fmt.Errorf("insert coredump: %w", err)
	}
	return c, st, queued, nil
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
