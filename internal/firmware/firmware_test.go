package firmware_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle"
	"github.com/iotsupport/iotsupport/internal/firmware"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func isKind(err error, k apperr.Kind) bool {
	var ae *apperr.Error
	return errors.As(err, &ae) && ae.Kind == k
}

func readAll(t *testing.T, s *firmware.Service, ref firmware.ModelRef, version, name string) []byte {
	t.Helper()
	ctx := context.Background()
	a, err := s.Artifact(ctx, ref, version, name)
	if err != nil {
		t.Fatalf("artifact %s %s: %v", version, name, err)
	}
	rc, err := s.Open(ctx, a, nil)
	if err != nil {
		t.Fatalf("open %s %s: %v", version, name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hexSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestUploadStoresVersionThenTellsDumps: an upload stores the five artifacts under
// firmware/{code}/{version}/, makes the version current, and only after it committed
// tells the core-dump owner (FirmwareArrived with the version's ELF SHA-256) and the
// model's devices. Refused uploads tell nobody and store nothing.
func TestUploadStoresVersionThenTellsDumps(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 5)
		m := f.model(t, "lamp")
		var clients []string
		for range 2 {
			d, _, err := f.devices.CreateDevice(ctx, m.ID, `{}`)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, d.ClientID())
		}
		slices.Sort(clients)

		other, _ := build(t, "other", "1.0.0")
		if _, err := f.s.Upload(ctx, firmware.ModelCode("lamp"), body(other), false, true); !isKind(err, apperr.Validation) {
			t.Fatalf("bundle of another model: %v, want a validation error", err)
		}
		if vs := f.versions(t, "lamp"); len(vs) != 0 || len(f.dumps.arrivals()) != 0 || len(f.notes.all()) != 0 {
			t.Fatalf("refused upload left versions %v, arrivals %v, notes %v", vs, f.dumps.arrivals(), f.notes.all())
		}
		if objs, _, err := env.Store.List(ctx, firmware.ModelPrefix("lamp"), "", 10); err != nil || len(objs) != 0 {
			t.Fatalf("refused upload left objects %v %v", objs, err)
		}

		z, sha := build(t, "lamp", "1.0.0")
		res, err := f.s.Upload(ctx, firmware.ModelID(m.ID), body(z), false, true)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Created || res.ModelID != m.ID || res.Code != "lamp" || res.Version != "1.0.0" {
			t.Fatalf("result %+v", res)
		}
		arr := f.dumps.arrivals()
		if len(arr) != 1 || arr[0] != (arrival{modelID: m.ID, version: "1.0.0", sha: sha, committedSHA: sha, committedAndCurrent: true}) {
			t.Fatalf("FirmwareArrived calls %+v, want one for 1.0.0 with ELF %s after commit", arr, sha)
		}
		if got := f.notes.all(); len(got) != 1 || got[0].version != "1.0.0" || !slices.Equal(got[0].clients, clients) {
			t.Fatalf("notifications %+v, want 1.0.0 to %v", got, clients)
		}
		for _, a := range firmware.Artifacts {
			if _, err := env.Store.Stat(ctx, firmware.Key("lamp", "1.0.0", a)); err != nil {
				t.Errorf("artifact %s not stored under its key: %v", a, err)
			}
		}
		if got := hexSHA(readAll(t, f.s, firmware.ModelCode("lamp"), "1.0.0", "firmware.elf")); got != sha {
			t.Fatalf("stored ELF has SHA-256 %s, want %s", got, sha)
		}
		v, err := f.s.GetVersion(ctx, firmware.ModelCode("lamp"), "1.0.0")
		if err != nil || !v.Current || v.ELFSHA256 != sha || v.Chip != "esp32c3" || v.Artifacts["firmware.elf"].SHA256 != sha {
			t.Fatalf("version %+v %v", v, err)
		}

		// The same bundle again changes nothing; different content needs replace.
		if res, err := f.s.Upload(ctx, firmware.ModelCode("lamp"), body(z), false, true); err != nil || res.Created {
			t.Fatalf("identical re-upload: %+v %v", res, err)
		}
		z2, sha2 := build(t, "lamp", "1.0.0", "rebuilt")
		if _, err := f.s.Upload(ctx, firmware.ModelCode("lamp"), body(z2), false, true); !isKind(err, apperr.Exists) {
			t.Fatalf("different content without replace: %v, want RECORD_EXISTS", err)
		}
		if got := hexSHA(readAll(t, f.s, firmware.ModelCode("lamp"), "1.0.0", "firmware.elf")); got != sha {
			t.Fatal("a refused re-upload changed the stored ELF")
		}
		if _, err := f.s.Upload(ctx, firmware.ModelCode("lamp"), body(z2), true, true); err != nil {
			t.Fatal(err)
		}
		if got := hexSHA(readAll(t, f.s, firmware.ModelCode("lamp"), "1.0.0", "firmware.elf")); got != sha2 {
			t.Fatal("replace did not store the new ELF")
		}
		arr = f.dumps.arrivals()
		if last := arr[len(arr)-1]; last.sha != sha2 || last.committedSHA != sha2 {
			t.Fatalf("after replace FirmwareArrived got %+v, want the new ELF %s", last, sha2)
		}
	})
}

