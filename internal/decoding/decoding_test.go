package decoding

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/coredumps"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/espcore"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/fleet"
	"github.com/iotsupport/iotsupport/internal/notify"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

var otherSHA = strings.Repeat("0", 64)

func sqliteDB(t *testing.T) *db.DB { return testenv.OpenDB(t, testenv.SQLiteURL(t)) }

// plain is what the native decoder makes of the case with its ELF, for comparison.
func plain(t *testing.T, c testCase) (string, *espcore.Report) {
	t.Helper()
	text, rep, err := NewNative(0).Decode(context.Background(), Input{Dump: c.dump, ELF: c.elf})
	if err != nil {
		t.Fatal(err)
	}
	return text, rep
}

func onlyResult(t *testing.T, f *fakeDumps) recorded {
	t.Helper()
	rs := f.recorded()
	if len(rs) != 1 {
		t.Fatalf("%d results recorded, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// TestPickELFBySHAPrefix: the ELF whose SHA-256 the dump carries wins over the version the
// device reported (the report says so), the reported version is used when its ELF matches
// or its ELF hash is unknown (adopted), and a dump without a prefix uses the reported one.
func TestPickELFBySHAPrefix(t *testing.T) {
	c := loadCase(t, "esp32c3")
	want, _ := plain(t, c)
	fw := newFirmware()
	fw.store("1.0.0", otherSHA, []byte("not this ELF"))
	fw.store("1.0.1", c.sha, c.elf)
	fw.store("1.0.2", c.sha, c.elf)
	fw.store("0.5.0", "", c.elf) // adopted: ELF hash never recorded
	for _, tc := range []struct {
		name, reported, prefix string
		read                   string // the ELF read
		note                   string // "" when none is due
	}{
		{"reported version's ELF differs", "1.0.0", c.prefix, "lamp/1.0.1",
			"The device reported firmware 1.0.0, whose ELF (0000000000000000…) does not match the dump; decoded with firmware 1.0.1, whose ELF matches."},
		{"reported version not stored", "0.9.0", c.prefix, "lamp/1.0.1",
			"The device reported firmware 0.9.0, which is not stored; decoded with firmware 1.0.1, whose ELF matches the dump."},
		{"reported version matches", "1.0.2", c.prefix, "lamp/1.0.2", ""},
		{"reported version adopted", "0.5.0", c.prefix, "lamp/0.5.0", ""},
		{"dump names no ELF", "1.0.2", "", "lamp/1.0.2", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dumps := newDumps()
			dumps.add(target(7, tc.reported, tc.prefix), c.dump)
			fw.elfReads = nil
			// No ELF cache, so every decode reads the ELF it picked.
			dec := &calls{inner: decoderFunc(NewNative(0).Decode)}
			s := NewService(sqliteDB(t), dumps, fw, noGroups{}, dec, Config{}, discard(), nil)
			if err := s.Decode(context.Background(), 7); err != nil {
				t.Fatal(err)
			}
			r := onlyResult(t, dumps)
			if r.id != 7 || r.res.Status != coredumps.StatusParsed || r.res.Kind != "" {
				t.Fatalf("result %+v", r)
			}
			if got := fw.reads(); len(got) != 1 || got[0] != tc.read {
				t.Fatalf("ELF read %v, want %s", got, tc.read)
			}
			wantText := want
			if tc.note != "" {
				wantText = "NOTE: " + tc.note + "\n\n" + want
			}
			if r.res.Output != wantText {
				t.Fatalf("output starts %.300q, want %.300q", r.res.Output, wantText)
			}
			var rep espcore.Report
			if err := json.Unmarshal(r.res.Report, &rep); err != nil {
				t.Fatalf("report: %v", err)
			}
			if hasNote := len(rep.Warnings) > 0 && rep.Warnings[len(rep.Warnings)-1] == tc.note; (tc.note != "") != hasNote {
				t.Fatalf("report warnings %q, want the note %q", rep.Warnings, tc.note)
			}
			if in := dec.inputs(); len(in) != 1 || string(in[0].ELF) != string(c.elf) || in[0].CoredumpID != 7 || in[0].Chip != "esp32c3" {
				t.Fatalf("decoder called %d times or with the wrong input", len(in))
			}
		})
	}
}

// TestMissingFirmwareRecordedWithReportWithoutELF: when no stored ELF fits, the dump ends
// in ERROR elf_mismatch or no_firmware, recorded in the transaction that re-checked the
// firmware under the model's lock, with what the dump tells without its ELF; the decoder
// is not called.
func TestMissingFirmwareRecordedWithReportWithoutELF(t *testing.T) {
	c := loadCase(t, "esp32c3")
	forEachDB(t, func(t *testing.T, d *db.DB) {
		for _, tc := range []struct {
			name, reported, prefix string
			stored                 map[string]string
			kind, msg              string
		}{
			{"elf_mismatch", "1.0.0", c.prefix, map[string]string{"1.0.0": otherSHA}, KindELFMismatch,
				"the dump was made by an ELF whose SHA-256 starts with " + c.prefix + ", but firmware 1.0.0 of model lamp has ELF 0000000000000000… and no stored version matches"},
			{"no_firmware by prefix", "1.0.0", c.prefix, map[string]string{"2.0.0": otherSHA}, KindNoFirmware,
				"no firmware of model lamp has an ELF whose SHA-256 starts with " + c.prefix + " (device reported 1.0.0)"},
			{"no_firmware by version", "1.0.0", "", map[string]string{"2.0.0": c.sha}, KindNoFirmware,
				"no firmware 1.0.0 of model lamp is stored (the dump names no ELF SHA-256)"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				fw := newFirmware()
				for v, sha := range tc.stored {
					fw.store(v, sha, c.elf)
				}
				dumps := newDumps()
				dumps.add(target(3, tc.reported, tc.prefix), c.dump)
				dec := &calls{inner: NewNative(0)}
				s := NewService(d, dumps, fw, noGroups{}, dec, Config{}, discard(), nil)
				if err := s.Decode(context.Background(), 3); err != nil {
					t.Fatalf("a missing firmware is permanent, got %v", err)
				}
				r := onlyResult(t, dumps)
				if r.res.Status != coredumps.StatusError || r.res.Kind != tc.kind || !r.inTx || fw.txLooks == 0 {
					t.Fatalf("result %+v in tx %v after %d lookups in a tx", r.res, r.inTx, fw.txLooks)
				}
				head, rest, ok := strings.Cut(r.res.Output, "\n\nWithout the firmware ELF (no function names or lines):\n\n")
				if head != tc.msg || !ok || !strings.Contains(rest, "Crashed task") {
					t.Fatalf("output %.400q", r.res.Output)
				}
				var rep espcore.Report
				if err := json.Unmarshal(r.res.Report, &rep); err != nil || rep.AppELFSHAPrefix != c.prefix || rep.CrashedTask == nil || rep.CrashedTask.Name != "main" {
					t.Fatalf("ELF-less report (prefix %q, crashed task %+v): %v", rep.AppELFSHAPrefix, rep.CrashedTask, err)
				}
				if len(dec.inputs()) != 0 || len(fw.reads()) != 0 {
					t.Fatalf("decoder called %d times, ELF read %v", len(dec.inputs()), fw.reads())
				}
			})
		}
	})
}

// TestStoredVersionWithoutELFObject: a version whose row is stored but whose ELF object is
// gone (or unreadable) cannot decode the dump: it is recorded at once as no_firmware with
// the ELF-less report, not retried as if firmware had just arrived.
func TestStoredVersionWithoutELFObject(t *testing.T) {
	c := loadCase(t, "esp32c3")
	forEachDB(t, func(t *testing.T, d *db.DB) {
		for _, tc := range []struct {
			name string
			elf  []byte
			msg  string
		}{
			{"object missing", nil, "firmware 1.0.0 of model lamp has no stored ELF"},
			{"object unreadable", []byte("not an ELF"), "the stored firmware ELF cannot be read"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				fw := newFirmware()
				fw.store("1.0.0", c.sha, tc.elf)
				dumps := newDumps()
				dumps.add(target(5, "1.0.0", c.prefix), c.dump)
				s := NewService(d, dumps, fw, noGroups{}, NewNative(0), Config{}, discard(), nil)
				if err := s.Decode(context.Background(), 5); err != nil {
					t.Fatalf("decode: %v, want the failure recorded (a retry cannot bring the ELF back)", err)
				}
				r := onlyResult(t, dumps)
				if r.res.Status != coredumps.StatusError || r.res.Kind != KindNoFirmware || !strings.HasPrefix(r.res.Output, tc.msg) || r.res.Report == nil {
					t.Fatalf("result %+v", r.res)
				}
			})
		}
	})
}

