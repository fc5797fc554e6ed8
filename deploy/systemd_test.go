package deploy_test

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/config"
)

// TestSystemdUnit: hardened, everything it writes under its StateDirectory, migrations
// before serve, and only real settings in Environment=.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("systemd/iotsupport.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			unit[k] = append(unit[k], v)
		}
	}
	for k, want := range map[string]string{"DynamicUser": "yes", "ProtectSystem": "strict", "StateDirectory": "iotsupport",
		"NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
		"ExecStartPre": "/usr/local/bin/iotsupport migrate", "ExecStart": "/usr/local/bin/iotsupport serve --no-migrate"} {
		if got := unit[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %q", k, got, want)
		}
	}
	known := map[string]bool{}
	for _, s := range config.Settings {
		known[s.Name] = true
	}
	env := map[string]string{}
	for _, kv := range unit["Environment"] {
		k, v, _ := strings.Cut(kv, "=")
		if !known[k] {
			t.Errorf("Environment=%s is not a setting of iotsupport", k)
		}
		env[k] = v
	}
	// ProtectSystem=strict leaves only the StateDirectory writable.
	for _, k := range []string{"STORAGE_DIR", "FIRMWARE_CACHE_DIR", "TEMP_DIR"} {
		if !strings.HasPrefix(env[k], "/var/lib/iotsupport/") {
			t.Errorf("%s=%q is outside the StateDirectory", k, env[k])
		}
	}
	if !strings.HasPrefix(env["DATABASE_URL"], "sqlite:/var/lib/iotsupport/") {
		t.Errorf("DATABASE_URL=%q is outside the StateDirectory", env["DATABASE_URL"])
	}
	if _, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Error(err)
	}
}