// TestModelRef: every operation finds its model by id or by code, and an unknown model
// is refused before the upload body is read.
func TestModelRef(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 5)
		a, b := f.model(t, "a"), f.model(t, "b")
		read := false
		unread := func() (io.Reader, error) { read = true; return strings.NewReader("x"), nil }
		for _, ref := range []firmware.ModelRef{firmware.ModelCode("nope"), firmware.ModelID(9999)} {
			if _, err := f.s.Upload(ctx, ref, unread, false, true); !isKind(err, apperr.NotFound) || read {
				t.Fatalf("upload to %+v: %v (body read: %v)", ref, err, read)
			}
		}
		f.upload(t, "b", "2.0.0")
		for _, ref := range []firmware.ModelRef{firmware.ModelCode("b"), firmware.ModelID(b.ID)} {
			m, vs, err := f.s.ListVersions(ctx, ref)
			if err != nil || m.ID != b.ID || len(vs) != 1 || vs[0].Version != "2.0.0" {
				t.Fatalf("list %+v: %+v %v %v", ref, m, vs, err)
			}
			cur, err := f.s.Current(ctx, ref)
			if err != nil || cur.Code != "b" || cur.Version != "2.0.0" || cur.Name != "firmware.bin" || cur.Size <= 0 {
				t.Fatalf("current of %+v: %+v %v", ref, cur, err)
			}
		}
		if _, err := f.s.GetVersion(ctx, firmware.ModelID(a.ID), "2.0.0"); !isKind(err, apperr.NotFound) {
			t.Fatalf("b's version found under a: %v", err)
		}
		if _, err := f.s.Current(ctx, firmware.ModelCode("a")); !isKind(err, apperr.NotFound) {
			t.Fatalf("current of a model without firmware: %v", err)
		}
		if _, err := f.s.Artifact(ctx, firmware.ModelCode("b"), "2.0.0", "../secrets"); !isKind(err, apperr.NotFound) {
			t.Fatalf("unknown artifact name: %v", err)
		}
	})
}

// TestRetention: after each stored version the model keeps its MaxFirmwares newest
// versions, its current one, and every version undecoded dumps need (FirmwareNeeds, by
// version or ELF SHA-256 prefix, asked inside the transaction); pruned versions' rows go
// and their folders are queued for deletion.
func TestRetention(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 2)
		m := f.model(t, "lamp")
		for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
			f.upload(t, "lamp", v)
		}
		if got := f.versions(t, "lamp"); !slices.Equal(got, []string{"1.0.2", "1.0.1"}) {
			t.Fatalf("versions %v, want the 2 newest", got)
		}
		if got := queued(t, env.DB); !slices.Equal(got, []string{firmware.Prefix("lamp", "1.0.0")}) {
			t.Fatalf("queued deletions %v", got)
		}

		// 1.0.1 is needed by version, 1.0.2 by its ELF (an upper-case prefix matches too).
		_, sha2, err := f.elf(ctx, m.ID, "1.0.2")
		if err != nil {
			t.Fatal(err)
		}
		f.dumps.need([]string{"1.0.1", "9.9.9"}, []string{strings.ToUpper(sha2[:16]), "ffff"})
		f.upload(t, "lamp", "1.0.3")
		f.upload(t, "lamp", "1.0.4")
		if got := f.versions(t, "lamp"); !slices.Equal(got, []string{"1.0.4", "1.0.3", "1.0.2", "1.0.1"}) {
			t.Fatalf("versions %v, want the needed 1.0.2 and 1.0.1 kept", got)
		}

		// The current version stays even when old and not needed: pin 1.0.1, then store
		// newer versions without making them current.
		if _, err := f.s.SetCurrent(ctx, firmware.ModelCode("lamp"), "1.0.1"); err != nil {
			t.Fatal(err)
		}
		f.importVersion(t, "lamp", "1.0.5")
		if got := f.versions(t, "lamp"); !slices.Equal(got, []string{"1.0.5", "1.0.4", "1.0.2", "1.0.1"}) {
			t.Fatalf("versions %v, want 1.0.3 pruned", got)
		}
		f.dumps.need(nil, nil)
		f.importVersion(t, "lamp", "1.0.6")
		if got := f.versions(t, "lamp"); !slices.Equal(got, []string{"1.0.6", "1.0.5", "1.0.1"}) {
			t.Fatalf("versions %v, want the 2 newest and the current 1.0.1", got)
		}
		cur, err := f.devices.GetModel(ctx, m.ID)
		if err != nil || cur.FirmwareVersion == nil || *cur.FirmwareVersion != "1.0.1" {
			t.Fatalf("current version %v %v", cur.FirmwareVersion, err)
		}
		want := []string{firmware.Prefix("lamp", "1.0.0"), firmware.Prefix("lamp", "1.0.2"), firmware.Prefix("lamp", "1.0.3"), firmware.Prefix("lamp", "1.0.4")}
		if got := queued(t, env.DB); !slices.Equal(got, want) {
			t.Fatalf("queued deletions %v, want %v", got, want)
		}
		f.dumps.mu.Lock()
		defer f.dumps.mu.Unlock()
		if f.dumps.needsNoTx != 0 || len(f.dumps.needs) == 0 || f.dumps.needs[0] != m.ID {
			t.Fatalf("FirmwareNeeds calls %v (%d without a transaction)", f.dumps.needs, f.dumps.needsNoTx)
		}
	})
}

