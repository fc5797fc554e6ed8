package httpapi_test

import (
	"archive/zip"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/nvs"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

var provSettings = []string{"PUBLIC_BASE_URL", "https://iot.example.test/base", "DEVICE_MQTT_URL", "mqtts://mqtt.example.test:8883",
	"PROVISIONING_WIFI_SSID", "Factory, Floor \"2\"", "PROVISIONING_WIFI_PASSWORD", "correct horse battery staple",
	"PROVISIONING_BATCH_MAX", "5", "PROVISIONING_MAX_PARTITION_SIZE", "65536"}

// provValues reads namespace prov of an NVS image as key → value.
func provValues(t *testing.T, img []byte) map[string]string {
	t.Helper()
	p, err := nvs.Parse(img)
	if err != nil || len(p.Problems) > 0 {
		t.Fatalf("image does not parse: %v %v", err, p.Problems)
	}
	out := map[string]string{}
	for _, r := range p.Records {
		if r.Namespace != "prov" || r.Type != nvs.String {
			t.Fatalf("unexpected record %+v", r)
		}
		out[r.Key] = string(r.Data)
	}
	return out
}

func deviceCount(t *testing.T, s *apitest.Server) int {
	return int(s.Expect(200, "GET", "/api/devices", nil).Map(t)["count"].(float64))
}

func TestProvisioningImageCarriesAWorkingNewSecret(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, provSettings...)
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m["id"], "config": `{}`}).Map(t)
		key, oldSecret := d["key"].(string), d["secret"].(string)
		path := fmt.Sprintf("/api/devices/%d/provisioning", int(d["id"].(float64)))
		s.Basic(key, oldSecret).Expect(200, "GET", "/api/iot/config", nil)

		r := s.Role("editor").Expect(200, "POST", path+"?partition_size=0x4000", nil)
		if r.Header.Get("Content-Disposition") != "attachment; filename="+key+"-nvs.bin" || r.Header.Get("X-Device-Secret-Rotated") != "true" ||
			r.Header.Get("Content-Type") != "application/octet-stream" || !strings.Contains(r.Header.Get("Cache-Control"), "no-store") || len(r.Body) != 0x4000 {
			t.Fatalf("headers %v, %d bytes", r.Header, len(r.Body))
		}
		v := provValues(t, r.Body)
		secret := v["device_secret"]
		want := map[string]string{"device_key": key, "device_secret": secret, "base_url": "https://iot.example.test/base", "model": "lamp",
			"mqtt_url": "mqtts://mqtt.example.test:8883", "wifi_ssid": "Factory, Floor \"2\"", "wifi_password": "correct horse battery staple"}
		if fmt.Sprint(v) != fmt.Sprint(want) || secret == "" || secret == oldSecret {
			t.Fatalf("record %v", v)
		}
		// The image's secret is the device's now; the previous one no longer works.
		s.Basic(key, secret).Expect(200, "GET", "/api/iot/config", nil)
		s.Basic(key, oldSecret).Expect(401, "GET", "/api/iot/config", nil)

		// The device refreshes its record: same fields, and its secret is not rotated.
		cur := s.Basic(key, secret).Expect(200, "GET", "/api/iot/provisioning", nil)
		var got map[string]string
		cur.JSON(t, &got)
		if fmt.Sprint(got) != fmt.Sprint(want) || !strings.Contains(cur.Header.Get("Cache-Control"), "no-store") {
			t.Fatalf("iot record %v", got)
		}
		s.Basic(key, secret).Expect(200, "GET", "/api/iot/config", nil)

		// CSV: ESP-IDF's format, read by the generator into the same record.
		c := s.Expect(200, "POST", path+"?format=csv", nil)
		items, err := nvs.ParseCSV(bytes.NewReader(c.Body), nil)
		if err != nil || c.Header.Get("Content-Disposition") != "attachment; filename="+key+"-nvs.csv" {
			t.Fatalf("csv: %v %v\n%s", err, c.Header, c.Body)
		}
		img, err := nvs.Generate(items, 0x3000)
		if err != nil {
			t.Fatal(err)
		}
		fromCSV := provValues(t, img)
		if fromCSV["device_secret"] == secret || fromCSV["wifi_ssid"] != want["wifi_ssid"] || len(fromCSV) != 7 {
			t.Fatalf("csv record %v", fromCSV)
		}
		s.Basic(key, fromCSV["device_secret"]).Expect(200, "GET", "/api/iot/config", nil)
		s.Basic(key, secret).Expect(401, "GET", "/api/iot/config", nil)

		// JSON.
		j := s.Expect(200, "POST", path+"?format=json", nil)
		var rec map[string]string
		j.JSON(t, &rec)
		if rec["device_key"] != key || rec["device_secret"] == fromCSV["device_secret"] || j.Header.Get("X-Device-Secret-Rotated") != "true" {
			t.Fatalf("json record %v", rec)
		}
		s.Basic(key, rec["device_secret"]).Expect(200, "GET", "/api/iot/config", nil)

		// Every rotation is in the audit log.
		audit := s.Expect(200, "GET", "/api/audit", nil).Map(t)
		n := 0
		for _, e := range audit["entries"].([]any) {
			if e.(map[string]any)["route"] == "/api/devices/{device_id}/provisioning" && e.(map[string]any)["status"].(float64) == 200 {
				n++
			}
		}
		if n != 3 {
			t.Fatalf("%d audited provisioning downloads, want 3", n)
		}
		s.Role("viewer").Expect(403, "POST", path, nil)
		s.Basic(key, rec["device_secret"]).Expect(200, "GET", "/api/iot/config", nil)
	})
}

