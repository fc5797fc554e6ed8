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
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/crashgroups"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/elfsym"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/firmware"
)

// Error kinds recorded in coredumps.parse_error (defined by their owner, coredumps).
const (
	KindNoFirmware    = coredumps.KindNoFirmware
	KindELFMismatch   = coredumps.KindELFMismatch
	KindCorrupt       = coredumps.KindCorrupt
	KindUnsupported   = coredumps.KindUnsupported
	KindDecoderFailed = coredumps.KindDecoderFailed
	KindTimeout       = coredumps.KindTimeout
	KindMissingObject = coredumps.KindMissingObject
)

// Failure is a permanent decode failure: the row ends in ERROR with Kind and Msg.
type Failure struct {
	Kind string
	Msg  string
	// Report is what the dump holds without its firmware ELF (no_firmware, elf_mismatch):
	// the ELF only adds names and lines.
	Report *espcore.Report
	// elf is the picked version whose ELF could not be used ("" when none was picked):
	// its row exists, so finding it again under the model's lock is no arrival.
	elf string
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

// Dumps is what decoding needs of the core-dump owner (coredumps.Service): the dump to
// decode, its bytes, and where its result goes.
type Dumps interface {
	DecodeTarget(ctx context.Context, id int64) (*coredumps.DecodeTarget, error)
	ReadDump(ctx context.Context, t *coredumps.DecodeTarget, limit int64) ([]byte, error)
	RecordResult(ctx context.Context, tx *sql.Tx, id int64, r coredumps.Result) error
	PendingCount(ctx context.Context) (int, error)
}

// Firmware is what decoding needs of the firmware owner (firmware.Service): which stored
// ELF belongs to a dump, and its bytes.
type Firmware interface {
	VersionELF(ctx context.Context, q db.Querier, modelID int64, version string) (firmware.ELFRef, bool, error)
	ELFByPrefix(ctx context.Context, q db.Querier, modelID int64, prefix string) (firmware.ELFRef, bool, error)
	ReadELF(ctx context.Context, modelCode, version string) ([]byte, error)
}

// Groups puts a decoded dump into its crash group inside the transaction that records the
// decode (crashgroups.Service); a nil report (ERROR) takes it out of any group.
type Groups interface {
	AssignTx(ctx context.Context, tx *sql.Tx, d crashgroups.Dump, rep *espcore.Report) (crashgroups.Assignment, error)
}

// Service decodes core dumps.
type Service struct {
	db       *db.DB
	dumps    Dumps
	firmware Firmware
	groups   Groups
	log      *slog.Logger
	decoder  Decoder
	cfg      Config

	// Invocations counts decoder calls (tests assert each dump is decoded once).
	Invocations atomic.Int64

	duration *prometheus.HistogramVec
	outcomes *prometheus.CounterVec
}

// NewService returns the service; decoder nil means the native decoder. d runs the
// transactions that record a result with its crash group.
func NewService(d *db.DB, dumps Dumps, fw Firmware, groups Groups, decoder Decoder, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Service {
	if dumps == nil || fw == nil || groups == nil {
		panic("decoding.NewService: the core dump, firmware and crash group owners are required")
	}
	s := &Service{db: d, dumps: dumps, firmware: fw, groups: groups, log: log, cfg: cfg,
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
			n, _ := dumps.PendingCount(ctx)
			return float64(n)
		}))
	}
	return s
}

func transient(err error) error { return fmt.Errorf("%w: %w", ErrTransient, err) }

// firmwareChoice is the ELF picked for a dump.
type firmwareChoice struct {
	version string
	sha     string
	note    string // said in the report, e.g. the reported version's ELF differs
}

// pick chooses the ELF: by the dump's SHA prefix among this model's versions whatever
// version the device reported (the reported version first when it matches), else the
// reported version. A reported version whose ELF hash is unknown (adopted from the older
// service) is used as it is. q is the database or the caller's transaction.
func (s *Service) pick(ctx context.Context, q db.Querier, r *coredumps.DecodeTarget) (*firmwareChoice, error) {
	reported, reportedExists, err := s.firmware.VersionELF(ctx, q, r.ModelID, r.Version)
	if err != nil {
		return nil, transient(err)
	}
	if r.ELFPrefix == "" || (reportedExists && reported.SHA256 == "") {
		if !reportedExists {
			return nil, fail(KindNoFirmware, "no firmware %s of model %s is stored (the dump names no ELF SHA-256)", r.Version, r.ModelCode)
		}
		return &firmwareChoice{version: r.Version, sha: reported.SHA256}, nil
	}
	if reportedExists && strings.HasPrefix(reported.SHA256, r.ELFPrefix) {
		return &firmwareChoice{version: r.Version, sha: reported.SHA256}, nil
	}
	match, ok, err := s.firmware.ELFByPrefix(ctx, q, r.ModelID, r.ELFPrefix)
	switch {
	case err != nil:
		return nil, transient(err)
	case !ok && reportedExists:
		return nil, fail(KindELFMismatch, "the dump was made by an ELF whose SHA-256 starts with %s, but firmware %s of model %s has ELF %s and no stored version matches",
			r.ELFPrefix, r.Version, r.ModelCode, short(reported.SHA256))
	case !ok:
		return nil, fail(KindNoFirmware, "no firmware of model %s has an ELF whose SHA-256 starts with %s (device reported %s)", r.ModelCode, r.ELFPrefix, r.Version)
	}
	c := &firmwareChoice{version: match.Version, sha: match.SHA256}
	if reportedExists {
		c.note = fmt.Sprintf("The device reported firmware %s, whose ELF (%s) does not match the dump; decoded with firmware %s, whose ELF matches.",
			r.Version, short(reported.SHA256), match.Version)
	} else {
		c.note = fmt.Sprintf("The device reported firmware %s, which is not stored; decoded with firmware %s, whose ELF matches the dump.", r.Version, match.Version)
	}
	return c, nil
}

