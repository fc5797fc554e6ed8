package config

import (
	"os"
	"strings"
	"testing"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "sqlite:./data/iotsupport.db" || c.StorageBackend != "local" || c.StorageDir != "./data/blobs" ||
		c.S3Bucket != "iot-support-attachments" || c.S3Region != "us-east-1" || c.MaxFirmwares != 5 || c.MaxCoredumps != 20 ||
		c.Host != "127.0.0.1" || c.Port != 3101 || c.LogFormat != "json" || !c.S3PathStyle {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestInvalidValuesNameTheSetting(t *testing.T) {
	cases := []struct{ name, value, want string }{
		{"MAX_FIRMWARES", "0", "invalid MAX_FIRMWARES=\"0\": must be between 1"},
		{"MAX_COREDUMPS", "many", "invalid MAX_COREDUMPS=\"many\": must be an integer"},
		{"PORT", "70000", "invalid PORT"},
		{"STORAGE_BACKEND", "ftp", "invalid STORAGE_BACKEND=\"ftp\": must be local or s3"},
		{"DATABASE_URL", "mysql://x", "invalid DATABASE_URL"},
		{"LOG_FORMAT", "xml", "invalid LOG_FORMAT"},
		{"S3_USE_SSL", "maybe", "invalid S3_USE_SSL"},
		{"HOST", "not a host", "invalid HOST"},
		{"S3_BUCKET_NAME", "UPPER", "invalid S3_BUCKET_NAME"},
		{"SHUTDOWN_TIMEOUT", "-1s", "invalid SHUTDOWN_TIMEOUT"},
		// Profiles are a debugging aid, never served to the network.
		{"IOTSUPPORT_PPROF_ADDR", "0.0.0.0:6060", "invalid IOTSUPPORT_PPROF_ADDR=\"0.0.0.0:6060\": must be a loopback host:port"},
		{"IOTSUPPORT_PPROF_ADDR", "localhost", "invalid IOTSUPPORT_PPROF_ADDR"},
	}
	for _, tc := range cases {
		_, err := Load(env(tc.name, tc.value))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%s: got %v, want one line starting %q", tc.name, tc.value, err, tc.want)
		}
	}
}

func TestSecretsAreMasked(t *testing.T) {
	lines := strings.Join(Effective(env("DATABASE_URL", "postgres://u:hunter2@db/x", "S3_SECRET_ACCESS_KEY", "topsecret")), "\n")
	if strings.Contains(lines, "hunter2") || strings.Contains(lines, "topsecret") {
		t.Fatalf("secret printed:\n%s", lines)
	}
	if !strings.Contains(lines, "S3_SECRET_ACCESS_KEY=****") || !strings.Contains(lines, "postgres://u:****@db/x") {
		t.Fatalf("masked output:\n%s", lines)
	}
	_, err := Load(env("DATABASE_URL", "mysql://u:hunter2@db/x"))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks secret: %v", err)
	}
}

// The README's settings table must list every setting with its default.
func TestREADMEListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, s := range Settings {
		row := "| `" + s.Name + "` |"
		i := strings.Index(readme, row)
		if i < 0 {
			t.Errorf("README settings table lacks %s", s.Name)
			continue
		}
		line := readme[i:]
		line = line[:strings.Index(line, "\n")]
		if s.Default != "" && !strings.Contains(line, "`"+s.Default+"`") {
			t.Errorf("README row for %s does not show default %q: %s", s.Name, s.Default, line)
		}
	}
}

func TestPprofAddrAcceptsLoopbackOnly(t *testing.T) {
	for _, v := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:0"} {
		c, err := Load(env("IOTSUPPORT_PPROF_ADDR", v))
		if err != nil {
			t.Errorf("%s: %v", v, err)
		} else if c.PprofAddr != v {
			t.Errorf("%s: PprofAddr %q", v, c.PprofAddr)
		}
	}
	if c, err := Load(env()); err != nil || c.PprofAddr != "" {
		t.Fatalf("default: %v %+v", err, c)
	}
}

func TestProvisioningSettingsAreChecked(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"DEVICE_MQTT_URL", "http://broker", "invalid DEVICE_MQTT_URL=\"http://broker\": must start with mqtt://"},
		{"PROVISIONING_WIFI_SSID", strings.Repeat("s", 33), "invalid PROVISIONING_WIFI_SSID"},
		{"PROVISIONING_WIFI_SSID", "two\nlines", "invalid PROVISIONING_WIFI_SSID"},
		{"PROVISIONING_WIFI_PASSWORD", "short", "invalid PROVISIONING_WIFI_PASSWORD=\"****\": must be 8 to 64"},
		{"PROVISIONING_BATCH_MAX", "0", "invalid PROVISIONING_BATCH_MAX"},
		{"PROVISIONING_MAX_PARTITION_SIZE", "4096", "invalid PROVISIONING_MAX_PARTITION_SIZE"},
	} {
		if _, err := Load(env(tc.name, tc.value)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s=%q: got %v, want %q", tc.name, tc.value, err, tc.want)
		}
	}
	c, err := Load(env("PROVISIONING_WIFI_PASSWORD", "correct horse", "DEVICE_MQTT_URL", "mqtts://b:8883", "PROVISIONING_WIFI_SSID", "Café"))
	if err != nil || c.ProvisioningWiFiPassword != "correct horse" || c.DeviceMQTTURL != "mqtts://b:8883" || c.ProvisioningBatchMax != 1000 ||
		c.ProvisioningMaxPartitionSize != 1<<20 || c.ProvisioningWiFiSSID != "Café" {
		t.Fatalf("%v %+v", err, c)
	}
	if lines := strings.Join(Effective(env("PROVISIONING_WIFI_PASSWORD", "correct horse")), "\n"); strings.Contains(lines, "correct horse") {
		t.Fatal("Wi-Fi password printed")
	}
}
