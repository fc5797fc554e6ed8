package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// getScript fetches a CI script with the given Host header and extra headers.
func getScript(t *testing.T, s *apitest.Server, name, host string, hdr ...string) *apitest.Response {
	t.Helper()
	req, err := http.NewRequest("GET", s.URL+"/api/pipeline/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): %v", name, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &apitest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if r.Status >= 400 {
		apitest.CheckEnvelope(t, r)
	}
	return r
}

// scriptLine is the script's line that starts with prefix.
func scriptLine(t *testing.T, script, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(script, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, script)
	return ""
}

// shellBaseURL runs upload.sh's assignment in bash and returns the value bash sees.
func shellBaseURL(t *testing.T, script string) string {
	t.Helper()
	line := scriptLine(t, script, "BACKEND_URL=")
	out, err := exec.Command("bash", "-c", `eval "$1"; printf %s "$BACKEND_URL"`, "_", line).Output()
	if err != nil {
		t.Fatalf("bash %q: %v", line, err)
	}
	return string(out)
}

// powerShellBaseURL decodes upload.ps1's assignment, which must be one single-quoted
// (verbatim) string: PowerShell substitutes nothing in it, and ends it at any of the
// single quotes unless doubled.
func powerShellBaseURL(t *testing.T, script string) string {
	t.Helper()
	line := scriptLine(t, script, "$BackendUrl = ")
	lit := []rune(strings.TrimPrefix(line, "$BackendUrl = "))
	isQuote := func(r rune) bool { return strings.ContainsRune("'\u2018\u2019\u201a\u201b", r) }
	if len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
		t.Fatalf("not a single-quoted PowerShell string: %s", line)
	}
	var b strings.Builder
	inner := lit[1 : len(lit)-1]
	for i := 0; i < len(inner); i++ {
		if isQuote(inner[i]) {
			if i+1 >= len(inner) || !isQuote(inner[i+1]) {
				t.Fatalf("quote not doubled in PowerShell string: %s", line)
			}
			i++
		}
		b.WriteRune(inner[i])
	}
	return b.String()
}

func TestUploadScriptsCarryOnlyATrustedBaseURL(t *testing.T) {
	env := testenv.New(t, "sqlite+local")
	plain := apitest.Start(t, env)
	trusting := apitest.Start(t, env, "TRUST_PROXY_HEADERS", "true")
	const configured = "https://ci.example.com:8443/$HOME/iot"
	fixed := apitest.Start(t, env, "PUBLIC_BASE_URL", configured)
	forged := []string{"X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "https"}
	cases := []struct {
		name string
		s    *apitest.Server
		host string
		hdr  []string
		want string // "" means refused with 400
	}{
		{"request host", plain, "", nil, plain.URL},
		{"command substitution in Host", plain, "$(id)", nil, ""},
		{"quote in Host", plain, "a'b", nil, ""},
		{"forwarded headers ignored unless trusted", plain, "", forged, plain.URL},
		{"forwarded headers from a trusted proxy", trusting, "", []string{"X-Forwarded-Host", "first.example, iot.example:8443", "X-Forwarded-Proto", "https"}, "https://iot.example:8443"},
		{"trusted forwarded host is validated too", trusting, "", []string{"X-Forwarded-Host", "$(id)"}, ""},
		{"bracketed IPv6 host", plain, "[::1]:3101", nil, "http://[::1]:3101"},
		{"configured URL wins over any header", fixed, "$(id)", forged, configured},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range []string{"upload.sh", "upload.ps1"} {
				r := getScript(t, tc.s, name, tc.host, tc.hdr...)
				if tc.want == "" {
					if r.Status != 400 {
						t.Fatalf("%s with host %q: status %d, want 400; body:\n%s", name, tc.host, r.Status, r.Body)
					}
					if msg := r.Map(t)["error"].(string); !strings.Contains(msg, "PUBLIC_BASE_URL") {
						t.Fatalf("%s: error %q does not say what to configure", name, msg)
					}
					continue
				}
				if r.Status != 200 {
					t.Fatalf("%s: status %d; body %s", name, r.Status, r.Body)
				}
				var got string
				if name == "upload.sh" {
					got = shellBaseURL(t, string(r.Body))
				} else {
					got = powerShellBaseURL(t, string(r.Body))
				}
				if got != tc.want {
					t.Fatalf("%s: base URL %q, want %q", name, got, tc.want)
				}
				// The script depends on the request's host: no shared cache may keep it.
				if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
					t.Fatalf("%s: Cache-Control %q, want no-store", name, cc)
				}
			}
		})
	}
}

// ciCheckout is an ESP-IDF project directory after a build, as a CI job sees it.
type ciCheckout struct {
	dir, script, token string
}

