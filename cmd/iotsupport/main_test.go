package main_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestServeIsReadyAndStopsGracefully(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		p := proctest.Start(t, proctest.Env(env))
		resp, err := http.Get(p.URL + "/health/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 200 || body["ready"] != true {
			t.Fatalf("readyz %d %v", resp.StatusCode, body)
		}
		// The first start printed an admin token, and it works.
		tok := regexp.MustCompile(`iots_[A-Za-z0-9_-]{43}`).FindString(p.Output())
		if tok == "" {
			t.Fatalf("no initial admin token printed:\n%s", p.Output())
		}
		req, _ := http.NewRequest("GET", p.URL+"/api/tokens", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err = http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("initial token: %v %v", err, resp.StatusCode)
		}
		resp.Body.Close()
		if resp, _ := http.Get(p.URL + "/api/device-models"); resp.StatusCode != 401 {
			t.Fatalf("unauthenticated admin API: %d", resp.StatusCode)
		}
		if err := p.Stop(20 * time.Second); err != nil {
			t.Fatalf("SIGTERM exit: %v\n%s", err, p.Output())
		}
		if !strings.Contains(p.Output(), "shutting down") {
			t.Fatalf("no shutdown log:\n%s", p.Output())
		}
		// A second start prints no new token.
		p2 := proctest.Start(t, proctest.Env(env))
		if strings.Contains(p2.Output(), "iots_") {
			t.Fatalf("token printed again:\n%s", p2.Output())
		}
	})
}

func TestDefaultsRunFromAnEmptyDirectory(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	t.Cleanup(func() { _ = os.Chdir(wd) })
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	p := proctest.Start(t, env)
	resp, err := http.Get(p.URL + "/health/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", err, resp)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := os.Stat(filepath.Join(dir, "data", "iotsupport.db")); err != nil {
		t.Fatalf("default database not created: %v (%s)", err, b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "data", "blobs")); err != nil || !fi.IsDir() {
		t.Fatalf("default blob dir not created: %v", err)
	}
}

func TestMigrateAndNoMigrate(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=sqlite:" + filepath.Join(t.TempDir(), "x.db"),
		"STORAGE_DIR=" + t.TempDir()}
	out, _, code := proctest.Run(t, env, "migrate", "--status")
	if code != 0 || !strings.Contains(out, "pending") || strings.Contains(out, "applied") {
		t.Fatalf("status on empty db (%d): %s", code, out)
	}
	_, errOut, code := proctest.Run(t, env, "serve", "--no-migrate")
	if code == 0 || !strings.Contains(errOut, "schema is behind") {
		t.Fatalf("--no-migrate on a behind schema: %d %s", code, errOut)
	}
	if out, errOut, code := proctest.Run(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %s %s", out, errOut)
	}
	out, _, _ = proctest.Run(t, env, "migrate", "--status")
	if strings.Contains(out, "pending") || !strings.Contains(out, "applied") {
		t.Fatalf("status after migrate: %s", out)
	}
}

func TestInvalidSettingStopsStartupWithOneLine(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "MAX_FIRMWARES=0", "DATABASE_URL=sqlite:" + filepath.Join(t.TempDir(), "x.db")}
	_, errOut, code := proctest.Run(t, env, "serve")
	if code == 0 || !strings.Contains(errOut, "invalid MAX_FIRMWARES=\"0\"") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	env = []string{"PATH=" + os.Getenv("PATH"), "AUTH_MODE=insecure-dev", "HOST=0.0.0.0"}
	_, errOut, code = proctest.Run(t, env, "serve")
	if code == 0 || !strings.Contains(errOut, "HOST must be a loopback address") {
		t.Fatalf("insecure-dev on 0.0.0.0: exit %d: %s", code, errOut)
	}
}

