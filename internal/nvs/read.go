package nvs

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// Record is one value found in a partition.
type Record struct {
	Namespace string
	Key       string
	// Type is the value's type; multi-page blobs are reported as Blob.
	Type  Type
	Value uint64 // integers, sign-extended for signed types
	Data  []byte // strings without their NUL, blobs
}

// Partition is what a partition image holds.
type Partition struct {
	// Namespaces in the order they were defined.
	Namespaces []string
	// Records in flash order (a blob where its index entry is).
	Records []Record
	// Problems are entries or pages that were skipped (bad CRC, unknown type, …).
	Problems []string
}

const (
	entryEmpty   = 3
	entryWritten = 2
)

// Parse reads a partition image. Damaged pages and entries are skipped and reported
// in Problems; only an image that is not made of whole pages is an error.
func Parse(img []byte) (*Partition, error) {
	if len(img) == 0 || len(img)%PageSize != 0 {
		return nil, fmt.Errorf("partition image is %d bytes, not a whole number of 4096-byte pages", len(img))
	}
	p := &Partition{}
	type pg struct {
		n   int
		seq uint32
		buf []byte
	}
	var pages []pg
	for n := 0; n < len(img)/PageSize; n++ {
		buf := img[n*PageSize : (n+1)*PageSize]
		switch state := binary.LittleEndian.Uint32(buf); state {
		case 0xffffffff: // erased
			continue
		case stateActive, stateFull, 0xfffffff8: // active, full, freeing
		default:
			p.problem("page %d: state %#08x, skipped", n, state)
			continue
		}
		if got := crc(buf[4:28]); got != binary.LittleEndian.Uint32(buf[28:]) {
			p.problem("page %d: header CRC mismatch, skipped", n)
			continue
		}
		if buf[8] != version2 && buf[8] != 0xff {
			p.problem("page %d: unknown format version %#02x, skipped", n, buf[8])
			continue
		}
		pages = append(pages, pg{n, binary.LittleEndian.Uint32(buf[4:]), buf})
	}
	sort.SliceStable(pages, func(i, j int) bool { return pages[i].seq < pages[j].seq })

	type chunkKey struct {
		ns    byte
		key   string
		index byte
	}
	type pending struct {
		ns  byte
		rec Record
	}
	chunks := map[chunkKey][]byte{}
	names := map[byte]string{}
	var recs []pending
	for _, pgi := range pages {
		buf := pgi.buf
		for i := 0; i < entriesPerPage; {
			if st := buf[32+i/4] >> (2 * (i % 4)) & 3; st != entryWritten {
				i++
				continue
			}
			e := buf[firstEntry+i*entrySize : firstEntry+(i+1)*entrySize]
			at := fmt.Sprintf("page %d entry %d", pgi.n, i)
			if entryCRC(e) != binary.LittleEndian.Uint32(e[4:]) {
				p.problem("%s: entry CRC mismatch, skipped", at)
				i++
				continue
			}
			span := int(e[2])
			if span < 1 || i+span > entriesPerPage {
				p.problem("%s: span %d does not fit the page, skipped", at, span)
				i++
				continue
			}
			ns, t := e[0], Type(e[1])
			key := cString(e[8:24])
			body := buf[firstEntry+(i+1)*entrySize : firstEntry+(i+span)*entrySize]
			i += span
			switch {
			case t.width() > 0:
				v := uint64(0)
				var b [8]byte
				copy(b[:], e[24:24+t.width()])
				v = binary.LittleEndian.Uint64(b[:])
				if t.signed() {
					shift := 64 - 8*uint(t.width())
					v = uint64(int64(v<<shift) >> shift)
				}
				if ns == 0 && t == U8 {
					if _, dup := names[byte(v)]; !dup {
						p.Namespaces = append(p.Namespaces, key)
					}
					names[byte(v)] = key
					continue
				}
				recs = append(recs, pending{ns, Record{Key: key, Type: t, Value: v}})
			case t == String || t == Blob || t == BlobData:
				size := int(binary.LittleEndian.Uint16(e[24:]))
				if size > len(body) {
					p.problem("%s: %v of %d bytes exceeds its %d entries, skipped", at, t, size, span-1)
					continue
				}
				data := body[:size]
				if crc(data) != binary.LittleEndian.Uint32(e[28:]) {
					p.problem("%s: %v data CRC mismatch, skipped", at, t)
					continue
				}
				data = append([]byte(nil), data...)
				switch t {
				case BlobData:
					chunks[chunkKey{ns, key, e[3]}] = data
				case String:
					if len(data) > 0 && data[len(data)-1] == 0 {
						data = data[:len(data)-1]
					}
					recs = append(recs, pending{ns, Record{Key: key, Type: String, Data: data}})
				default:
					recs = append(recs, pending{ns, Record{Key: key, Type: Blob, Data: data}})
				}
			case t == BlobIndex:
				size := int(binary.LittleEndian.Uint32(e[24:]))
				count, start := int(e[28]), int(e[29])
				var data []byte
				ok := true
				for c := start; c < start+count; c++ {
					ck := chunkKey{ns, key, byte(c)}
					d, found := chunks[ck]
					if !found || c > 255 {
						ok = false
						break
					}
					data = append(data, d...)
					delete(chunks, ck)
				}
				if !ok || len(data) != size {
					p.problem("%s: blob %q misses chunks or has the wrong size, skipped", at, key)
					continue
				}
				if data == nil {
					data = []byte{}
				}
				recs = append(recs, pending{ns, Record{Key: key, Type: Blob, Data: data}})
			default:
				p.problem("%s: unknown %v, skipped", at, t)
			}
		}
	}
	for _, r := range recs {
		name, ok := names[r.ns]
		if !ok {
			name = "#" + strconv.Itoa(int(r.ns))
		}
		r.rec.Namespace = name
		p.Records = append(p.Records, r.rec)
	}
	return p, nil
}