func newCICheckout(t *testing.T, s *apitest.Server, model, version string, desc map[string]string) *ciCheckout {
	t.Helper()
	elfBytes, err := os.ReadFile(espimagetest.ELFPath(t, "esp32"))
	if err != nil {
		t.Fatal(err)
	}
	members, err := bundletest.Members(model, elfBytes, bundletest.Options{Version: version})
	if err != nil {
		t.Fatal(err)
	}
	c := &ciCheckout{dir: t.TempDir(), token: s.Tokens["pipeline"]}
	if err := os.Mkdir(filepath.Join(c.dir, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		p := filepath.Join(c.dir, "build", m.Name)
		if m.Name == "sdkconfig" {
			p = filepath.Join(c.dir, m.Name)
		}
		if m.Name == "version.json" {
			continue // the script writes its own
		}
		if err := os.WriteFile(p, m.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if desc != nil {
		j, _ := json.Marshal(desc)
		if err := os.WriteFile(filepath.Join(c.dir, "build", "project_description.json"), j, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := s.Expect(200, "GET", "/api/pipeline/upload.sh", nil)
	c.script = filepath.Join(t.TempDir(), "upload.sh")
	if err := os.WriteFile(c.script, r.Body, 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs a command in the checkout with git isolated from the machine's configuration.
func (c *ciCheckout) run(t *testing.T, extraEnv []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IOTSUPPORT_") && !strings.HasPrefix(kv, "GIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=ci", "GIT_AUTHOR_EMAIL=ci@example.com",
		"GIT_COMMITTER_NAME=ci", "GIT_COMMITTER_EMAIL=ci@example.com")
	cmd.Env = append(cmd.Env, extraEnv...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (c *ciCheckout) upload(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return c.run(t, []string{"IOTSUPPORT_TOKEN=" + c.token}, "bash", append([]string{c.script}, args...)...)
}

func (c *ciCheckout) git(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := c.run(t, nil, "git", args...)
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, errOut)
	}
	return strings.TrimSpace(out)
}

func firmwareVersion(t *testing.T, s *apitest.Server, modelID int, version string) map[string]any {
	t.Helper()
	var list struct {
		Versions []map[string]any `json:"firmware_versions"`
	}
	s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", modelID), nil).JSON(t, &list)
	for _, v := range list.Versions {
		if v["version"] == version {
			return v
		}
	}
	t.Fatalf("version %s not listed: %v", version, list)
	return nil
}

func TestUploadShUploadsABuild(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "thermo")

		// A fresh repository without commits, and a project description with characters
		// that need escaping in JSON: the script still builds a valid version.json.
		c := newCICheckout(t, s, "thermo", "2.0.0", map[string]string{
			"project_name": "thermo", "project_version": "2.0.0", "git_revision": "v5.4-dirty \"local\\build\"\t",
		})
		c.git(t, "init", "-q")
		out, errOut, err := c.upload(t)
		if err != nil {
			t.Fatalf("upload.sh failed: %v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
		if strings.TrimSpace(out) != "2.0.0" {
			t.Fatalf("upload.sh printed %q, want the stored version 2.0.0 (stderr %s)", out, errOut)
		}
		if v := firmwareVersion(t, s, mid, "2.0.0"); v["git_commit"] != "unknown" || v["current"] != true {
			t.Fatalf("stored version: %v", v)
		}

		// The project description's version (9.9.9) is not the image's: the image's is uploaded.
		c = newCICheckout(t, s, "thermo", "2.0.2", map[string]string{"project_name": "thermo", "project_version": "9.9.9"})
		if out, errOut, err := c.upload(t); err != nil || strings.TrimSpace(out) != "2.0.2" {
			t.Fatalf("upload.sh with a stale project_version: %v, stdout %q, stderr %s", err, out, errOut)
		}

		// With a commit, explicit arguments and no project description.
		c = newCICheckout(t, s, "thermo", "2.0.1", nil)
		c.git(t, "init", "-q")
		c.git(t, "commit", "-q", "--allow-empty", "-m", "build")
		head := c.git(t, "rev-parse", "HEAD")
		if out, errOut, err := c.upload(t, "thermo", "build/thermo.bin"); err != nil || strings.TrimSpace(out) != "2.0.1" {
			t.Fatalf("upload.sh: %v, stdout %q, stderr %s", err, out, errOut)
		}
		if v := firmwareVersion(t, s, mid, "2.0.1"); v["git_commit"] != head {
			t.Fatalf("git_commit %v, want %s", v["git_commit"], head)
		}
	})
}

func TestUploadShShowsTheServiceError(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		mid := newModel(t, s, "thermo")
		c := newCICheckout(t, s, "thermo", "2.0.0", map[string]string{"project_name": "thermo", "project_version": "9.9.9"})
		for _, tc := range []struct {
			name string
			run  func() (string, string, error)
			want string
		}{
			{"unknown model", func() (string, string, error) { return c.upload(t, "nosuch", "build/thermo.bin") }, "DeviceModel nosuch was not found"},
			{"not an app image", func() (string, string, error) {
				// The version comes from the image's app descriptor; a file without one stops the script.
				for _, ext := range []string{".bin", ".elf", ".map"} {
					if err := os.WriteFile(filepath.Join(c.dir, "build", "junk"+ext), []byte("not an image, but long enough to have 80 bytes in it..........................."), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return c.upload(t, "thermo", "build/junk.bin")
			}, "build/junk.bin is not an ESP-IDF app image"},
			{"wrong token", func() (string, string, error) {
				return c.run(t, []string{"IOTSUPPORT_TOKEN=wrong"}, "bash", c.script)
			}, "upload failed (HTTP 401): "},
			{"no token, older variable names", func() (string, string, error) {
				return c.run(t, []string{"IOTSUPPORT_CLIENT_ID=ci", "IOTSUPPORT_CLIENT_SECRET=x"}, "bash", c.script)
			}, "IOTSUPPORT_CLIENT_ID/IOTSUPPORT_CLIENT_SECRET are not used here: set IOTSUPPORT_TOKEN"},
			{"model code that is no model code", func() (string, string, error) { return c.upload(t, "../x", "build/thermo.bin") }, "model code must match"},
		} {
			out, errOut, err := tc.run()
			if err == nil {
				t.Fatalf("%s: upload.sh succeeded: %s", tc.name, out)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("%s: stderr %q does not contain %q", tc.name, errOut, tc.want)
			}
			if strings.HasSuffix(strings.TrimSpace(errOut), ":") {
				t.Fatalf("%s: no message after the status: %q", tc.name, errOut)
			}
		}
		if n := s.Expect(200, "GET", fmt.Sprintf("/api/device-models/%d/firmware-versions", mid), nil).Map(t)["count"]; n != 0.0 {
			t.Fatalf("failed uploads stored %v versions", n)
		}
	})
}
