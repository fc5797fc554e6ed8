package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/iotsupport/iotsupport/internal/config"
)

const chartDir = "helm/iotsupport"

// helmBin is HELM_BIN (set by scripts/test.sh, which installs helm), else the cached
// install. A missing helm fails the test: the chart must be checked wherever tests run.
func helmBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HELM_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "iotsupport", "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helm not found: set HELM_BIN or run `bash scripts/install-helm.sh` (scripts/test.sh does): %v", err)
	}
	return p
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := helmRun(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// helmRun returns helm's stdout, or an error carrying its output.
func helmRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	// Keep helm's own cache/config out of the developer's home.
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+tmp, "HELM_CONFIG_HOME="+tmp, "HELM_DATA_HOME="+tmp)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%v\n%s%s", err, out.String(), errb.String())
	}
	return out.String(), nil
}

type obj = map[string]any

// render runs helm template with --set values and returns the manifests.
func render(t *testing.T, sets ...string) []obj {
	t.Helper()
	args := []string{"template", "rel", chartDir, "--namespace", "iot"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	dec := yaml.NewDecoder(strings.NewReader(helm(t, args...)))
	var docs []obj
	for {
		var d obj
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// get walks a path of map keys.
func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(obj)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...string) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func find(docs []obj, kind, name string) obj {
	for _, d := range docs {
		if d["kind"] == kind && str(d, "metadata", "name") == name {
			return d
		}
	}
	return nil
}

func kinds(docs []obj) []string {
	var k []string
	for _, d := range docs {
		k = append(k, d["kind"].(string)+"/"+str(d, "metadata", "name"))
	}
	return k
}

func TestHelmLint(t *testing.T) {
	helm(t, "lint", "--strict", chartDir)
	helm(t, "lint", "--strict", chartDir, "--set", "ingress.enabled=true,serve.autoscaling.enabled=true,serviceMonitor.enabled=true,secret.existingSecret=iot")
}

var allOptions = []string{
	"ingress.enabled=true", "serve.autoscaling.enabled=true", "serviceMonitor.enabled=true",
	"secret.values.DATABASE_URL=postgres://iot:pw@db:5432/iot", "secret.values.S3_ACCESS_KEY_ID=k", "secret.values.S3_SECRET_ACCESS_KEY=s",
	"config.MQTT_URL=mqtt://mosquitto:1883",
}

func TestHelmRendersEveryPart(t *testing.T) {
	docs := render(t)
	for _, want := range []string{"Deployment/rel-iotsupport-serve", "Deployment/rel-iotsupport-worker", "Service/rel-iotsupport",
		"ConfigMap/rel-iotsupport", "Job/rel-iotsupport-migrate", "PodDisruptionBudget/rel-iotsupport-serve", "ServiceAccount/rel-iotsupport"} {
		if !slices.Contains(kinds(docs), want) {
			t.Errorf("default render lacks %s (has %v)", want, kinds(docs))
		}
	}
	for _, optional := range []string{"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "Secret"} {
		for _, d := range docs {
			if d["kind"] == optional {
				t.Errorf("%s rendered though not enabled", optional)
			}
		}
	}
	if r := get(find(docs, "Deployment", "rel-iotsupport-serve"), "spec", "replicas"); r != 2 {
		t.Errorf("serve replicas %v, want 2", r)
	}

	docs = render(t, allOptions...)
	for _, want := range []string{"Ingress/rel-iotsupport", "HorizontalPodAutoscaler/rel-iotsupport-serve", "ServiceMonitor/rel-iotsupport", "Secret/rel-iotsupport"} {
		if !slices.Contains(kinds(docs), want) {
			t.Errorf("render with every option lacks %s", want)
		}
	}
	if r := get(find(docs, "Deployment", "rel-iotsupport-serve"), "spec", "replicas"); r != nil {
		t.Errorf("serve replicas %v set although the HPA owns them", r)
	}
	if p := str(list(find(docs, "ServiceMonitor", "rel-iotsupport"), "spec", "endpoints")[0], "path"); p != "/metrics" {
		t.Errorf("ServiceMonitor scrapes %q", p)
	}

	// One replica: no PDB that would block every drain; worker off: serve decodes.
	docs = render(t, "serve.replicaCount=1", "worker.enabled=false", "serve.decodeWorkers=2")
	if find(docs, "PodDisruptionBudget", "rel-iotsupport-serve") != nil || find(docs, "Deployment", "rel-iotsupport-worker") != nil {
		t.Errorf("single replica without worker renders %v", kinds(docs))
	}
	// Without the worker and without decoders in serve nothing would decode: refused.
	if _, err := helmRun(t, "template", "rel", chartDir, "--set", "worker.enabled=false"); err == nil || !strings.Contains(err.Error(), "never decoded") {
		t.Errorf("worker.enabled=false with serve.decodeWorkers=0 rendered: %v", err)
	}
}

// podSpecs returns every pod template of the render, by workload.
func podSpecs(docs []obj) map[string]obj {
	out := map[string]obj{}
	for _, d := range docs {
		switch d["kind"] {
		case "Deployment", "Job", "StatefulSet", "DaemonSet":
			out[d["kind"].(string)+"/"+str(d, "metadata", "name")] = get(d, "spec", "template", "spec").(obj)
		}
	}
	return out
}

func TestHelmContainersAreLockedDown(t *testing.T) {
	specs := podSpecs(render(t, allOptions...))
	if len(specs) != 3 {
		t.Fatalf("pod templates %v, want serve, worker and migrate", specs)
	}
	for name, spec := range specs {
		if get(spec, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: pod not runAsNonRoot", name)
		}
		if uid, _ := get(spec, "securityContext", "runAsUser").(int); uid == 0 {
			t.Errorf("%s: pod runs as uid 0 or unset", name)
		}
		if get(spec, "automountServiceAccountToken") != false {
			t.Errorf("%s: service account token mounted", name)
		}
		containers := append(list(spec, "containers"), list(spec, "initContainers")...)
		for _, c := range containers {
			cn := name + "/" + str(c, "name")
			sc := get(c, "securityContext")
			if get(sc, "runAsNonRoot") != true || get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false {
				t.Errorf("%s: securityContext %v", cn, sc)
			}
			if !slices.Contains(list(sc, "capabilities", "drop"), any("ALL")) {
				t.Errorf("%s: capabilities not dropped: %v", cn, sc)
			}
			if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
				t.Errorf("%s: no resources", cn)
			}
			// The only writable path is /data, as in the image.
			mounts := list(c, "volumeMounts")
			if len(mounts) != 1 || str(mounts[0], "mountPath") != "/data" {
				t.Errorf("%s: volume mounts %v, want only /data", cn, mounts)
			}
		}
	}
	serve := specs["Deployment/rel-iotsupport-serve"]
	c := list(serve, "containers")[0]
	for probe, want := range map[string]string{"livenessProbe": "/health/healthz", "readinessProbe": "/health/readyz", "startupProbe": "/health/healthz"} {
		if p := str(c, probe, "httpGet", "path"); p != want || str(c, probe, "httpGet", "port") != "http" {
			t.Errorf("serve %s: %v", probe, get(c, probe))
		}
	}
	if args := list(c, "args"); !slices.Equal(args, []any{"serve", "--no-migrate"}) {
		t.Errorf("serve args %v: replicas must not migrate (the hook Job does)", args)
	}
}

func TestHelmMigrationJobIsAHook(t *testing.T) {
	docs := render(t, allOptions...)
	job := find(docs, "Job", "rel-iotsupport-migrate")
	if job == nil {
		t.Fatal("no migration Job")
	}
	hooks := strings.Split(str(job, "metadata", "annotations", "helm.sh/hook"), ",")
	if !slices.Contains(hooks, "pre-install") || !slices.Contains(hooks, "pre-upgrade") {
		t.Errorf("migration Job hooks %v", hooks)
	}
	if args := list(job, "spec", "template", "spec", "containers")[0].(obj)["args"]; !slices.Equal(args.([]any), []any{"migrate"}) {
		t.Errorf("migration Job runs %v", args)
	}
	// What the Job reads must exist before it: hooks with a lower weight.
	jobWeight := str(job, "metadata", "annotations", "helm.sh/hook-weight")
	for _, kind := range []string{"ConfigMap", "Secret", "ServiceAccount"} {
		d := find(docs, kind, "rel-iotsupport")
		if !strings.Contains(str(d, "metadata", "annotations", "helm.sh/hook"), "pre-install") || !(str(d, "metadata", "annotations", "helm.sh/hook-weight") < jobWeight) {
			t.Errorf("%s is not a hook ordered before the migration Job: %v", kind, get(d, "metadata", "annotations"))
		}
	}
}

// TestHelmSetsOnlyRealSettings: every environment variable the chart gives a container
// (ConfigMap, chart Secret, explicit env) is a setting of `iotsupport config`, and the
// values make a valid configuration.
func TestHelmSetsOnlyRealSettings(t *testing.T) {
	known := map[string]bool{}
	for _, s := range config.Settings {
		known[s.Name] = true
	}
	docs := render(t, allOptions...)
	cm := find(docs, "ConfigMap", "rel-iotsupport")
	sec := find(docs, "Secret", "rel-iotsupport")
	base := map[string]string{}
	for _, src := range []any{get(cm, "data"), get(sec, "stringData")} {
		for k, v := range src.(obj) {
			if !known[k] {
				t.Errorf("chart sets %s, which is not a setting of iotsupport", k)
			}
			base[k] = v.(string)
		}
	}
	clientIDs := 0
	for name, spec := range podSpecs(docs) {
		for _, c := range list(spec, "containers") {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for _, from := range list(c, "envFrom") {
				if n := str(from, "configMapRef", "name"); n != "" && n != "rel-iotsupport" {
					t.Errorf("%s loads an unknown ConfigMap %s", name, n)
				}
			}
			for _, e := range list(c, "env") {
				k := str(e, "name")
				if !known[k] {
					t.Errorf("%s sets %s, which is not a setting of iotsupport", name, k)
				}
				if k == "MQTT_CLIENT_ID" {
					// One client id per pod: the pod name.
					if str(e, "valueFrom", "fieldRef", "fieldPath") != "metadata.name" {
						t.Errorf("%s: MQTT_CLIENT_ID is not the pod name: %v", name, e)
					}
					clientIDs++
					env[k] = "pod-name"
					continue
				}
				env[k] = str(e, "value")
			}
			cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if strings.HasSuffix(name, "-serve") && (cfg.DecodeWorkers != 0 || cfg.Host != "0.0.0.0") {
				t.Errorf("serve: DECODE_WORKERS=%d HOST=%s, want 0 (the worker decodes) and 0.0.0.0", cfg.DecodeWorkers, cfg.Host)
			}
			if strings.HasSuffix(name, "-worker") && cfg.DecodeWorkers == 0 {
				t.Errorf("worker decodes nothing")
			}
		}
	}
	if clientIDs != 2 {
		t.Errorf("MQTT_CLIENT_ID set per pod in %d workloads, want serve and worker", clientIDs)
	}
}