func (p *Partition) problem(format string, args ...any) {
	p.Problems = append(p.Problems, fmt.Sprintf(format, args...))
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Dump writes the partition's namespaces and values, one per line, for people.
func (p *Partition) Dump(w io.Writer) error {
	var err error
	printf := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, args...)
		}
	}
	byNS := map[string][]Record{}
	order := append([]string(nil), p.Namespaces...)
	for _, r := range p.Records {
		if _, known := byNS[r.Namespace]; !known && !contains(order, r.Namespace) {
			order = append(order, r.Namespace)
		}
		byNS[r.Namespace] = append(byNS[r.Namespace], r)
	}
	for _, ns := range order {
		printf("namespace %s\n", ns)
		for _, r := range byNS[ns] {
			printf("  %-15s %-6v %s\n", r.Key, r.Type, r.Format())
		}
	}
	for _, pr := range p.Problems {
		printf("problem: %s\n", pr)
	}
	return err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Format is the record's value as text: a number, a quoted string, or a blob's size and hex.
func (r Record) Format() string {
	switch {
	case r.Type.width() > 0 && r.Type.signed():
		return strconv.FormatInt(int64(r.Value), 10)
	case r.Type.width() > 0:
		return strconv.FormatUint(r.Value, 10)
	case r.Type == String:
		return strconv.Quote(string(r.Data))
	}
	return fmt.Sprintf("%d bytes %s", len(r.Data), hex.EncodeToString(r.Data))
}

// Records returns the values items define, in order, as Parse reports them.
func Records(items []Item) []Record {
	var out []Record
	ns := ""
	for _, it := range items {
		if it.Namespace {
			ns = it.Key
			continue
		}
		r := Record{Namespace: ns, Key: it.Key, Type: it.Type, Value: it.Value}
		if it.Type == String || it.Type == Blob {
			r.Data = append([]byte{}, it.Data...)
		}
		out = append(out, r)
	}
	return out
}