func TestTokenCommands(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=sqlite:" + filepath.Join(t.TempDir(), "x.db")}
	if out, errOut, code := proctest.Run(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %s%s", out, errOut)
	}
	out, _, code := proctest.Run(t, env, "token", "create", "--name", "ci", "--role", "pipeline")
	if code != 0 || !regexp.MustCompile(`^iots_[A-Za-z0-9_-]{43}\n$`).MatchString(out) {
		t.Fatalf("create: %d %q", code, out)
	}
	if _, _, code := proctest.Run(t, env, "token", "create", "--name", "bad", "--role", "superuser"); code == 0 {
		t.Fatal("invalid role accepted")
	}
	out, _, _ = proctest.Run(t, env, "token", "list")
	if !strings.Contains(out, "ci") || !strings.Contains(out, "pipeline") || strings.Contains(out, "iots_") {
		t.Fatalf("list: %s", out)
	}
	if _, _, code := proctest.Run(t, env, "token", "revoke", "ci"); code != 0 {
		t.Fatal("revoke failed")
	}
	out, _, _ = proctest.Run(t, env, "token", "list")
	if !strings.Contains(out, "revoked") {
		t.Fatalf("list after revoke: %s", out)
	}
	if _, _, code := proctest.Run(t, env, "token", "revoke", "ci"); code == 0 {
		t.Fatal("second revoke succeeded")
	}
	// Ids and names never stand for each other: token 2 is "x"; the token named "2" is id 3.
	for _, name := range []string{"x", "2"} {
		if _, _, code := proctest.Run(t, env, "token", "create", "--name", name, "--role", "viewer"); code != 0 {
			t.Fatalf("create %s failed", name)
		}
	}
	state := func() map[string]string {
		out, _, _ := proctest.Run(t, env, "token", "list")
		m := map[string]string{}
		for _, l := range strings.Split(out, "\n")[1:] {
			if f := strings.Fields(l); len(f) >= 6 {
				m[f[0]+" "+f[1]] = f[5]
			}
		}
		return m
	}
	if out, errOut, code := proctest.Run(t, env, "token", "revoke", "--id", "2"); code != 0 {
		t.Fatalf("revoke --id 2: %d %s %s", code, out, errOut)
	}
	if st := state(); st["2 x"] != "revoked" || st["3 2"] != "active" {
		t.Fatalf("revoke --id 2 touched the token named 2: %v", st)
	}
	if _, _, code := proctest.Run(t, env, "token", "revoke", "2"); code != 0 {
		t.Fatal("revoke by name 2 failed")
	}
	if st := state(); st["3 2"] != "revoked" {
		t.Fatalf("revoke 2 (by name): %v", st)
	}
}

// Only serve and migrate create a database: every other command run outside the
// service's directory or with a mistyped DATABASE_URL refuses it, naming it, instead of
// writing into a new empty database the server never sees.
func TestCommandsRefuseAMissingDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "elsewhere")
	path := filepath.Join(dir, "iotsupport.db")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=sqlite:" + path, "STORAGE_DIR=" + t.TempDir()}
	for _, args := range [][]string{
		{"token", "create", "--name", "ci", "--role", "pipeline"},
		{"token", "list"},
		{"fsck"},
		{"coredump", "reparse"},
		{"worker"},
	} {
		out, errOut, code := proctest.Run(t, env, args...)
		if code == 0 || strings.Contains(out, "iots_") || !strings.Contains(errOut, path+" does not exist") ||
			!strings.Contains(errOut, "database: sqlite:"+path+"\n") || !strings.Contains(errOut, "iotsupport migrate") {
			t.Fatalf("%v on a missing database: exit %d\n%s%s", args, code, out, errOut)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%v created %s: %v", args, dir, err)
		}
	}
	// Once the service made it, the same command works and says which database it used.
	if out, errOut, code := proctest.Run(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %s%s", out, errOut)
	}
	out, errOut, code := proctest.Run(t, env, "token", "create", "--name", "ci", "--role", "pipeline")
	if code != 0 || !strings.HasPrefix(out, "iots_") || !strings.Contains(errOut, "database: sqlite:"+path+"\n") {
		t.Fatalf("token create after migrate: exit %d\n%s%s", code, out, errOut)
	}
}

