package nvs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/nvs"
)

// vectors is ESP-IDF's generator output for the CSVs beside it (never copied here).
const vectors = "../../../shared/testdata/nvs"

// readIn resolves file rows against dir, as nvs_partition_gen.py run from dir does.
func readIn(dir string) nvs.ReadFile {
	return func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return os.ReadFile(p)
	}
}

func generate(t *testing.T, csv string, size int) ([]byte, error) {
	t.Helper()
	items, err := nvs.ParseCSV(strings.NewReader(csv), readIn(vectors))
	if err != nil {
		return nil, err
	}
	return nvs.Generate(items, size)
}

func TestGenerateIsByteIdenticalToESPIDF(t *testing.T) {
	bins, _ := filepath.Glob(filepath.Join(vectors, "*.bin"))
	if len(bins) < 2 {
		t.Fatalf("shared NVS vectors missing in %s", vectors)
	}
	for _, bin := range bins {
		name := filepath.Base(bin)
		t.Run(name, func(t *testing.T) {
			parts := strings.Split(name, ".") // NAME.SIZE.bin
			size, err := strconv.ParseInt(parts[1], 0, 64)
			if err != nil {
				t.Fatal(err)
			}
			csv, err := os.ReadFile(filepath.Join(vectors, parts[0]+".csv"))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(bin)
			got, err := generate(t, string(csv), int(size))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("image is %d bytes, ESP-IDF wrote %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("first difference at %#x (page %d, byte %d): got %02x, ESP-IDF %02x", i, i/4096, i%4096, got[i], want[i])
				}
			}
		})
	}
}

func TestParseReadsESPIDFImages(t *testing.T) {
	img, err := os.ReadFile(filepath.Join(vectors, "prov.0x3000.bin"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := nvs.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.Records {
		got = append(got, r.Namespace+"/"+r.Key+"="+r.Format())
	}
	want := []string{`prov/device_key="abcd2345"`, `prov/device_secret="Zx8Qm3VtR9kPw2LbN7cJ4hYs"`, `prov/base_url="https://iot.example.net"`,
		`prov/mqtt_url="mqtts://mqtt.example.net:8883"`, `prov/wifi_ssid="FactoryNet"`, `prov/wifi_password="correct horse battery staple"`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(p.Problems) != 0 || len(p.Namespaces) != 1 {
		t.Fatalf("records:\n%s\nproblems %v", strings.Join(got, "\n"), p.Problems)
	}

	// ESP-IDF's sample: every integer type, a multi-line string, blobs from hex, base64
	// and files, one of them (5120 bytes) split over pages.
	img, _ = os.ReadFile(filepath.Join(vectors, "sample_singlepage_blob.0x4000.bin"))
	p, err = nvs.Parse(img)
	if err != nil || len(p.Problems) != 0 {
		t.Fatalf("%v %v", err, p.Problems)
	}
	csv, _ := os.ReadFile(filepath.Join(vectors, "sample_singlepage_blob.csv"))
	items, err := nvs.ParseCSV(bytes.NewReader(csv), readIn(vectors))
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, p.Records, nvs.Records(items))
	byKey := map[string]nvs.Record{}
	for _, r := range p.Records {
		byKey[r.Key] = r
	}
	if r := byKey["dummyI32Key"]; r.Type != nvs.I32 || int64(r.Value) != -2147483648 {
		t.Fatalf("i32: %+v", r)
	}
	if r := byKey["dummyStringKey"]; !strings.HasPrefix(string(r.Data), "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\nFusce") {
		t.Fatalf("multi-line string: %q", r.Data)
	}
	if r := byKey["dummyBase64Key"]; string(r.Data) != "123abc" {
		t.Fatalf("base64: %q", r.Data)
	}
	multi, _ := os.ReadFile(filepath.Join(vectors, "testdata/sample_singlepage_blob.bin"))
	if r := byKey["binFileKey"]; !bytes.Equal(r.Data, multi) || r.Type != nvs.Blob {
		t.Fatalf("file blob: %d bytes, want %d", len(r.Data), len(multi))
	}
}

func sameRecords(t *testing.T, got, want []nvs.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records read back, %d written", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Namespace != w.Namespace || g.Key != w.Key || g.Type != w.Type || g.Value != w.Value || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("record %d: read %+v, wrote %+v", i, g, w)
		}
	}
}

