package deploy_test

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/config"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// image is what the test needs from the Dockerfile's final stage.
type image struct {
	from        string
	buildRun    string // the build stage's RUN that builds the binary
	env         [][2]string
	user        string
	volumes     []string
	expose      []string
	healthcheck []string
	entrypoint  []string
	cmd         []string
}

// parseDockerfile reads ../Dockerfile: continuation lines joined, the last FROM's
// instructions kept.
func parseDockerfile(t *testing.T) image {
	t.Helper()
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	jsonArgs := func(s string) []string {
		var a []string
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			t.Fatalf("Dockerfile: %q is not an exec-form JSON array: %v", s, err)
		}
		return a
	}
	var img image
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			// A new stage: keep only the build stage's RUN.
			img = image{from: rest, buildRun: img.buildRun}
		case "RUN":
			if strings.Contains(rest, "scripts/build.sh") {
				img.buildRun = rest
			}
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile: ENV %q is not KEY=value", kv)
				}
				img.env = append(img.env, [2]string{k, v})
			}
		case "USER":
			img.user = rest
		case "VOLUME":
			img.volumes = jsonArgs(rest)
		case "EXPOSE":
			img.expose = strings.Fields(rest)
		case "HEALTHCHECK":
			_, c, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("Dockerfile: HEALTHCHECK without CMD: %q", rest)
			}
			img.healthcheck = jsonArgs(strings.TrimSpace(c))
		case "ENTRYPOINT":
			img.entrypoint = jsonArgs(rest)
		case "CMD":
			img.cmd = jsonArgs(rest)
		}
	}
	return img
}

func TestDockerfile(t *testing.T) {
	img := parseDockerfile(t)
	if !regexp.MustCompile(`(^|\s)sh scripts/build\.sh\s`).MatchString(img.buildRun) {
		t.Fatalf("the build stage does not build with scripts/build.sh (the flags this test uses): %q", img.buildRun)
	}
	if !strings.Contains(img.from, "distroless/static") {
		t.Errorf("final stage FROM %q: want a static distroless base", img.from)
	}
	if uid, _, _ := strings.Cut(img.user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: want a non-root uid", img.user)
	}
	if len(img.volumes) != 1 || img.volumes[0] != "/data" || len(img.expose) != 1 || img.expose[0] != "3101" {
		t.Errorf("VOLUME %v EXPOSE %v", img.volumes, img.expose)
	}
	if len(img.healthcheck) != 2 || img.healthcheck[0] != img.entrypoint[0] || img.healthcheck[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK %v: want the binary's healthcheck subcommand", img.healthcheck)
	}
	known := map[string]bool{}
	for _, s := range config.Settings {
		known[s.Name] = true
	}
	env := map[string]string{}
	for _, kv := range img.env {
		if !known[kv[0]] {
			t.Errorf("ENV %s is not a setting of iotsupport", kv[0])
		}
		env[kv[0]] = kv[1]
	}
	if env["HOST"] != "0.0.0.0" || env["PORT"] != "3101" {
		t.Errorf("ENV HOST=%q PORT=%q", env["HOST"], env["PORT"])
	}
	// Every path the service writes to must be on the volume.
	for _, k := range []string{"STORAGE_DIR", "FIRMWARE_CACHE_DIR", "TEMP_DIR"} {
		if !strings.HasPrefix(env[k], "/data/") {
			t.Errorf("ENV %s=%q is not under /data", k, env[k])
		}
	}
	if !strings.HasPrefix(env["DATABASE_URL"], "sqlite:/data/") {
		t.Errorf("ENV DATABASE_URL=%q: the default database must be under /data", env["DATABASE_URL"])
	}
}

// buildAsImage builds the binary with scripts/build.sh, as the Dockerfile does.
func buildAsImage(t *testing.T, out string) {
	t.Helper()
	cmd := exec.Command("sh", "scripts/build.sh", out)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "VERSION=9.8.7-test", "COMMIT=0123456789abcdef", "DATE=2026-01-02T03:04:05Z")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build.sh: %v\n%s", err, b)
	}
}

