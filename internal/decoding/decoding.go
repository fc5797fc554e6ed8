// Package decoding turns stored core dumps into crash reports: it picks the exact
// firmware ELF, runs the native decoder (or the sidecar), records PARSED or ERROR
// with a machine-readable kind, and runs as durable River jobs.
package decoding

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/elfsym"
	"github.com/iotsupport/iotsupport/internal/espcore"
)

// Error kinds stored in coredumps.parse_error.
const (
	KindNoFirmware    = "no_firmware"
	KindELFMismatch   = "elf_mismatch"
	KindCorrupt       = "corrupt"
	KindUnsupported   = "unsupported"
	KindDecoderFailed = "decoder_failed"
	KindTimeout       = "timeout"
	KindMissingObject = "missing_object"
)

// Failure is a permanent decode failure: the row ends in ERROR with Kind and Msg.
type Failure struct {
	Kind string
	Msg  string
	// Report is what the dump holds without its firmware ELF (no_firmware, elf_mismatch):
	// the ELF only adds names and lines.
	Report *espcore.Report
}

func (f *Failure) Error() string { return f.Kind + ": " + f.Msg }

func fail(kind, format string, args ...any) *Failure {
	return &Failure{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// ErrTransient marks failures worth retrying (store or sidecar unavailable).
var ErrTransient = errors.New("transient decode failure")

// Decoder produces a report for a dump and its firmware ELF.
type Decoder interface {
	Decode(ctx context.Context, in Input) (text string, report *espcore.Report, err error)
}

// Input is what a decoder gets.
type Input struct {
	CoredumpID int64
	Chip       string
	Dump       []byte
	// ELF is nil when the decoder said it holds ELFSHA256 already (ELFCache); a
	// decoder that no longer does returns ErrNeedELF and is called again with it.
	ELF       []byte
	ELFSHA256 string
}

// ELFCache is implemented by decoders that keep what they need of an ELF by its SHA-256,
// so the (megabytes of) ELF need not be read from storage for every dump.
type ELFCache interface {
	HasELF(sha256 string) bool
}

// ErrNeedELF is returned by a decoder given no ELF for one it no longer holds.
var ErrNeedELF = errors.New("decoder needs the ELF bytes")

// Config tunes the service.
type Config struct {
	CacheBytes   int64
	MaxDumpBytes int64
}

// Service decodes core dumps.
type Service struct {
	db      *db.DB
	store   blob.Store
	log     *slog.Logger
	decoder Decoder
	cfg     Config
	now     func() time.Time

	// Invocations counts decoder calls (tests assert each dump is decoded once).
	Invocations atomic.Int64

	duration *prometheus.HistogramVec
	outcomes *prometheus.CounterVec
}

// NewService returns the service; decoder nil means the native decoder.
func NewService(d *db.DB, store blob.Store, decoder Decoder, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Service {
	s := &Service{db: d, store: store, log: log, cfg: cfg, now: db.Now,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "iotsupport_decode_duration_seconds",
			Help: "Core dump decode time by decoder.", Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"decoder"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotsupport_decode_outcomes_total",
			Help: "Decode results: parsed, or the parse_error kind."}, []string{"outcome"}),
	}
	if decoder == nil {
		decoder = NewNative(cfg.CacheBytes)
	}
	s.decoder = decoder
	if reg != nil {
		reg.MustRegister(s.duration, s.outcomes)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotsupport_decode_queue_depth",
			Help: "Core dumps waiting to be decoded (PENDING)."}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var n int
			_ = d.QueryRowContext(ctx, `SELECT COUNT(*) FROM coredumps WHERE parse_status = 'PENDING'`).Scan(&n)
			return float64(n)
		}))
	}
	return s
}

// dumpRow is what decoding needs of a core dump.
type dumpRow struct {
	id        int64
	deviceKey string
	modelID   int64
	modelCode string
	chip      string
	reported  string
	prefix    string
	status    string
}