func TestGenerateRefusesWhatESPIDFRefuses(t *testing.T) {
	head := "key,type,encoding,value\nns,namespace,,\n"
	many := head
	for i := 0; i < 260; i++ {
		many += "k" + strconv.Itoa(i) + ",data,u8,1\n"
	}
	cases := []struct {
		name, csv string
		size      int
		want      string
	}{
		{"size not a multiple of 4096", head, 0x3001, "multiple of 4096"},
		{"size below 0x3000", head, 0x2000, "minimum"},
		{"data larger than the partition", head + "big,data,hex2bin," + strings.Repeat("ab", 9000) + "\n", 0x3000, "line 3: key \"big\": data does not fit"},
		{"entries beyond one page", many, 0x3000, "line 254: key \"k251\": data does not fit"},
		{"key over 15 characters", head + "sixteen_chars_xx,data,u8,1\n", 0x3000, "line 3: key \"sixteen_chars_xx\": key is 16 bytes"},
		{"namespace over 15 characters", "key,type,encoding,value\nsixteen_chars_xx,namespace,,\n", 0x3000, "line 2:"},
		{"string over 4000 bytes", head + "s,data,string," + strings.Repeat("x", 4000) + "\n", 0x6000, "line 3: key \"s\": string is 4001 bytes"},
		{"string that fits no page", head + "s,data,string," + strings.Repeat("x", 3990) + "\n", 0x6000, "line 3: key \"s\": string of 3991 bytes does not fit in one page"},
		{"unknown type", head + "k,blob,u8,1\n", 0x3000, "line 3: key \"k\": unknown type \"blob\""},
		{"unknown encoding", head + "k,data,float,1.5\n", 0x3000, "line 3: key \"k\": unknown encoding \"float\""},
		{"u8 above range", head + "k,data,u8,256\n", 0x3000, "line 3: key \"k\": value 256 is out of range for u8"},
		{"i8 below range", head + "k,data,i8,-129\n", 0x3000, "out of range for i8"},
		{"u16 negative", head + "k,data,u16,-1\n", 0x3000, "out of range for u16"},
		{"i64 above range", head + "k,data,i64,9223372036854775808\n", 0x3000, "out of range for i64"},
		{"u64 above range", head + "k,data,u64,18446744073709551616\n", 0x3000, "out of range for u64"},
		{"not a number", head + "k,data,u32,0x10\n", 0x3000, "line 3: key \"k\": \"0x10\" is not a decimal integer"},
		{"odd hex", head + "k,data,hex2bin,abc\n", 0x3000, "odd number of digits"},
		{"bad base64 padding", head + "k,data,base64,QUJ\n", 0x3000, "line 3: key \"k\": invalid base64"},
		{"data before any namespace", "key,type,encoding,value\nk,data,u8,1\nns,namespace,,\n", 0x3000, "line 2: key \"k\": data row before any namespace"},
		{"missing file", head + "f,file,binary,testdata/nope.bin\n", 0x3000, "line 3: key \"f\": read file"},
		{"missing header", "", 0x3000, "header"},
		{"row without value column", head + "k,data,u8\n", 0x3000, "line 3: row has no value column"},
		// Line numbers count physical lines: comments and quoted newlines included.
		{"line after a multi-line value", "# comment\n" + head + "m,data,string,\"a\nb\"\nk,data,u8,300\n", 0x3000, "line 6: key \"k\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := generate(t, c.csv, c.size)
			if err == nil {
				t.Fatalf("accepted (%d bytes)", len(img))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

func TestCSVAcceptsWhatESPIDFAccepts(t *testing.T) {
	csv := "# provisioning\r\nkey,type,encoding,value\r\nns,namespace,,\r\n" +
		"q,data,string,\"say \"\"hi\"\", then, a comma\"\r\n" +
		"\r\n" +
		"n,data,i32, -1_000 \r\n" +
		"h,data,hex2bin,  0aFF  \r\n" +
		"b,data,base64,QU*JD\n" + // Python skips characters outside the alphabet
		"last,data,u8,7" // no final newline
	items, err := nvs.ParseCSV(strings.NewReader(csv), nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := nvs.Generate(items, 0x3000)
	if err != nil {
		t.Fatal(err)
	}
	p, err := nvs.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.Records {
		got = append(got, r.Key+"="+r.Format())
	}
	want := `q="say \"hi\", then, a comma" n=-1000 h=2 bytes 0aff b=3 bytes 414243 last=7`
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	if items[len(items)-1].Line != 9 {
		t.Fatalf("last row on line %d, want 9", items[len(items)-1].Line)
	}
}

func TestParseReportsDamage(t *testing.T) {
	img, _ := os.ReadFile(filepath.Join(vectors, "prov.0x3000.bin"))
	img = append([]byte(nil), img...)
	img[0x40+0x20*4+3] ^= 0xff // a byte of device_secret's value: its data CRC no longer matches
	p, err := nvs.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != 5 || len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "CRC mismatch") {
		t.Fatalf("records %d, problems %v", len(p.Records), p.Problems)
	}
	if _, err := nvs.Parse(img[:100]); err == nil {
		t.Fatal("a partial page was accepted")
	}
}