// TestImageBinaryRunsOnReadOnlyRoot builds the binary exactly as the Dockerfile does
// and runs it like the container: the image's ENV (with /data replaced by a temporary
// directory), the image's USER (when the test runs as root, so the read-only directory
// is really read-only for it: root ignores permissions), the working directory a
// directory that user cannot write. It must start, migrate, answer readyz, pass the
// image's HEALTHCHECK command and spool an upload, on the image's default SQLite and
// on PostgreSQL + S3.
func TestImageBinaryRunsOnReadOnlyRoot(t *testing.T) {
	img := parseDockerfile(t)
	base, err := os.MkdirTemp("", "iotsupport-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Chmod(filepath.Join(base, "root"), 0o755)
		_ = os.RemoveAll(base)
	})
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "iotsupport")
	buildAsImage(t, bin)

	// Static: no interpreter, no shared libraries (it runs on distroless/static).
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary links %v", libs)
	}
	f.Close()
	if err := os.Chmod(root, 0o555); err != nil {
		t.Fatal(err)
	}

	var cred *syscall.Credential
	uid, gid := os.Geteuid(), os.Getegid()
	if os.Geteuid() == 0 {
		u, g, _ := strings.Cut(img.user, ":")
		uid, _ = strconv.Atoi(u)
		gid, _ = strconv.Atoi(g)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = root, env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	imageEnv := func(data string) []string {
		var env []string
		for _, kv := range img.env {
			env = append(env, kv[0]+"="+strings.ReplaceAll(kv[1], "/data", data))
		}
		return env
	}

	// Stamped like a release.
	out, err := run(nil, "version", "--json")
	if err != nil {
		t.Fatalf("version: %v %s", err, out)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil || v["version"] != "9.8.7-test" || v["commit"] != "0123456789abcdef" || v["date"] != "2026-01-02T03:04:05Z" {
		t.Fatalf("version --json: %q %v", out, err)
	}

	// The working directory really is read-only for the process: a relative database fails.
	if out, err := run([]string{"DATABASE_URL=sqlite:./probe.db"}, "migrate"); err == nil || !strings.Contains(out, "unable to open database file") {
		t.Fatalf("migrate could write into the read-only working directory: %v\n%s", err, out)
	}

	for _, name := range []string{"image defaults (sqlite + /data)", "postgres+s3"} {
		t.Run(name, func(t *testing.T) {
			data := filepath.Join(base, fmt.Sprintf("data-%d", len(name)))
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(data, uid, gid); err != nil {
				t.Fatal(err)
			}
			env := imageEnv(data)
			if name == "postgres+s3" {
				te := testenv.New(t, "postgres+s3")
				env = append(env, "DATABASE_URL="+te.DatabaseURL, "STORAGE_BACKEND=s3", "S3_ENDPOINT_URL="+te.S3.Endpoint,
					"S3_ACCESS_KEY_ID="+te.S3.AccessKeyID, "S3_SECRET_ACCESS_KEY="+te.S3.SecretAccessKey, "S3_BUCKET_NAME="+te.S3.Bucket)
			}
			port := freePort(t)
			env = append(env, "PORT="+port) // the image's 3101 may be taken on a shared machine

			srv := exec.Command(bin, append(img.entrypoint[1:], img.cmd...)...)
			srv.Dir, srv.Env = root, env
			srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
			var logs strings.Builder
			srv.Stdout, srv.Stderr = &logs, &logs
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			// done is closed (never read from) so the clean-up and the checks can both wait on it.
			done := make(chan struct{})
			var waitErr error
			go func() { waitErr = srv.Wait(); close(done) }()
			t.Cleanup(func() { _ = srv.Process.Kill(); <-done })

			// The image's HEALTHCHECK, as the container engine would run it.
			hc := img.healthcheck[1:]
			deadline := time.Now().Add(90 * time.Second)
			for {
				out, err := run(env, hc...)
				if err == nil {
					break
				}
				select {
				case <-done:
					t.Fatalf("server exited: %v\n%s", waitErr, logs.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("HEALTHCHECK never passed: %s\n%s", out, logs.String())
				}
				time.Sleep(200 * time.Millisecond)
			}
			url := "http://127.0.0.1:" + port
			resp, err := http.Get(url + "/health/readyz")
			if err != nil {
				t.Fatal(err)
			}
			var ready map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&ready)
			resp.Body.Close()
			if resp.StatusCode != 200 || ready["ready"] != true {
				t.Fatalf("readyz %d %v", resp.StatusCode, ready)
			}
			if out, err := run(env, "migrate", "--status"); err != nil || strings.Contains(out, "pending") || !strings.Contains(out, "applied") {
				t.Fatalf("migrations not applied: %v\n%s", err, out)
			}

			// An upload is spooled to TEMP_DIR on the volume: a broken bundle is refused
			// as invalid (400), not failed for want of a writable temp directory (500).
			tok, err := run(env, "token", "create", "--name", "probe", "--role", "admin")
			if err != nil {
				t.Fatalf("token create: %v %s", err, tok)
			}
			tok = regexp.MustCompile(`iots_\S+`).FindString(tok)
			do := func(method, path, ctype, body string) (int, string) {
				req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", ctype)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var b strings.Builder
				_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
				return resp.StatusCode, b.String()
			}
			code, body := do("POST", "/api/device-models", "application/json", `{"code":"probe","name":"Probe"}`)
			if code != 200 && code != 201 {
				t.Fatalf("create model: %d %s", code, body)
			}
			var m struct{ ID int }
			_ = json.Unmarshal([]byte(body), &m)
			if code, body := do("POST", fmt.Sprintf("/api/device-models/%d/firmware", m.ID), "application/zip", "not a zip"); code != 400 {
				t.Fatalf("broken bundle upload: %d %s\n%s", code, body, logs.String())
			}

			if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			<-done
			if waitErr != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", waitErr, logs.String())
			}
			if name != "postgres+s3" {
				if _, err := os.Stat(filepath.Join(data, "iotsupport.db")); err != nil {
					t.Errorf("database not on the volume: %v", err)
				}
			}
		})
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
