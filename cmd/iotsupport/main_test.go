package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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