// TestFirmwareArrivingBeforeRecordRetries: firmware that commits between the decode's pick
// and its record of the failure is found by the re-check under the model's lock; the
// decode then records nothing and asks to be retried, and the retry decodes.
func TestFirmwareArrivingBeforeRecordRetries(t *testing.T) {
	c := loadCase(t, "esp32c3")
	forEachDB(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		fw := newFirmware()
		fw.arrive = func(f *fakeFirmware) { f.store("1.0.0", c.sha, c.elf) }
		dumps := newDumps()
		dumps.add(target(9, "1.0.0", c.prefix), c.dump)
		s := NewService(d, dumps, fw, noGroups{}, NewNative(0), Config{}, discard(), nil)
		err := s.Decode(ctx, 9)
		if !errors.Is(err, ErrTransient) {
			t.Fatalf("firmware arrived during the decode: %v, want a transient error", err)
		}
		if rs := dumps.recorded(); len(rs) != 0 || fw.txLooks == 0 {
			t.Fatalf("recorded %+v (lookups in a tx: %d)", rs, fw.txLooks)
		}
		if err := s.Decode(ctx, 9); err != nil {
			t.Fatal(err)
		}
		if r := onlyResult(t, dumps); r.res.Status != coredumps.StatusParsed {
			t.Fatalf("retry: %+v", r.res)
		}
	})
}