// elf is the stored ELF of a version as decoding looks it up.
func (f *fixture) elf(ctx context.Context, modelID int64, version string) (bool, string, error) {
	r, ok, err := f.s.VersionELF(ctx, f.env.DB, modelID, version)
	return ok, r.SHA256, err
}

// importVersion stores a version without making it current (as adoption does).
func (f *fixture) importVersion(t *testing.T, code, version string) {
	t.Helper()
	ctx := context.Background()
	z, _ := build(t, code, version)
	b, err := bundle.Validate(bytes.NewReader(z), int64(len(z)), code, bundle.DefaultLimits(), bundle.Strict)
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.devices.GetModelByCode(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Import(ctx, m, b, time.Now(), false); err != nil {
		t.Fatalf("import %s: %v", version, err)
	}
}

// TestDeleteVersionRefusesCurrentAndNeeded: the current version and versions undecoded
// dumps need (by version or ELF prefix) are refused; others go with their folder queued.
func TestDeleteVersionRefusesCurrentAndNeeded(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 10)
		m := f.model(t, "lamp")
		f.upload(t, "lamp", "1.0.0")
		sha1 := f.upload(t, "lamp", "1.0.1")
		f.upload(t, "lamp", "1.0.2")
		ref := firmware.ModelCode("lamp")
		if err := f.s.DeleteVersion(ctx, ref, "1.0.2"); !isKind(err, apperr.InvalidOperation) {
			t.Fatalf("delete the current version: %v, want INVALID_OPERATION", err)
		}
		f.dumps.need([]string{"1.0.0"}, []string{sha1[:8]})
		for _, v := range []string{"1.0.0", "1.0.1"} {
			if err := f.s.DeleteVersion(ctx, firmware.ModelID(m.ID), v); !isKind(err, apperr.InvalidOperation) {
				t.Fatalf("delete needed %s: %v, want INVALID_OPERATION", v, err)
			}
		}
		if got := f.versions(t, "lamp"); len(got) != 3 || len(queued(t, env.DB)) != 0 {
			t.Fatalf("refused deletions changed versions %v or queued %v", got, queued(t, env.DB))
		}
		f.dumps.need(nil, []string{"abcdef"})
		if err := f.s.DeleteVersion(ctx, ref, "1.0.1"); err != nil {
			t.Fatal(err)
		}
		if got := f.versions(t, "lamp"); !slices.Equal(got, []string{"1.0.2", "1.0.0"}) {
			t.Fatalf("versions after delete %v", got)
		}
		if got := queued(t, env.DB); !slices.Equal(got, []string{firmware.Prefix("lamp", "1.0.1")}) {
			t.Fatalf("queued %v", got)
		}
		if err := f.s.DeleteVersion(ctx, ref, "1.0.1"); !isKind(err, apperr.NotFound) {
			t.Fatalf("delete a missing version: %v", err)
		}
	})
}

