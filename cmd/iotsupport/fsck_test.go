package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// The command's exit status and output: clean (0), an orphan past --grace 0s (1), repaired (0).
func TestFsckCommand(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		environ := proctest.Env(env)
		out, errOut, code := proctest.Run(t, environ, "fsck")
		if code != 0 || !strings.Contains(out, "clean") {
			t.Fatalf("empty install: exit %d\n%s%s", code, out, errOut)
		}
		b := []byte("left behind by a crash")
		if err := env.Store.Put(context.Background(), "coredumps/abcd1234/7.dmp", bytes.NewReader(b), int64(len(b)), ""); err != nil {
			t.Fatal(err)
		}
		if out, _, code = proctest.Run(t, environ, "fsck"); code != 0 {
			t.Fatalf("orphan within the default grace: exit %d\n%s", code, out)
		}
		out, _, code = proctest.Run(t, environ, "fsck", "--grace", "0s", "--json")
		var rep struct {
			Counts    map[string]int `json:"counts"`
			Remaining int            `json:"remaining"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Counts["orphan"] != 1 || rep.Remaining != 1 {
			t.Fatalf("orphan: exit %d %v\n%s", code, err, out)
		}
		if out, errOut, code = proctest.Run(t, environ, "fsck", "--grace", "0s", "--repair"); code != 0 || !strings.Contains(out, "[repaired]") {
			t.Fatalf("repair: exit %d\n%s%s", code, out, errOut)
		}
		if out, _, code = proctest.Run(t, environ, "fsck", "--grace", "0s"); code != 0 {
			t.Fatalf("after repair: exit %d\n%s", code, out)
		}
	})
}

// serve runs fsck periodically in report-only mode and publishes the findings as metrics.
func TestPeriodicFsckMetrics(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	b := []byte("orphan")
	if err := env.Store.Put(context.Background(), "firmware/nomodel/1.0/firmware.bin", bytes.NewReader(b), int64(len(b)), ""); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, proctest.Env(env, "FSCK_INTERVAL=500ms", "FSCK_GRACE=1s"))
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, p.URL, `iotsupport_fsck_findings{kind="orphan"}`) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("orphan not reported by the periodic fsck")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if metric(t, p.URL, "iotsupport_fsck_last_run_timestamp_seconds") == 0 {
		t.Error("no last-run timestamp")
	}
	// Report-only: the orphan is still there.
	if _, err := env.Store.Stat(context.Background(), "firmware/nomodel/1.0/firmware.bin"); err != nil {
		t.Errorf("periodic fsck changed the store: %v", err)
	}
}

// Spool files of uploads a crash cut off are removed when serve starts and counted by
// fsck; younger spool files (another replica's uploads in flight) and other programs'
// files in TEMP_DIR are left alone.
func TestStaleSpoolFilesCleanedAtStartAndCountedByFsck(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		tmp := t.TempDir()
		old := time.Now().Add(-2 * time.Hour)
		write := func(name string, mtime time.Time) string {
			p := filepath.Join(tmp, name)
			if err := os.WriteFile(p, []byte("PK partial upload"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			return p
		}
		crashed := write("iotsupport-bundle-1111.zip", old)
		inFlight := write("iotsupport-bundle-2222.zip", time.Now())
		foreign := write("someone-else.zip", old)
		environ := proctest.Env(env, "TEMP_DIR="+tmp)
		stale := func() int {
			t.Helper()
			out, errOut, code := proctest.Run(t, environ, "fsck", "--json")
			var rep struct {
				Stale int `json:"stale_spool_files"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
				t.Fatalf("fsck: exit %d %v\n%s%s", code, err, out, errOut)
			}
			return rep.Stale
		}
		if n := stale(); n != 1 {
			t.Fatalf("fsck counted %d stale spool files, want 1", n)
		}
		p := proctest.Start(t, environ)
		if err := p.Stop(20 * time.Second); err != nil {
			t.Fatalf("serve: %v\n%s", err, p.Output())
		}
		if _, err := os.Stat(crashed); !os.IsNotExist(err) {
			t.Fatalf("crashed upload's spool file still there: %v", err)
		}
		for _, keep := range []string{inFlight, foreign} {
			if _, err := os.Stat(keep); err != nil {
				t.Fatalf("%s was removed: %v", keep, err)
			}
		}
		if n := stale(); n != 0 {
			t.Fatalf("fsck after start counted %d", n)
		}
		crashed = write("iotsupport-bundle-3333.zip", old)
		if out, errOut, code := proctest.Run(t, environ, "fsck", "--repair"); code != 0 || !strings.Contains(out, "stale upload spool files (older than SPOOL_MAX_AGE 1h0m0s): 1, removed 1") {
			t.Fatalf("fsck --repair: exit %d\n%s%s", code, out, errOut)
		}
		if _, err := os.Stat(crashed); !os.IsNotExist(err) {
			t.Fatalf("fsck --repair left %s: %v", crashed, err)
		}
	})
}