func short(sha string) string {
	if len(sha) > 16 {
		return sha[:16] + "…"
	}
	return sha
}

// Decode decodes one core dump and records the outcome. It returns an error only
// for transient failures (wrapped ErrTransient), which the job retries.
func (s *Service) Decode(ctx context.Context, id int64) error {
	r, err := s.dumps.DecodeTarget(ctx, id)
	if err != nil {
		return transient(err)
	}
	if r == nil {
		return nil // a deleted dump needs nothing
	}
	text, rep, err := s.decode(ctx, r)
	var f *Failure
	switch {
	case err == nil:
		return s.finish(ctx, r, "PARSED", "", text, rep)
	case errors.As(err, &f) && (f.Kind == KindNoFirmware || f.Kind == KindELFMismatch):
		return s.finishMissingFirmware(ctx, r, f)
	case errors.As(err, &f):
		return s.finish(ctx, r, "ERROR", f.Kind, f.Msg, nil)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		// The job's own timeout: a decode this slow will not get faster.
		return s.finish(context.WithoutCancel(ctx), r, "ERROR", KindTimeout, "decoding took longer than DECODE_TIMEOUT", nil)
	default:
		return err
	}
}

// finishMissingFirmware records ERROR for want of firmware, unless the firmware arrived
// meanwhile. It holds the model row (shared) so a firmware upload, which locks it, either
// committed before — then pick finds it and the job retries — or commits after, and its
// re-queue of failed dumps sees this ERROR.
func (s *Service) finishMissingFirmware(ctx context.Context, r *coredumps.DecodeTarget, f *Failure) error {
	arrived := false
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := firmware.ShareModel(ctx, s.db, tx, r.ModelID); err != nil {
			return err
		}
		if c, err := s.pick(ctx, tx, r); err == nil && (f.elf == "" || c.version != f.elf) {
			arrived = true
			return nil
		}
		res := coredumps.Result{Status: coredumps.StatusError, Kind: f.Kind, Output: f.Msg}
		if f.Report != nil {
			res.Output = f.Msg + "\n\nWithout the firmware ELF (no function names or lines):\n\n" + f.Report.Text()
			if b, err := json.Marshal(f.Report); err == nil {
				res.Report = b
			}
		}
		if err := s.dumps.RecordResult(ctx, tx, r.ID, res); err != nil {
			return err
		}
		_, err := s.groups.AssignTx(ctx, tx, groupDump(r), nil) // an ERROR is in no group
		return err
	})
	if err != nil {
		return transient(fmt.Errorf("record decode result of %d: %w", r.ID, db.Classify(err)))
	}
	if arrived {
		return transient(fmt.Errorf("firmware for core dump %d arrived while decoding; retrying", r.ID))
	}
	s.outcomes.WithLabelValues(f.Kind).Inc()
	s.log.Info("core dump decoded", "coredump_id", r.ID, "status", "ERROR", "kind", f.Kind)
	return nil
}

// Fail records a permanent failure for a dump whose retries are exhausted.
func (s *Service) Fail(ctx context.Context, id int64, kind, msg string) error {
	return s.finish(ctx, &coredumps.DecodeTarget{ID: id}, "ERROR", kind, msg, nil)
}

// groupDump is what crash grouping needs of a decoded dump.
func groupDump(r *coredumps.DecodeTarget) crashgroups.Dump {
	return crashgroups.Dump{ID: r.ID, DeviceID: r.DeviceID, ModelID: r.ModelID, ModelCode: r.ModelCode, Version: r.Version, UploadedAt: r.UploadedAt}
}

func (s *Service) decode(ctx context.Context, r *coredumps.DecodeTarget) (string, *espcore.Report, error) {
	dump, err := s.dumps.ReadDump(ctx, r, s.cfg.MaxDumpBytes)
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
		b, err := s.firmware.ReadELF(ctx, r.ModelCode, fw.version)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			f := fail(KindNoFirmware, "firmware %s of model %s has no stored ELF", fw.version, r.ModelCode)
			f.elf = fw.version
			return nil, withoutELF(f, dump)
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
	in := Input{CoredumpID: r.ID, Chip: r.Chip, Dump: dump, ELF: elfBytes, ELFSHA256: fw.sha}
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
			f.elf = fw.version
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

// finish records the outcome and, in the same transaction, the dump's crash group: a
// PARSED dump joins its group, an ERROR leaves any group a former decode put it in.
func (s *Service) finish(ctx context.Context, r *coredumps.DecodeTarget, status, kind, output string, rep *espcore.Report) error {
	id := r.ID
	res := coredumps.Result{Status: status, Kind: kind, Output: output}
	if rep != nil {
		if b, err := json.Marshal(rep); err == nil {
			res.Report = b
		}
	}
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		if err := s.dumps.RecordResult(ctx, tx, id, res); err != nil {
			return err
		}
		var parsed *espcore.Report
		if status == coredumps.StatusParsed {
			parsed = rep
		}
		_, err := s.groups.AssignTx(ctx, tx, groupDump(r), parsed)
		return err
	})
	if err != nil {
		return transient(err)
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
