package main_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/proctest"
)

func TestHealthcheckCommand(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=sqlite:" + filepath.Join(t.TempDir(), "x.db"), "STORAGE_DIR=" + t.TempDir()}
	p := proctest.Start(t, env)
	_, port, _ := strings.Cut(strings.TrimPrefix(p.URL, "http://"), ":")

	// A wildcard HOST (as in the image) is probed on loopback.
	out, errOut, code := proctest.Run(t, append(env, "HOST=0.0.0.0", "PORT="+port), "healthcheck")
	if code != 0 || !strings.Contains(out, "/health/readyz: 200") {
		t.Fatalf("healthcheck of a ready server: exit %d %s %s", code, out, errOut)
	}
	// Not ready, or nothing listening: non-zero, saying why.
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer notReady.Close()
	if _, errOut, code := proctest.Run(t, env, "healthcheck", "--url", notReady.URL+"/health/readyz"); code == 0 || !strings.Contains(errOut, "503") {
		t.Fatalf("healthcheck of a 503: exit %d %s", code, errOut)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := proctest.Run(t, append(env, "PORT="+port), "healthcheck"); code == 0 || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("healthcheck of a stopped server: exit %d %s", code, errOut)
	}
}

func TestVersionCommand(t *testing.T) {
	out, _, code := proctest.Run(t, nil, "version", "--json")
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("version --json: exit %d %v %q", code, err, out)
	}
	for _, k := range []string{"version", "commit", "date", "go"} {
		if v[k] == "" {
			t.Errorf("version --json lacks %s: %v", k, v)
		}
	}
	out, _, _ = proctest.Run(t, nil, "version")
	if !strings.HasPrefix(out, "iotsupport "+v["version"]+" (commit "+v["commit"]+", built "+v["date"]) {
		t.Errorf("version: %q", out)
	}
}