// forgetful claims to hold every ELF and then asks for it: an ELF evicted between
// HasELF and Decode.
type forgetful struct{ calls int }

func (*forgetful) HasELF(string) bool { return true }

func (f *forgetful) Decode(_ context.Context, in Input) (string, *espcore.Report, error) {
	f.calls++
	if in.ELF == nil {
		return "", nil, ErrNeedELF
	}
	return "decoded with " + string(in.ELF[:4]), nil, nil
}

// TestCachedELFNotReadAgain: a decoder that holds the ELF (ELFCache) is called once,
// without the ELF, and the ELF is not read from storage; one that lost it meanwhile is
// called again with the ELF.
func TestCachedELFNotReadAgain(t *testing.T) {
	c := loadCase(t, "esp32c3")
	ctx := context.Background()
	d := sqliteDB(t)
	fw := newFirmware()
	fw.store("1.0.0", c.sha, c.elf)
	dumps := newDumps()
	dumps.add(target(1, "1.0.0", c.prefix), c.dump)
	dumps.add(target(2, "1.0.0", c.prefix), c.dump)
	dec := &calls{inner: NewNative(0)}
	s := NewService(d, dumps, fw, noGroups{}, dec, Config{}, discard(), nil)
	for _, id := range []int64{1, 2} {
		if err := s.Decode(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	in := dec.inputs()
	if len(in) != 2 || in[0].ELF == nil || in[1].ELF != nil || in[1].ELFSHA256 != c.sha {
		t.Fatalf("decoder inputs: %d calls, first with ELF %v, second with ELF %v (%s)", len(in), in[0].ELF != nil, in[1].ELF != nil, in[1].ELFSHA256)
	}
	if got := fw.reads(); len(got) != 1 || s.Invocations.Load() != 2 {
		t.Fatalf("ELF read %d times for 2 dumps of one firmware, %d decoder invocations", len(got), s.Invocations.Load())
	}
	rs := dumps.recorded()
	if len(rs) != 2 || rs[0].res.Status != coredumps.StatusParsed || rs[1].res.Output != rs[0].res.Output {
		t.Fatalf("results %+v", rs)
	}

	lost := &forgetful{}
	dumps = newDumps()
	dumps.add(target(3, "1.0.0", c.prefix), c.dump)
	fw.elfReads = nil
	s = NewService(d, dumps, fw, noGroups{}, lost, Config{}, discard(), nil)
	if err := s.Decode(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if r := onlyResult(t, dumps); r.res.Output != "decoded with \x7fELF" || lost.calls != 2 || len(fw.reads()) != 1 {
		t.Fatalf("evicted ELF: output %q after %d calls and %d reads", r.res.Output, lost.calls, len(fw.reads()))
	}
}

// TestDumpProblemsNeedNoFirmware: a missing object is missing_object and a body that is
// no core dump is corrupt, both without looking for firmware or calling the decoder; a
// deleted dump needs nothing and a storage outage is retried.
func TestDumpProblemsNeedNoFirmware(t *testing.T) {
	c := loadCase(t, "esp32c3")
	ctx := context.Background()
	d := sqliteDB(t)
	for _, tc := range []struct {
		name string
		body []byte
		kind string
	}{
		{"missing object", nil, KindMissingObject},
		{"no core dump", []byte("hello, this is a log line and no core dump\n"), KindCorrupt},
		{"empty", []byte{}, KindCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := newFirmware()
			fw.store("1.0.0", c.sha, c.elf)
			dumps := newDumps()
			dumps.add(target(4, "1.0.0", c.prefix), tc.body)
			dec := &calls{inner: NewNative(0)}
			s := NewService(d, dumps, fw, noGroups{}, dec, Config{}, discard(), nil)
			if err := s.Decode(ctx, 4); err != nil {
				t.Fatal(err)
			}
			r := onlyResult(t, dumps)
			if r.res.Status != coredumps.StatusError || r.res.Kind != tc.kind || r.res.Output == "" {
				t.Fatalf("result %+v, want ERROR %s", r.res, tc.kind)
			}
			if fw.looks != 0 || len(dec.inputs()) != 0 {
				t.Fatalf("%d firmware lookups, %d decoder calls", fw.looks, len(dec.inputs()))
			}
		})
	}

	dumps := newDumps()
	s := NewService(d, dumps, newFirmware(), noGroups{}, NewNative(0), Config{}, discard(), nil)
	if err := s.Decode(ctx, 404); err != nil || len(dumps.recorded()) != 0 {
		t.Fatalf("deleted dump: %v, recorded %+v", err, dumps.recorded())
	}
	dumps.add(target(5, "1.0.0", c.prefix), c.dump)
	dumps.readErr = blob.ErrUnavailable
	if err := s.Decode(ctx, 5); !errors.Is(err, ErrTransient) || len(dumps.recorded()) != 0 {
		t.Fatalf("store outage: %v, recorded %+v", err, dumps.recorded())
	}
}

// TestDecoderFailuresClassified: what a decoder's error becomes: unsupported and
// decoder_failed are recorded, transient ones are retried, and running past the decode's
// deadline is recorded as timeout.
func TestDecoderFailuresClassified(t *testing.T) {
	c := loadCase(t, "esp32c3")
	d := sqliteDB(t)
	for _, tc := range []struct {
		name string
		err  error
		kind string // "" for a retry
	}{
		{"failed", errors.New("stack walk went nowhere"), KindDecoderFailed},
		{"unsupported", errors.New("unsupported task layout"), KindUnsupported},
		{"transient", transient(errors.New("sidecar unreachable")), ""},
		{"timeout", context.DeadlineExceeded, KindTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := newFirmware()
			fw.store("1.0.0", c.sha, c.elf)
			dumps := newDumps()
			dumps.add(target(6, "1.0.0", c.prefix), c.dump)
			ctx := context.Background()
			dec := decoderFunc(func(context.Context, Input) (string, *espcore.Report, error) { return "", nil, tc.err })
			if tc.kind == KindTimeout {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				dec = func(ctx context.Context, _ Input) (string, *espcore.Report, error) {
					<-ctx.Done()
					return "", nil, ctx.Err()
				}
			}
			s := NewService(d, dumps, fw, noGroups{}, dec, Config{}, discard(), nil)
			err := s.Decode(ctx, 6)
			if tc.kind == "" {
				if !errors.Is(err, ErrTransient) || len(dumps.recorded()) != 0 {
					t.Fatalf("transient decoder error: %v, recorded %+v", err, dumps.recorded())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r := onlyResult(t, dumps); r.res.Status != coredumps.StatusError || r.res.Kind != tc.kind {
				t.Fatalf("result %+v, want ERROR %s", r.res, tc.kind)
			}
		})
	}
}

// queued records the decode jobs the core-dump owner asks for.
type queued struct{ ids []int64 }

func (q *queued) EnqueueTx(_ context.Context, _ *sql.Tx, id int64) error {
	q.ids = append(q.ids, id)
	return nil
}

type noAudit struct{}

func (noAudit) RecordPendingTx(context.Context, *sql.Tx, int) error { return nil }

// TestDecodeWithRealOwners: the flow through the real core-dump and firmware owners on
// both configurations: a dump whose firmware is missing ends in no_firmware, the
// firmware's upload re-queues it, and the retry decodes it with the ELF its SHA-256
// prefix names; a dump whose object is gone ends in missing_object.
func TestDecodeWithRealOwners(t *testing.T) {
	c := loadCase(t, "esp32c3")
	want, _ := plain(t, c)
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		q := &queued{}
		dumps := coredumps.NewService(env.DB, env.Store, q, noAudit{}, fleet.Dumps{}, coredumps.Options{}, discard())
		devs := devices.NewService(env.DB, func(s string) string { return hexSHA([]byte(s)) }, firmware.ModelObjects{}, coredumps.DeviceObjects{}, notify.Nop{})
		fw := firmware.NewService(env.DB, env.Store, devs, dumps, notify.Nop{}, discard(), firmware.Config{
			MaxFirmwares: 5, MaxBundleBytes: 64 << 20, Limits: bundle.DefaultLimits(), TempDir: t.TempDir()})
		s := NewService(env.DB, dumps, fw, noGroups{}, nil, Config{}, discard(), nil)

		name := "Lamp"
		m, err := devs.CreateModel(ctx, devices.ModelInput{Code: "lamp", Name: &name})
		if err != nil {
			t.Fatal(err)
		}
		dev, _, err := devs.CreateDevice(ctx, m.ID, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		upload := func() int64 {
			t.Helper()
			cd, err := dumps.Upload(ctx, coredumps.UploadInput{DeviceID: dev.ID, DeviceKey: dev.Key, Chip: "esp32c3",
				FirmwareVersion: "0.9.0", Body: bytes.NewReader(c.dump), Size: int64(len(c.dump))})
			if err != nil {
				t.Fatal(err)
			}
			return cd.ID
		}
		get := func(id int64) *coredumps.Coredump {
			t.Helper()
			cd, err := dumps.Get(ctx, dev.ID, id)
			if err != nil {
				t.Fatal(err)
			}
			return cd
		}

		id := upload()
		if err := s.Decode(ctx, id); err != nil {
			t.Fatal(err)
		}
		if cd := get(id); cd.ParseStatus != coredumps.StatusError || cd.ParseError == nil || *cd.ParseError != KindNoFirmware || len(cd.Report) == 0 {
			t.Fatalf("without firmware: %s %v", cd.ParseStatus, cd.ParseError)
		}

		res, err := fw.Upload(ctx, firmware.ModelID(m.ID), func() (io.Reader, error) {
			return bytes.NewReader(bundletest.BuildCase(t, "lamp", "esp32c3", bundletest.Options{})), nil
		}, false, true)
		if err != nil {
			t.Fatal(err)
		}
		if cd := get(id); cd.ParseStatus != coredumps.StatusPending || len(q.ids) != 2 || q.ids[1] != id {
			t.Fatalf("after the firmware arrived: %s, decode jobs %v", cd.ParseStatus, q.ids)
		}
		if err := s.Decode(ctx, id); err != nil {
			t.Fatal(err)
		}
		note := "NOTE: The device reported firmware 0.9.0, which is not stored; decoded with firmware " + res.Version + ", whose ELF matches the dump.\n\n"
		if cd := get(id); cd.ParseStatus != coredumps.StatusParsed || cd.ParseError != nil || cd.ParsedOutput == nil || *cd.ParsedOutput != note+want {
			t.Fatalf("after the retry: %s %v", cd.ParseStatus, cd.ParseError)
		}

		gone := upload()
		if err := env.Store.Delete(ctx, coredumps.Key(dev.Key, gone)); err != nil {
			t.Fatal(err)
		}
		if err := s.Decode(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if cd := get(gone); cd.ParseStatus != coredumps.StatusError || cd.ParseError == nil || *cd.ParseError != KindMissingObject {
			t.Fatalf("object gone: %s %v", cd.ParseStatus, cd.ParseError)
		}
	})
}
