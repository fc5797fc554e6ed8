package deploy_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/iotsupport/iotsupport/internal/config"
)

const composeDir = "compose"

// envExample reads deploy/compose/.env.example as NAME → value.
func envExample(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(composeDir, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf(".env.example: not NAME=value: %q", line)
		}
		vars[k] = v
	}
	return vars
}

func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(composeDir, "compose.yaml")},
		cli.WithWorkingDirectory(composeDir), cli.WithEnv(kv), cli.WithName("iotsupport"))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

// filledEnv is .env.example with every empty (secret) value filled in.
func filledEnv(t *testing.T) map[string]string {
	env := envExample(t)
	for k, v := range env {
		if v == "" {
			env[k] = "test-secret-" + strings.ToLower(k)
		}
	}
	return env
}

// isIotsupport tells the service's own containers (built from the repository) from
// the third-party ones.
func isIotsupport(s types.ServiceConfig) bool { return s.Build != nil }

func TestComposeEnvExampleNamesEveryVariable(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(composeDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	env := envExample(t)
	// ${NAME}, ${NAME:-default}, ${NAME:?message}; $$ escapes a literal $.
	uses := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(string(raw), -1)
	if len(uses) == 0 {
		t.Fatal("compose.yaml interpolates no variable")
	}
	for _, m := range uses {
		if _, ok := env[m[1]]; !ok {
			t.Errorf("compose.yaml uses ${%s}, which .env.example does not name", m[1])
		}
	}
	// The secrets have no usable default: compose refuses to start until they are set.
	if _, err := loadCompose(t, env); err == nil || !strings.Contains(err.Error(), "PASSWORD") {
		t.Fatalf("compose loaded with the empty secrets of .env.example: %v", err)
	}
	for _, secret := range []string{"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MQTT_PASSWORD"} {
		if v, ok := env[secret]; !ok || v != "" {
			t.Errorf(".env.example: secret %s must be named with an empty value, got %q", secret, v)
		}
	}
}

func TestComposeStack(t *testing.T) {
	p, err := loadCompose(t, filledEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"postgres", "minio", "mosquitto", "migrate", "serve-1", "serve-2", "worker", "caddy"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	command := func(name string) string { return strings.Join(p.Services[name].Command, " ") }
	if got := command("migrate"); got != "migrate" {
		t.Errorf("migrate runs %q", got)
	}
	if got := command("worker"); got != "worker" {
		t.Errorf("worker runs %q", got)
	}

	replicas := []string{"serve-1", "serve-2"}
	clientIDs := map[string]string{}
	for _, name := range append(slices.Clone(replicas), "worker") {
		s := p.Services[name]
		deps := s.DependsOn
		want := map[string]string{
			"migrate": types.ServiceConditionCompletedSuccessfully, "postgres": types.ServiceConditionHealthy,
			"minio": types.ServiceConditionHealthy, "mosquitto": types.ServiceConditionHealthy,
		}
		for dep, cond := range want {
			if deps[dep].Condition != cond {
				t.Errorf("%s: depends_on %s condition %q, want %q", name, dep, deps[dep].Condition, cond)
			}
		}
		id := s.Environment["MQTT_CLIENT_ID"]
		if id == nil || *id == "" {
			t.Errorf("%s: no MQTT_CLIENT_ID", name)
		} else if other, dup := clientIDs[*id]; dup {
			t.Errorf("%s and %s share MQTT_CLIENT_ID %s", name, other, *id)
		} else {
			clientIDs[*id] = name
		}
	}
	for _, name := range replicas {
		s := p.Services[name]
		if got := strings.Join(s.Command, " "); got != "serve --no-migrate" {
			t.Errorf("%s runs %q (the migrate service migrates once)", name, got)
		}
		if v := s.Environment["DECODE_WORKERS"]; v == nil || *v != "0" {
			t.Errorf("%s: DECODE_WORKERS must be 0 (the worker decodes)", name)
		}
		if s.HealthCheck != nil && s.HealthCheck.Disable {
			t.Errorf("%s: health check disabled; caddy waits for it", name)
		}
		if p.Services["caddy"].DependsOn[name].Condition != types.ServiceConditionHealthy {
			t.Errorf("caddy does not wait for %s to be healthy", name)
		}
	}
	if p.Services["migrate"].DependsOn["postgres"].Condition != types.ServiceConditionHealthy {
		t.Error("migrate does not wait for a healthy postgres")
	}
	for _, name := range []string{"postgres", "minio", "mosquitto"} {
		if hc := p.Services[name].HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 {
			t.Errorf("%s has no health check, so nothing can wait for it", name)
		}
	}
	caddyfile, err := os.ReadFile(filepath.Join(composeDir, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range replicas {
		if !strings.Contains(string(caddyfile), name+":3101") {
			t.Errorf("Caddyfile does not proxy to %s:3101", name)
		}
	}

	// Named volumes only, and each iotsupport container writes to nothing but /data.
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeVolume {
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s: volume %s is not a declared named volume", name, v.Source)
				}
			}
		}
		if !isIotsupport(s) {
			continue
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("%s: want read_only and cap_drop ALL", name)
		}
		if len(s.Volumes) != 1 || s.Volumes[0].Target != "/data" || s.Volumes[0].Type != types.VolumeTypeVolume {
			t.Errorf("%s: want exactly one named volume on /data, got %+v", name, s.Volumes)
		}
	}
}

// TestComposeSetsOnlyRealSettings: every variable given to an iotsupport container is
// a setting of `iotsupport config`, and together they form a valid configuration.
func TestComposeSetsOnlyRealSettings(t *testing.T) {
	p, err := loadCompose(t, filledEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, s := range config.Settings {
		known[s.Name] = true
	}
	n := 0
	for name, s := range p.Services {
		if !isIotsupport(s) {
			continue
		}
		n++
		env := map[string]string{}
		for k, v := range s.Environment {
			if !known[k] {
				t.Errorf("%s sets %s, which is not a setting of iotsupport", name, k)
			}
			if v != nil {
				env[k] = *v
			}
		}
		cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if cfg.StorageBackend != "s3" || !strings.HasPrefix(cfg.DatabaseURL, "postgres://") || cfg.MQTTURL == "" || !cfg.TrustProxyHeaders {
			t.Errorf("%s: not the production shape: %+v", name, cfg)
		}
	}
	if n != 4 {
		t.Fatalf("%d iotsupport services, want migrate, serve-1, serve-2, worker", n)
	}
}
