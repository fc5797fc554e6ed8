package provisioning_test

import (
	"bytes"
	"testing"

	"github.com/iotsupport/iotsupport/internal/nvs"
	"github.com/iotsupport/iotsupport/internal/provisioning"
)

// The CSV download, fed to the generator (ESP-IDF's or ours), makes exactly the NVS
// download's image, also for values that need CSV quoting.
func TestCSVMakesTheSameImage(t *testing.T) {
	r := provisioning.Record{DeviceKey: "abcd2345", DeviceSecret: "Zx8Qm3VtR9kPw2LbN7cJ4hYs_-", BaseURL: "https://iot.example.net/x",
		Model: "lamp_v2", MQTTURL: "mqtts://mqtt.example.net:8883", WiFiSSID: ` Factory, "Floor" 2`, WiFiPassword: `p"a,s s#w`}
	items, err := nvs.ParseCSV(bytes.NewReader(r.CSV()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.CSV())
	}
	fromCSV, err := nvs.Generate(items, 0x3000)
	if err != nil {
		t.Fatal(err)
	}
	img, err := r.Image(0x3000)
	if err != nil || !bytes.Equal(img, fromCSV) {
		t.Fatalf("image from CSV differs (%v)", err)
	}
	p, _ := nvs.Parse(img)
	if len(p.Records) != 7 || string(p.Records[5].Data) != r.WiFiSSID || string(p.Records[6].Data) != r.WiFiPassword {
		t.Fatalf("records %+v", p.Records)
	}
}