func (s *Service) load(ctx context.Context, id int64) (*dumpRow, error) {
	var r dumpRow
	var prefix sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT c.id, d.key, m.id, m.code, c.chip, c.firmware_version, c.app_elf_sha_prefix, c.parse_status
		FROM coredumps c JOIN devices d ON d.id = c.device_id JOIN device_models m ON m.id = d.device_model_id WHERE c.id = $1`, id).
		Scan(&r.id, &r.deviceKey, &r.modelID, &r.modelCode, &r.chip, &r.reported, &prefix, &r.status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, transient(fmt.Errorf("load core dump %d: %w", id, db.Classify(err)))
	}
	r.prefix = strings.ToLower(prefix.String)
	return &r, nil
}

func transient(err error) error { return fmt.Errorf("%w: %w", ErrTransient, err) }

// firmwareChoice is the ELF picked for a dump.
type firmwareChoice struct {
	version string
	sha     string
	note    string // said in the report, e.g. the reported version's ELF differs
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// pick chooses the ELF: by the dump's SHA prefix among this model's versions whatever
// version the device reported (the reported version first when it matches), else the
// reported version. A reported version whose ELF hash is unknown (adopted from the older
// service) is used as it is.
func (s *Service) pick(ctx context.Context, q querier, r *dumpRow) (*firmwareChoice, error) {
	var reportedSHA sql.NullString
	err := q.QueryRowContext(ctx, `SELECT elf_sha256 FROM firmware_versions WHERE device_model_id = $1 AND version = $2`,
		r.modelID, r.reported).Scan(&reportedSHA)
	reportedExists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, transient(db.Classify(err))
	}
	reportedSHA.String = strings.ToLower(strings.TrimSpace(reportedSHA.String))
	if r.prefix == "" || (reportedExists && (!reportedSHA.Valid || reportedSHA.String == "")) {
		if !reportedExists {
			return nil, fail(KindNoFirmware, "no firmware %s of model %s is stored (the dump names no ELF SHA-256)", r.reported, r.modelCode)
		}
		return &firmwareChoice{version: r.reported, sha: reportedSHA.String}, nil
	}
	if reportedExists && strings.HasPrefix(reportedSHA.String, r.prefix) {
		return &firmwareChoice{version: r.reported, sha: reportedSHA.String}, nil
	}
	var version, sha string
	err = q.QueryRowContext(ctx, `SELECT version, elf_sha256 FROM firmware_versions WHERE device_model_id = $1 AND elf_sha256 IS NOT NULL
		AND substr(elf_sha256, 1, $2) = $3 ORDER BY uploaded_at DESC LIMIT 1`, r.modelID, len(r.prefix), r.prefix).Scan(&version, &sha)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if reportedExists {
			return nil, fail(KindELFMismatch, "the dump was made by an ELF whose SHA-256 starts with %s, but firmware %s of model %s has ELF %s and no stored version matches",
				r.prefix, r.reported, r.modelCode, short(reportedSHA.String))
		}
		return nil, fail(KindNoFirmware, "no firmware of model %s has an ELF whose SHA-256 starts with %s (device reported %s)", r.modelCode, r.prefix, r.reported)
	case err != nil:
		return nil, transient(db.Classify(err))
	}
	c := &firmwareChoice{version: version, sha: sha}
	if reportedExists {
		c.note = fmt.Sprintf("The device reported firmware %s, whose ELF (%s) does not match the dump; decoded with firmware %s, whose ELF matches.",
			r.reported, short(reportedSHA.String), version)
	} else {
		c.note = fmt.Sprintf("The device reported firmware %s, which is not stored; decoded with firmware %s, whose ELF matches the dump.", r.reported, version)
	}
	return c, nil
}

func short(sha string) string {
	if len(sha) > 16 {
		return sha[:16] + "…"
	}
	return sha
}

func (s *Service) read(ctx context.Context, key string, limit int64) ([]byte, error) {
	rc, info, err := s.store.Get(ctx, key, nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if limit > 0 && info.Size > limit {
		return nil, fmt.Errorf("%s is %d bytes, over the %d-byte limit", key, info.Size, limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(info.Size))
	if _, err := io.Copy(&buf, rc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode decodes one core dump and records the outcome. It returns an error only
// for transient failures (wrapped ErrTransient), which the job retries.
func (s *Service) Decode(ctx context.Context, id int64) error {
	r, err := s.load(ctx, id)
	if err != nil || r == nil {
		return err // a deleted dump needs nothing
	}
	text, rep, err := s.decode(ctx, r)
	var f *Failure
	switch {
	case err == nil:
		return s.finish(ctx, id, "PARSED", "", text, rep)
	case errors.As(err, &f) && (f.Kind == KindNoFirmware || f.Kind == KindELFMismatch):
		return s.finishMissingFirmware(ctx, r, f)
	case errors.As(err, &f):
		return s.finish(ctx, id, "ERROR", f.Kind, f.Msg, nil)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		// The job's own timeout: a decode this slow will not get faster.
		return s.finish(context.WithoutCancel(ctx), id, "ERROR", KindTimeout, "decoding took longer than DECODE_TIMEOUT", nil)
	default:
		return err
	}
}

// finishMissingFirmware records ERROR for want of firmware, unless the firmware arrived
// meanwhile. It holds the model row (shared) so a firmware upload, which locks it, either
// committed before — then pick finds it and the job retries — or commits after, and its
// re-queue of failed dumps sees this ERROR.
func (s *Service) finishMissingFirmware(ctx context.Context, r *dumpRow, f *Failure) error {
	arrived := false
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if s.db.Dialect == db.Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT id FROM device_models WHERE id = $1 FOR SHARE`, r.modelID); err != nil {
				return err
			}
		}
		if _, err := s.pick(ctx, tx, r); err == nil {
			arrived = true
			return nil
		}
		out, report := f.Msg, any(nil)
		if f.Report != nil {
			out = f.Msg + "\n\nWithout the firmware ELF (no function names or lines):\n\n" + f.Report.Text()
			if b, err := json.Marshal(f.Report); err == nil {
				report = string(b)
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE coredumps SET parse_status = 'ERROR', parse_error = $1, parsed_output = $2, report = $3,
			parsed_at = $4, updated_at = $4 WHERE id = $5`, f.Kind, out, report, s.now(), r.id)
		return err
	})
	if err != nil {
		return transient(fmt.Errorf("record decode result of %d: %w", r.id, db.Classify(err)))
	}
	if arrived {
		return transient(fmt.Errorf("firmware for core dump %d arrived while decoding; retrying", r.id))
	}
	s.outcomes.WithLabelValues(f.Kind).Inc()
	s.log.Info("core dump decoded", "coredump_id", r.id, "status", "ERROR", "kind", f.Kind)
	return nil
}

// Fail records a permanent failure for a dump whose retries are exhausted.
func (s *Service) Fail(ctx context.Context, id int64, kind, msg string) error {
	return s.finish(ctx, id, "ERROR", kind, msg, nil)
}

func (s *Service) decode(ctx context.Context, r *dumpRow) (string, *espcore.Report, error) {
	dump, err := s.read(ctx, fmt.Sprintf("coredumps/%s/%d.dmp", r.deviceKey, r.id), s.cfg.MaxDumpBytes)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return "", nil, fail(KindMissingObject, "the stored core dump object is missing")
	case err != nil:
		return "", nil, transient(err)
	}
	// A body that is no core dump needs no firmware: say what it is instead.
	if f := notADump(dump); f != nil {
		return "", nil, f
	}
	fw, err := s.pick(ctx, s.db, r)
	if err != nil {
		return "", nil, withoutELF(err, dump)
	}
	readELF := func() ([]byte, error) {
		b, err := s.read(ctx, "firmware/"+r.modelCode+"/"+fw.version+"/firmware.elf", 0)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			return nil, withoutELF(fail(KindNoFirmware, "firmware %s of model %s has no stored ELF", fw.version, r.modelCode), dump)
		case err != nil:
			return nil, transient(err)
		}
		return b, nil
	}
	var elfBytes []byte
	if c, ok := s.decoder.(ELFCache); !ok || fw.sha == "" || !c.HasELF(fw.sha) {
		if elfBytes, err = readELF(); err != nil {
			return "", nil, err
		}
	}
	start := time.Now()
	in := Input{CoredumpID: r.id, Chip: r.chip, Dump: dump, ELF: elfBytes, ELFSHA256: fw.sha}
	text, rep, err := s.decoder.Decode(ctx, in)
	if errors.Is(err, ErrNeedELF) && in.ELF == nil { // evicted since HasELF
		if in.ELF, err = readELF(); err != nil {
			return "", nil, err
		}
		text, rep, err = s.decoder.Decode(ctx, in)
	}
	s.Invocations.Add(1)
	s.duration.WithLabelValues(fmt.Sprintf("%T", s.decoder)).Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, ErrTransient) || errors.Is(err, context.DeadlineExceeded) {
			return "", nil, err
		}
		var f *Failure
		if errors.As(err, &f) {
			return "", nil, withoutELF(err, dump) // e.g. the stored ELF cannot be read
		}
		if h := espcore.Inspect(dump); h.Kind == espcore.KindUnknown {
			return "", nil, fail(KindCorrupt, "not a recognisable ESP-IDF core dump: %v", err)
		}
		if strings.Contains(err.Error(), "unsupported") {
			return "", nil, fail(KindUnsupported, "%v", err)
		}
		return "", nil, fail(KindDecoderFailed, "%v", err)
	}
	if fw.note != "" {
		text = "NOTE: " + fw.note + "\n\n" + text
		if rep != nil {
			rep.Warnings = append(rep.Warnings, fw.note)
		}
	}
	return text, rep, nil
}

// notADump classifies a body the decoder cannot take as a core dump at all: corrupt when
// it is none (or an erased or truncated one), unsupported when its version word is unknown.
func notADump(dump []byte) *Failure {
	h := espcore.Inspect(dump)
	switch {
	case h.Kind == espcore.KindUnknown:
		return fail(KindCorrupt, "not an ESP-IDF core dump: neither raw partition bytes, UART base64 text nor a core ELF")
	case h.Problem == "":
		return nil
	case h.Unsupported:
		return fail(KindUnsupported, "%s", h.Problem)
	default:
		return fail(KindCorrupt, "%s", h.Problem)
	}
}

// withoutELF adds to a failure for want of firmware what the dump holds by itself.
func withoutELF(err error, dump []byte) error {
	var f *Failure
	if !errors.As(err, &f) || (f.Kind != KindNoFirmware && f.Kind != KindELFMismatch) {
		return err
	}
	if rep, derr := espcore.Decode(dump, nil, espcore.Options{}); derr == nil {
		f.Report = rep
	}
	return f
}

func (s *Service) finish(ctx context.Context, id int64, status, kind, output string, rep *espcore.Report) error {
	var reportJSON any
	if rep != nil {
		b, err := json.Marshal(rep)
		if err == nil {
			reportJSON = string(b)
		}
	}
	var kindVal any
	if kind != "" {
		kindVal = kind
	}
	_, err := s.db.ExecContext(ctx, `UPDATE coredumps SET parse_status = $1, parse_error = $2, parsed_output = $3, report = $4,
		parsed_at = $5, updated_at = $5 WHERE id = $6`, status, kindVal, output, reportJSON, s.now(), id)
	if err != nil {
		return transient(fmt.Errorf("record decode result of %d: %w", id, db.Classify(err)))
	}
	outcome := "parsed"
	if kind != "" {
		outcome = kind
	}
	s.outcomes.WithLabelValues(outcome).Inc()
	s.log.Info("core dump decoded", "coredump_id", id, "status", status, "kind", kind)
	return nil
}

// Native decodes with internal/espcore, caching ELF indexes by ELF SHA-256.
type Native struct {
	cache *indexCache
}

// NewNative returns the native decoder with a cache of cacheBytes.
func NewNative(cacheBytes int64) *Native {
	if cacheBytes <= 0 {
		cacheBytes = 256 << 20
	}
	return &Native{cache: newIndexCache(cacheBytes)}
}

// HasELF implements ELFCache.
func (n *Native) HasELF(sha256 string) bool { return n.cache.get(sha256) != nil }

// Decode implements Decoder.
func (n *Native) Decode(ctx context.Context, in Input) (string, *espcore.Report, error) {
	key := in.ELFSHA256
	if key == "" {
		key = hexSHA(in.ELF)
	}
	ix := n.cache.get(key)
	if ix == nil && in.ELF == nil {
		return "", nil, ErrNeedELF
	}
	if ix == nil {
		var err error
		ix, err = elfsym.New(bytes.NewReader(in.ELF))
		if err != nil {
			return "", nil, fail(KindNoFirmware, "the stored firmware ELF cannot be read: %v", err)
		}
		n.cache.put(key, ix)
	}
	type result struct {
		rep *espcore.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := espcore.Decode(in.Dump, ix, espcore.Options{})
		done <- result{rep, err}
	}()
	select {
	case <-ctx.Done():
		return "", nil, ctx.Err()
	case r := <-done:
		if r.err != nil {
			return "", nil, r.err
		}
		return r.rep.Text(), r.rep, nil
	}
}

func hexSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