// On PostgreSQL a database without our schema (a mistyped database name that happens to
// exist) is refused and left empty; the password never reaches the output.
func TestCommandsRefuseAPostgresDatabaseWithoutSchema(t *testing.T) {
	dsn := testenv.PostgresURL(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "hunter2") // trust auth ignores it
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=" + u.String()}
	out, errOut, code := proctest.Run(t, env, "token", "create", "--name", "ci", "--role", "admin")
	if code == 0 || strings.Contains(out, "iots_") || !strings.Contains(errOut, "holds no IoT Support schema") ||
		strings.Contains(errOut, "hunter2") || !strings.Contains(errOut, "database: postgres://") || !strings.Contains(errOut, ":****@") {
		t.Fatalf("token create on an empty database: exit %d\n%s%s", code, out, errOut)
	}
	d, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var n int
	if err := d.QueryRowContext(context.Background(), `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused database got %d table(s) (%v)", n, err)
	}
}

// serve checks storage before it changes anything: each problem is one line and the
// database is not even created, let alone migrated.
func TestServeChecksStorageBeforeMigrating(t *testing.T) {
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"storage dir under a file", []string{"STORAGE_DIR=" + filepath.Join(file, "blobs")}, "STORAGE_DIR=" + filepath.Join(file, "blobs") + ": " + file + " is not a directory"},
		{"storage dir unwritable", []string{"STORAGE_DIR=/proc/iotsupport-blobs"}, "STORAGE_DIR=/proc/iotsupport-blobs: /proc is not writable"},
		{"temp dir a file", []string{"STORAGE_DIR=" + t.TempDir(), "TEMP_DIR=" + file}, "TEMP_DIR=" + file + ": " + file + " is not a directory"},
		{"S3 unreachable", []string{"STORAGE_BACKEND=s3", "S3_ENDPOINT_URL=http://" + closed, "S3_ACCESS_KEY_ID=k", "S3_SECRET_ACCESS_KEY=s"},
			"object storage: S3 endpoint http://" + closed + " is unreachable: connection refused"},
		{"S3 without endpoint", []string{"STORAGE_BACKEND=s3"}, "S3_ENDPOINT_URL is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=sqlite:" + path}, tc.env...)
			// Bounded: a serve that passes its checks would run forever.
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, proctest.Binary(t), "serve")
			cmd.Env = append(env, "FIRMWARE_CACHE_DIR="+t.TempDir())
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code, errOut := cmd.ProcessState.ExitCode(), stderr.String()
			if err == nil || ctx.Err() != nil || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want one line with %q:\n%s", code, tc.want, errOut)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("the database was created before the check failed: %v", err)
			}
		})
	}
}

// `iotsupport config` marks settings left at their default and ends saying whether the
// settings are valid (exit 1 when not).
func TestConfigCommandSaysValidityAndMarksDefaults(t *testing.T) {
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	out, errOut, code := proctest.Run(t, append(base, "MAX_FIRMWARES=7", "PORT=3101"), "config")
	if code != 0 || !strings.HasSuffix(out, "\nsettings are valid\n") || !strings.Contains(out, "\nMAX_FIRMWARES=7\n") ||
		!strings.Contains(out, "\nPORT=3101  # default\n") || !strings.Contains(out, "\nMAX_COREDUMPS=20  # default\n") {
		t.Fatalf("valid settings: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = proctest.Run(t, append(base, "MAX_FIRMWARES=0"), "config")
	if code != 1 || !strings.HasSuffix(out, "\nsettings are NOT valid: invalid MAX_FIRMWARES=\"0\": must be between 1 and 10000\n") || strings.Contains(out, "settings are valid") {
		t.Fatalf("invalid settings: exit %d\n%s%s", code, out, errOut)
	}
}
