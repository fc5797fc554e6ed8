// Package provisioning builds devices' provisioning records — key, secret, endpoints
// and Wi-Fi — as NVS partition images a factory flashes, as ESP-IDF CSV or as JSON.
// Issuing a record rotates the device's secret in the same transaction that builds it.
package provisioning

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/iotsupport/iotsupport/internal/apperr"
	"github.com/iotsupport/iotsupport/internal/devices"
	"github.com/iotsupport/iotsupport/internal/nvs"
)

// Namespace is the NVS namespace of the record's keys.
const Namespace = "prov"

// DefaultPartitionSize is the size of an image when the request names none.
const DefaultPartitionSize = "0x3000"

// Config is what every record carries besides the device's own fields.
type Config struct {
	// BaseURL is PUBLIC_BASE_URL; empty means the request's own address.
	BaseURL                    string
	MQTTURL                    string
	WiFiSSID, WiFiPassword     string
	BatchMax, MaxPartitionSize int
}

// Service issues provisioning records.
type Service struct {
	devices *devices.Service
	cfg     Config
	// BeforeImage, when set, runs before each batch image is built; an error aborts the
	// batch (tests inject failures with it).
	BeforeImage func(i int) error
}

// NewService returns a Service issuing records through devs.
func NewService(devs *devices.Service, cfg Config) *Service {
	return &Service{devices: devs, cfg: cfg}
}

// Record is one device's provisioning record; empty optional fields are left out.
type Record struct {
	DeviceKey    string `json:"device_key"`
	DeviceSecret string `json:"device_secret,omitempty"`
	BaseURL      string `json:"base_url"`
	Model        string `json:"model"`
	MQTTURL      string `json:"mqtt_url,omitempty"`
	WiFiSSID     string `json:"wifi_ssid,omitempty"`
	WiFiPassword string `json:"wifi_password,omitempty"`
}

// fields are the record's NVS keys and values in order, without the empty ones.
func (r Record) fields() [][2]string {
	all := [][2]string{{"device_key", r.DeviceKey}, {"device_secret", r.DeviceSecret}, {"base_url", r.BaseURL}, {"model", r.Model},
		{"mqtt_url", r.MQTTURL}, {"wifi_ssid", r.WiFiSSID}, {"wifi_password", r.WiFiPassword}}
	var out [][2]string
	for _, f := range all {
		if f[1] != "" {
			out = append(out, f)
		}
	}
	return out
}

// Items is the record as NVS rows: namespace prov, one string per field.
func (r Record) Items() []nvs.Item {
	items := []nvs.Item{{Namespace: true, Key: Namespace}}
	for _, f := range r.fields() {
		items = append(items, nvs.Item{Key: f[0], Type: nvs.String, Data: []byte(f[1])})
	}
	return items
}

// CSV is the record in ESP-IDF's CSV format, for nvs_partition_gen.py.
func (r Record) CSV() []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"key", "type", "encoding", "value"})
	_ = w.Write([]string{Namespace, "namespace", "", ""})
	for _, f := range r.fields() {
		_ = w.Write([]string{f[0], "data", "string", f[1]})
	}
	w.Flush()
	return b.Bytes()
}

// Image is the record as an NVS partition of size bytes.
func (r Record) Image(size int) ([]byte, error) {
	img, err := nvs.Generate(r.Items(), size)
	if err != nil {
		return nil, fmt.Errorf("build NVS image for %s: %w", r.DeviceKey, err)
	}
	return img, nil
}

// Output is a response body with its type and download name.
type Output struct {
	Body        []byte
	ContentType string
	Filename    string // "" for inline JSON
}

// Request is a provisioning download's parameters, unvalidated.
type Request struct {
	PartitionSize string // "" means DefaultPartitionSize
	Format        string // nvs (default), csv or json
	// RequestBaseURL is the address the request came to, used without PUBLIC_BASE_URL.
	RequestBaseURL string
}

// size validates a partition size parameter.
func (s *Service) size(v string) (int, error) {
	if v == "" {
		v = DefaultPartitionSize
	}
	n, err := nvs.ParseSize(v)
	if err == nil {
		err = nvs.CheckSize(n)
	}
	if err != nil {
		return 0, apperr.Validationf("partition_size: %v", err)
	}
	if n > s.cfg.MaxPartitionSize {
		return 0, apperr.Validationf("partition_size %#x is larger than PROVISIONING_MAX_PARTITION_SIZE (%#x)", n, s.cfg.MaxPartitionSize)
	}
	return n, nil
}