func TestProvisioningRefusesBadInputAndChangesNothing(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, provSettings...)
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m["id"], "config": `{}`}).Map(t)
		key, secret := d["key"].(string), d["secret"].(string)
		path := fmt.Sprintf("/api/devices/%d/provisioning", int(d["id"].(float64)))
		for q, want := range map[string]string{
			"?partition_size=0x3001":  "multiple of 4096",
			"?partition_size=0x2000":  "minimum",
			"?partition_size=lots":    "not a number",
			"?partition_size=0x20000": "PROVISIONING_MAX_PARTITION_SIZE",
			"?format=xml":             "format \"xml\"",
		} {
			r := s.Expect(400, "POST", path+q, nil).Map(t)
			if r["code"] != "VALIDATION_FAILED" || !strings.Contains(r["error"].(string), want) {
				t.Fatalf("%s: %v", q, r)
			}
		}
		s.Expect(404, "POST", "/api/devices/999999/provisioning", nil)
		s.Basic(key, secret).Expect(200, "GET", "/api/iot/config", nil) // the secret was never rotated

		mid := int(m["id"].(float64))
		batch := fmt.Sprintf("/api/device-models/%d/provisioning-batch", mid)
		for _, body := range []any{
			map[string]any{"count": 0},
			map[string]any{"count": 6},
			map[string]any{"count": 2, "partition_size": "0x1000"},
			map[string]any{"count": 2, "partition_size": true},
			map[string]any{"count": 2, "colour": "red"},
			map[string]any{"count": 2, "config": "{not json"},
			`{"count": 2`,
		} {
			r := s.Expect(400, "POST", batch, body).Map(t)
			if r["code"] != "VALIDATION_FAILED" {
				t.Fatalf("%v: %v", body, r)
			}
		}
		s.Expect(404, "POST", "/api/device-models/999999/provisioning-batch", map[string]any{"count": 1})
		if n := deviceCount(t, s); n != 1 {
			t.Fatalf("%d devices after refused batches, want 1", n)
		}
	})
}

func TestProvisioningBatchIsAllOrNothing(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env, provSettings...)
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
		batch := fmt.Sprintf("/api/device-models/%d/provisioning-batch", int(m["id"].(float64)))

		r := s.Role("editor").Expect(201, "POST", batch, map[string]any{"count": 3, "partition_size": 0x5000})
		if r.Header.Get("Content-Type") != "application/zip" || r.Header.Get("Content-Disposition") != "attachment; filename=lamp-provisioning.zip" {
			t.Fatalf("headers %v", r.Header)
		}
		zr, err := zip.NewReader(bytes.NewReader(r.Body), int64(len(r.Body)))
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		for _, f := range zr.File {
			rc, _ := f.Open()
			files[f.Name], _ = io.ReadAll(rc)
			rc.Close()
		}
		rows, err := csv.NewReader(bytes.NewReader(files["manifest.csv"])).ReadAll()
		if err != nil || len(rows) != 4 || strings.Join(rows[0], ",") != "device_key,device_id,file" || len(files) != 4 {
			t.Fatalf("manifest %v, files %d", rows, len(files))
		}
		for _, row := range rows[1:] {
			img := files[row[2]]
			if len(img) != 0x5000 || row[2] != row[0]+"-nvs.bin" {
				t.Fatalf("%v: %d bytes", row, len(img))
			}
			v := provValues(t, img)
			if v["device_key"] != row[0] || v["model"] != "lamp" {
				t.Fatalf("image of %s: %v", row[0], v)
			}
			got := s.Expect(200, "GET", "/api/devices/"+row[1], nil).Map(t)
			if got["key"] != row[0] {
				t.Fatalf("device %s is %v", row[1], got["key"])
			}
			s.Basic(row[0], v["device_secret"]).Expect(200, "GET", "/api/iot/config", nil)
		}
		if n := deviceCount(t, s); n != 3 {
			t.Fatalf("%d devices, want 3", n)
		}

		// A failure while the third image is built: none of the batch's devices remains.
		s.App.Provisioning.BeforeImage = func(i int) error {
			if i == 2 {
				return errors.New("injected failure")
			}
			return nil
		}
		s.Expect(500, "POST", batch, map[string]any{"count": 4})
		s.App.Provisioning.BeforeImage = nil
		if n := deviceCount(t, s); n != 3 {
			t.Fatalf("%d devices after a failed batch, want 3", n)
		}
	})
}

// Without PUBLIC_BASE_URL the record names the address the request came to, and unset
// optional settings leave their keys out of image and JSON alike.
func TestProvisioningRecordWithoutOptionalSettings(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		s := apitest.Start(t, env)
		m := s.Expect(201, "POST", "/api/device-models", map[string]any{"code": "lamp", "name": "Lamp"}).Map(t)
		d := s.Expect(201, "POST", "/api/devices", map[string]any{"device_model_id": m["id"], "config": `{}`}).Map(t)
		key := d["key"].(string)
		v := provValues(t, s.Expect(200, "POST", fmt.Sprintf("/api/devices/%d/provisioning", int(d["id"].(float64))), nil).Body)
		if len(v) != 4 || v["base_url"] != s.URL || v["model"] != "lamp" || v["device_key"] != key {
			t.Fatalf("record %v (server %s)", v, s.URL)
		}
		var rec map[string]any
		s.Basic(key, v["device_secret"]).Expect(200, "GET", "/api/iot/provisioning", nil).JSON(t, &rec)
		if len(rec) != 4 || rec["base_url"] != s.URL || rec["device_secret"] != v["device_secret"] {
			t.Fatalf("iot record %v", rec)
		}
	})
}
