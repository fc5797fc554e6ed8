package nvs_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"github.com/iotsupport/iotsupport/internal/nvs"
)

// fuzzFiles are the only files a fuzzed CSV's file rows can name.
var fuzzFiles = map[string][]byte{
	"a.bin": bytes.Repeat([]byte{0x5a, 0x00, 0xff}, 1700),
	"s.txt": []byte("hello\nworld"),
	"h.hex": []byte(" 0a0b0c \n"),
	"n.txt": []byte("42\n"),
}

func fuzzRead(p string) ([]byte, error) {
	if b, ok := fuzzFiles[p]; ok {
		return b, nil
	}
	return nil, fs.ErrNotExist
}

// roundTrip checks that an accepted image reads back as exactly the items written.
func roundTrip(t *testing.T, items []nvs.Item, img []byte, size int) {
	t.Helper()
	if len(img) != size {
		t.Fatalf("image is %d bytes, want %d", len(img), size)
	}
	p, err := nvs.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Problems) > 0 {
		t.Fatalf("own image has problems: %v", p.Problems)
	}
	sameRecords(t, p.Records, nvs.Records(items))
}

// FuzzCSV: any CSV the reader accepts and the writer fits yields a partition that
// reads back to the same entries.
func FuzzCSV(f *testing.F) {
	for _, name := range []string{"prov.csv", "sample_singlepage_blob.csv"} {
		if b, err := os.ReadFile(vectors + "/" + name); err == nil {
			f.Add(b, uint8(1))
		}
	}
	f.Add([]byte("key,type,encoding,value\nns,namespace,,\nf,file,binary,a.bin\ns,file,string,s.txt\nh,file,hex2bin,h.hex\nn,file,i16,n.txt\n"), uint8(0))
	f.Add([]byte("# c\nkey,type,encoding,value\nns,namespace,,\nq,data,string,\"a,\"\"b\"\"\nc\"\nb,data,base64,QUJD\n"), uint8(0))
	f.Fuzz(func(t *testing.T, csv []byte, pages uint8) {
		size := (3 + int(pages%6)) * nvs.PageSize
		items, err := nvs.ParseCSV(bytes.NewReader(csv), fuzzRead)
		if err != nil {
			return
		}
		img, err := nvs.Generate(items, size)
		if err != nil {
			return
		}
		roundTrip(t, items, img, size)
	})
}

// FuzzGenerate drives the writer with item lists decoded from the input: integers of
// every type, strings and blobs of any size, several namespaces, across page ends.
func FuzzGenerate(f *testing.F) {
	f.Add([]byte{0, 'a', 1, 3, 1, 2, 3, 4, 5, 6, 7, 8, 2, 10, 0, 'x', 3, 0x40, 0x1f}, uint8(2))
	f.Add(bytes.Repeat([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 300), uint8(4))
	f.Add([]byte{3, 0xff, 0x3f, 2, 0xa0, 0x0f, 3, 0x10, 0x00, 0, 'b', 3, 0x00, 0x00}, uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, pages uint8) {
		size := (3 + int(pages%6)) * nvs.PageSize
		items := []nvs.Item{{Namespace: true, Key: "first"}}
		next := func(n int) []byte {
			b := make([]byte, n)
			copy(b, in)
			in = in[min(n, len(in)):]
			return b
		}
		types := []nvs.Type{nvs.U8, nvs.I8, nvs.U16, nvs.I16, nvs.U32, nvs.I32, nvs.U64, nvs.I64}
		for i := 0; len(in) > 0 && i < 2000; i++ {
			op := next(1)[0]
			key := fmt.Sprintf("k%d", i)
			switch op % 4 {
			case 0:
				items = append(items, nvs.Item{Namespace: true, Key: fmt.Sprintf("ns%d", next(1)[0]%8)})
			case 1:
				t := types[next(1)[0]%8]
				v := binary.LittleEndian.Uint64(next(8))
				// Keep the value in its type's range (sign-extended for signed types).
				if w := t; w != nvs.U64 && w != nvs.I64 {
					bits := map[nvs.Type]uint{nvs.U8: 8, nvs.I8: 8, nvs.U16: 16, nvs.I16: 16, nvs.U32: 32, nvs.I32: 32}[w]
					v &= 1<<bits - 1
					if w == nvs.I8 || w == nvs.I16 || w == nvs.I32 {
						v = uint64(int64(v<<(64-bits)) >> (64 - bits))
					}
				}
				items = append(items, nvs.Item{Key: key, Type: t, Value: v})
			case 2:
				n := int(binary.LittleEndian.Uint16(next(2))) % 4100
				items = append(items, nvs.Item{Key: key, Type: nvs.String, Data: bytes.Repeat([]byte{'s'}, n)})
			case 3:
				n := int(binary.LittleEndian.Uint16(next(2))) % 20000
				items = append(items, nvs.Item{Key: key, Type: nvs.Blob, Data: bytes.Repeat([]byte{byte(i), 0xff}, n)[:n]})
			}
		}
		img, err := nvs.Generate(items, size)
		if err != nil {
			return
		}
		roundTrip(t, items, img, size)
	})
}

// FuzzParse: any image, however damaged, is read without panicking.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(vectors + "/sample_singlepage_blob.0x4000.bin"); err == nil {
		f.Add(b)
	}
	f.Add(bytes.Repeat([]byte{0xff}, nvs.PageSize))
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) == 0 || len(img)%nvs.PageSize != 0 {
			img = append(img, bytes.Repeat([]byte{0xff}, nvs.PageSize-len(img)%nvs.PageSize)...)
		}
		p, err := nvs.Parse(img)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := p.Dump(&out); err != nil {
			t.Fatal(err)
		}
	})
}