// TestCurrentCacheAndDelayedNotification: with CurrentOfDevice cached, a change through the
// Service is answered at once, while devices are told only after the cache's TTL (or at
// FlushNotifications), so no replica still serves the old version to a notified device.
func TestCurrentCacheAndDelayedNotification(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 5)
		f.s.CacheCurrent(time.Hour)
		m := f.model(t, "lamp")
		dev, _, err := f.devices.CreateDevice(ctx, m.ID, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.s.CurrentOfDevice(ctx, dev.ID); !isKind(err, apperr.NotFound) {
			t.Fatalf("no firmware yet: %v", err)
		}
		f.upload(t, "lamp", "1.0.0")
		f.upload(t, "lamp", "1.0.1")
		_, a, err := f.s.CurrentOfDevice(ctx, dev.ID)
		if err != nil || a.Version != "1.0.1" {
			t.Fatalf("current after upload: %+v %v", a, err)
		}
		if _, err := f.s.SetCurrent(ctx, firmware.ModelID(m.ID), "1.0.0"); err != nil {
			t.Fatal(err)
		}
		if _, a, err = f.s.CurrentOfDevice(ctx, dev.ID); err != nil || a.Version != "1.0.0" {
			t.Fatalf("current after pin: %+v %v", a, err)
		}
		if got := f.notes.all(); len(got) != 0 {
			t.Fatalf("notified before the cache TTL: %+v", got)
		}
		f.s.FlushNotifications()
		got := f.notes.all()
		if len(got) != 3 || got[0].version != "1.0.0" || got[1].version != "1.0.1" || got[2].version != "1.0.0" ||
			!slices.Equal(got[2].clients, []string{dev.ClientID()}) {
			t.Fatalf("notifications %+v, want 1.0.0, 1.0.1, 1.0.0 in order", got)
		}
		if _, err := f.s.SetCurrent(ctx, firmware.ModelID(m.ID), "9.9.9"); !isKind(err, apperr.NotFound) {
			t.Fatalf("pin a missing version: %v", err)
		}
	})
}

// TestModelObjectsRemovesFirmwareWithModel: deleting a model through devices with
// firmware.ModelObjects removes its versions and queues its whole folder, in one step.
func TestModelObjectsRemovesFirmwareWithModel(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 5)
		m := f.model(t, "lamp")
		keep := f.model(t, "keep")
		f.upload(t, "lamp", "1.0.0")
		f.upload(t, "keep", "1.0.0")
		if err := f.devices.DeleteModel(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		if n := testenv.Count(t, env.DB, "firmware_versions"); n != 1 {
			t.Fatalf("%d versions left, want keep's only", n)
		}
		if got := queued(t, env.DB); !slices.Equal(got, []string{firmware.ModelPrefix("lamp")}) {
			t.Fatalf("queued %v", got)
		}
		if ok, sha, err := f.elf(ctx, keep.ID, "1.0.0"); !ok || sha == "" || err != nil {
			t.Fatalf("keep's ELF: %v %q %v", ok, sha, err)
		}
		if _, err := env.Store.Stat(ctx, firmware.Key("keep", "1.0.0", "firmware.bin")); errors.Is(err, blob.ErrNotFound) {
			t.Fatal("another model's objects were touched")
		}
	})
}

// TestELFLookups: decoding finds a version's ELF by version and by SHA-256 prefix, within
// the model, and nothing for unknown ones.
func TestELFLookups(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		f := newFixture(t, env, 5)
		m := f.model(t, "lamp")
		sha0 := f.upload(t, "lamp", "1.0.0")
		sha1 := f.upload(t, "lamp", "1.0.1")
		if ok, sha, err := f.elf(ctx, m.ID, "1.0.0"); !ok || sha != sha0 || err != nil {
			t.Fatalf("by version: %v %q %v", ok, sha, err)
		}
		if ok, _, err := f.elf(ctx, m.ID, "2.0.0"); ok || err != nil {
			t.Fatalf("unknown version: %v %v", ok, err)
		}
		r, ok, err := f.s.ELFByPrefix(ctx, env.DB, m.ID, sha1[:16])
		if !ok || err != nil || r.Version != "1.0.1" || r.SHA256 != sha1 {
			t.Fatalf("by prefix: %+v %v %v", r, ok, err)
		}
		if _, ok, _ := f.s.ELFByPrefix(ctx, env.DB, m.ID+1, sha1[:16]); ok {
			t.Fatal("prefix found under another model")
		}
		elf, err := f.s.ReadELF(ctx, "lamp", "1.0.0")
		if err != nil || hexSHA(elf) != sha0 {
			t.Fatalf("read ELF: %v", err)
		}
		if _, err := f.s.ReadELF(ctx, "lamp", "2.0.0"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("missing ELF: %v, want blob.ErrNotFound", err)
		}
	})
}
