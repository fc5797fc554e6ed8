package coredumps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
)

// Kinds of the parse_error column of an ERROR dump: why it has no full report.
const (
	KindNoFirmware    = "no_firmware"    // no stored firmware matches the dump
	KindELFMismatch   = "elf_mismatch"   // the reported version's ELF is not the dump's
	KindCorrupt       = "corrupt"        // not a (complete) ESP-IDF core dump
	KindUnsupported   = "unsupported"    // a core dump format this decoder does not know
	KindDecoderFailed = "decoder_failed" // the decoder gave up
	KindTimeout       = "timeout"        // decoding took longer than DECODE_TIMEOUT
	KindMissingObject = "missing_object" // the stored object is gone (decoder or fsck found it)
)

// DecodeTarget is what decoding needs of a stored dump.
type DecodeTarget struct {
	ID        int64
	DeviceID  int64
	DeviceKey string
	ModelID   int64
	ModelCode string
	Chip      string
	// Version is the firmware version the device reported with the dump.
	Version string
	// ELFPrefix is the lower-case hex prefix of the app ELF's SHA-256 found in the dump
	// at ingest ("" when the dump names none).
	ELFPrefix string
	Status    string
	// UploadedAt is when the dump arrived: crash groups count it on that day.
	UploadedAt time.Time
}

// DecodeTarget loads a dump for decoding; nil when it no longer exists.
func (s *Service) DecodeTarget(ctx context.Context, id int64) (*DecodeTarget, error) {
	var t DecodeTarget
	var prefix sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT c.id, d.id, d.key, m.id, m.code, c.chip, c.firmware_version, c.app_elf_sha_prefix, c.parse_status, c.uploaded_at
		FROM coredumps c JOIN devices d ON d.id = c.device_id JOIN device_models m ON m.id = d.device_model_id WHERE c.id = $1`, id).
		Scan(&t.ID, &t.DeviceID, &t.DeviceKey, &t.ModelID, &t.ModelCode, &t.Chip, &t.Version, &prefix, &t.Status, &t.UploadedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load core dump %d: %w", id, db.Classify(err))
	}
	t.ELFPrefix = strings.ToLower(prefix.String)
	t.UploadedAt = t.UploadedAt.UTC()
	return &t, nil
}

// ReadDump reads a dump's object whole: blob.ErrNotFound when it is missing, an error
// when it is over limit bytes (0: no limit).
func (s *Service) ReadDump(ctx context.Context, t *DecodeTarget, limit int64) ([]byte, error) {
	return blob.ReadAll(ctx, s.store, Key(t.DeviceKey, t.ID), limit)
}

// Result is the outcome of decoding a dump.
type Result struct {
	Status string // StatusParsed or StatusError
	Kind   string // one of the Kind constants for StatusError, "" for StatusParsed
	Output string // the text report, or the failure in words
	Report []byte // the structured report as JSON; nil when there is none
}

// RecordResult stores a decode's outcome, inside tx when it is not nil.
func (s *Service) RecordResult(ctx context.Context, tx *sql.Tx, id int64, r Result) error {
	var q db.Querier = s.db
	if tx != nil {
		q = tx
	}
	var kind, report any
	if r.Kind != "" {
		kind = r.Kind
	}
	if r.Report != nil {
		report = string(r.Report)
	}
	_, err := q.ExecContext(ctx, `UPDATE coredumps SET parse_status = $1, parse_error = $2, parsed_output = $3, report = $4,
		parsed_at = $5, updated_at = $5 WHERE id = $6`, r.Status, kind, r.Output, report, s.now(), id)
	if err != nil {
		return fmt.Errorf("record decode result of %d: %w", id, db.Classify(err))
	}
	return nil
}

// Decoded is a decoded (PARSED) dump with its report, for crash grouping's backfill.
type Decoded struct {
	DecodeTarget
	Report []byte
}

// DecodedAfter returns up to limit PARSED dumps with ids above afterID, by id, read
// through q (the caller's transaction or the database).
func (s *Service) DecodedAfter(ctx context.Context, q db.Querier, afterID int64, limit int) ([]Decoded, error) {
	rows, err := q.QueryContext(ctx, `SELECT c.id, d.id, d.key, m.id, m.code, c.chip, c.firmware_version, c.uploaded_at, c.report
		FROM coredumps c JOIN devices d ON d.id = c.device_id JOIN device_models m ON m.id = d.device_model_id
		WHERE c.id > $1 AND c.parse_status = 'PARSED' ORDER BY c.id LIMIT $2`+s.db.LockOf(db.ForUpdate, "c"), afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list decoded core dumps: %w", db.Classify(err))
	}
	defer rows.Close()
	var out []Decoded
	for rows.Next() {
		var d Decoded
		var report sql.NullString
		if err := rows.Scan(&d.ID, &d.DeviceID, &d.DeviceKey, &d.ModelID, &d.ModelCode, &d.Chip, &d.Version, &d.UploadedAt, &report); err != nil {
			return nil, err
		}
		d.Status, d.UploadedAt, d.Report = StatusParsed, d.UploadedAt.UTC(), []byte(report.String)
		out = append(out, d)
	}
	return out, rows.Err()
}

// PendingCount is how many dumps wait to be decoded.
func (s *Service) PendingCount(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps WHERE parse_status = 'PENDING'`).Scan(&n)
	return n, err
}