func (s *Service) record(d *devices.Device, secret, requestBaseURL string) Record {
	base := s.cfg.BaseURL
	if base == "" {
		base = requestBaseURL
	}
	return Record{DeviceKey: d.Key, DeviceSecret: secret, BaseURL: base, Model: d.ModelCode,
		MQTTURL: s.cfg.MQTTURL, WiFiSSID: s.cfg.WiFiSSID, WiFiPassword: s.cfg.WiFiPassword}
}

// Provision issues a new secret for a device and returns its record in the requested
// format. Input is checked first and the body is built inside the rotation's
// transaction: a refused request or a failed build leaves the old secret working.
func (s *Service) Provision(ctx context.Context, deviceID int64, req Request) (*Output, error) {
	format := req.Format
	if format == "" {
		format = "nvs"
	}
	if format != "nvs" && format != "csv" && format != "json" {
		return nil, apperr.Validationf("format %q is not one of nvs, csv, json", req.Format)
	}
	size, err := s.size(req.PartitionSize)
	if err != nil {
		return nil, err
	}
	var out *Output
	err = s.devices.RotateSecretWith(ctx, deviceID, func(d *devices.Device, secret string) error {
		rec := s.record(d, secret, req.RequestBaseURL)
		switch format {
		case "nvs":
			img, err := rec.Image(size)
			if err != nil {
				return err
			}
			out = &Output{Body: img, ContentType: "application/octet-stream", Filename: d.Key + "-nvs.bin"}
		case "csv":
			out = &Output{Body: rec.CSV(), ContentType: "text/csv; charset=utf-8", Filename: d.Key + "-nvs.csv"}
		default:
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			out = &Output{Body: b, ContentType: "application/json"}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// BatchRequest asks for count new devices of a model, each with its own image.
type BatchRequest struct {
	Count         int
	PartitionSize string
	// Config is every new device's config JSON; "" means {}.
	Config         string
	RequestBaseURL string
}

// Batch creates count devices of a model and returns a ZIP of their NVS images and
// manifest.csv (device_key,device_id,file). Devices and ZIP are built in one
// transaction, so a failure anywhere leaves no device behind; only the download of
// the finished ZIP happens after commit.
func (s *Service) Batch(ctx context.Context, modelID int64, req BatchRequest) (*Output, error) {
	if req.Count < 1 || req.Count > s.cfg.BatchMax {
		return nil, apperr.Validationf("count must be between 1 and %d (PROVISIONING_BATCH_MAX)", s.cfg.BatchMax)
	}
	size, err := s.size(req.PartitionSize)
	if err != nil {
		return nil, err
	}
	config := req.Config
	if config == "" {
		config = "{}"
	}
	var buf bytes.Buffer
	var model string
	err = s.devices.CreateDevices(ctx, modelID, req.Count, config, func(devs []devices.NewDevice) error {
		buf.Reset()
		zw := zip.NewWriter(&buf)
		manifest := [][]string{{"device_key", "device_id", "file"}}
		for i, nd := range devs {
			if s.BeforeImage != nil {
				if err := s.BeforeImage(i); err != nil {
					return err
				}
			}
			model = nd.Device.ModelCode
			img, err := s.record(nd.Device, nd.Secret, req.RequestBaseURL).Image(size)
			if err != nil {
				return err
			}
			name := nd.Device.Key + "-nvs.bin"
			if err := addFile(zw, name, img); err != nil {
				return err
			}
			manifest = append(manifest, []string{nd.Device.Key, strconv.FormatInt(nd.Device.ID, 10), name})
		}
		var m strings.Builder
		w := csv.NewWriter(&m)
		_ = w.WriteAll(manifest)
		if err := addFile(zw, "manifest.csv", []byte(m.String())); err != nil {
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return nil, err
	}
	return &Output{Body: buf.Bytes(), ContentType: "application/zip", Filename: model + "-provisioning.zip"}, nil
}

func addFile(zw *zip.Writer, name string, b []byte) error {
	f, err := zw.Create(name)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return err
}

// Current returns a device's record without rotating its secret; the secret is the
// one the device authenticated with ("" when it used a token).
func (s *Service) Current(ctx context.Context, deviceID int64, secret, requestBaseURL string) (*Record, error) {
	d, err := s.devices.GetDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	rec := s.record(d, secret, requestBaseURL)
	return &rec, nil
}