// FirmwareNeeds lists what the model's PENDING dumps wait for: the versions they reported
// and the ELF SHA-256 prefixes they carry (firmware retention keeps matching versions). A
// dump stops needing its firmware once decoded (PARSED or ERROR), as in the older service.
func (s *Service) FirmwareNeeds(ctx context.Context, tx *sql.Tx, modelID int64) (versions, elfPrefixes []string, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT c.firmware_version, lower(COALESCE(c.app_elf_sha_prefix, ''))
		FROM coredumps c JOIN devices d ON d.id = c.device_id
		WHERE d.device_model_id = $1 AND c.parse_status = 'PENDING'`, modelID)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var v, p string
		if err := rows.Scan(&v, &p); err != nil {
			return nil, nil, err
		}
		if !seen["v"+v] {
			seen["v"+v] = true
			versions = append(versions, v)
		}
		if p != "" && !seen["p"+p] {
			seen["p"+p] = true
			elfPrefixes = append(elfPrefixes, p)
		}
	}
	return versions, elfPrefixes, rows.Err()
}

// requeue resets the selected rows to PENDING and queues their decodes, in one transaction.
func (s *Service) requeue(ctx context.Context, where string, args ...any) (int, error) {
	var n int
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		ids, err := db.Int64s(ctx, tx, `SELECT c.id FROM coredumps c JOIN devices d ON d.id = c.device_id WHERE `+where, args...)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE coredumps SET parse_status = 'PENDING', parse_error = NULL, updated_at = $1 WHERE id = $2`, s.now(), id); err != nil {
				return err
			}
			if err := s.decodes.EnqueueTx(ctx, tx, id); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, db.Err("re-queue decodes", err)
	}
	return n, nil
}

// Reparse queues one core dump of a device again (404 when it is not that device's).
func (s *Service) Reparse(ctx context.Context, deviceID, id int64) error {
	n, err := s.requeue(ctx, `c.id = $1 AND c.device_id = $2`, id, deviceID)
	if err == nil && n == 0 {
		return apperr.NotFoundf("Coredump %d was not found", id)
	}
	return err
}

// ReparseWhere queues every core dump with the given status ("" for any) of the given
// model code ("" for all) and reports how many.
func (s *Service) ReparseWhere(ctx context.Context, status, modelCode string) (int, error) {
	where := []string{"1 = 1"}
	var args []any
	if status != "" {
		args = append(args, strings.ToUpper(status))
		where = append(where, fmt.Sprintf("c.parse_status = $%d", len(args)))
	}
	if modelCode != "" {
		args = append(args, modelCode)
		where = append(where, fmt.Sprintf("d.device_model_id = (SELECT id FROM device_models WHERE code = $%d)", len(args)))
	}
	return s.requeue(ctx, strings.Join(where, " AND "), args...)
}

// FirmwareArrived re-queues dumps of a model that failed for want of this firmware:
// those whose SHA prefix matches the new ELF, or that reported this version.
func (s *Service) FirmwareArrived(ctx context.Context, modelID int64, version, elfSHA string) (int, error) {
	return s.requeue(ctx, `d.device_model_id = $1 AND c.parse_status = 'ERROR' AND c.parse_error IN ('`+KindNoFirmware+`', '`+KindELFMismatch+`')
		AND ((c.app_elf_sha_prefix IS NOT NULL AND c.app_elf_sha_prefix <> '' AND substr(CAST($2 AS TEXT), 1, length(c.app_elf_sha_prefix)) = lower(c.app_elf_sha_prefix))
		     OR ((c.app_elf_sha_prefix IS NULL OR c.app_elf_sha_prefix = '') AND c.firmware_version = $3))`, modelID, strings.ToLower(elfSHA), version)
}

// SweepStale re-queues dumps that have been PENDING longer than age with no decode
// recorded: their job may have been discarded (a process dying in its last attempts, a
// failure to record the outcome). A duplicate job for a dump still being retried is
// harmless; re-queued rows get a fresh updated_at, so each is swept at most once per age.
func (s *Service) SweepStale(ctx context.Context, age time.Duration) (int, error) {
	return s.requeue(ctx, `c.parse_status = 'PENDING' AND c.updated_at < $1`, s.now().Add(-age))
}

// RunSweeper calls SweepStale every interval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, interval, age time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := s.SweepStale(ctx, age); err != nil && ctx.Err() == nil {
			log.Warn("sweep of stale PENDING core dumps", "error", err)
		} else if n > 0 {
			log.Warn("re-queued core dumps left PENDING without a decode", "count", n)
		}
	}
}
