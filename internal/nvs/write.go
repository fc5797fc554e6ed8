package nvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrNoSpace is returned (wrapped) when the items do not fit the partition size.
var ErrNoSpace = errors.New("data does not fit")

// CheckSize refuses a partition size ESP-IDF's generator refuses.
func CheckSize(size int) error {
	if size%PageSize != 0 || size <= 0 {
		return fmt.Errorf("partition size %d (%#x) must be a positive multiple of 4096", size, size)
	}
	if size < MinSize {
		return fmt.Errorf("partition size %#x is below the minimum NVS partition size 0x3000", size)
	}
	return nil
}

// page is one 4096-byte page being filled.
type page struct {
	buf   []byte
	entry int // next free entry
}

// writer fills pages the way nvs_partition_gen.py does, so the bytes match.
type writer struct {
	pages  []*page
	cur    *page
	budget int // bytes left for pages, without the reserved last page
	ns     int // namespaces written; the current one's index
	line   int // line of the item being written, for errors
}

// Generate writes items into an NVS partition image of size bytes, byte-identical to
// `nvs_partition_gen.py generate` (format version 2) for the same rows. Every error
// names the item's CSV line when it has one.
func Generate(items []Item, size int) ([]byte, error) {
	if err := CheckSize(size); err != nil {
		return nil, err
	}
	w := &writer{budget: size - PageSize}
	if err := w.newPage(); err != nil {
		return nil, err
	}
	for _, it := range items {
		w.line = it.Line
		if err := w.write(it); err != nil {
			if it.Line > 0 {
				return nil, fmt.Errorf("line %d: key %q: %w", it.Line, it.Key, err)
			}
			return nil, fmt.Errorf("key %q: %w", it.Key, err)
		}
	}
	// The remaining pages get headers and every page is marked full, as the generator
	// does; the last page stays erased (the device's reserved page).
	for w.newPage() == nil {
	}
	out := make([]byte, 0, size)
	for _, p := range w.pages {
		out = append(out, p.buf...)
	}
	return append(out, erased(PageSize)...), nil
}

func erased(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0xff
	}
	return b
}

// newPage marks the current page full and starts the next one.
func (w *writer) newPage() error {
	if w.cur != nil && binary.LittleEndian.Uint32(w.cur.buf) == stateActive {
		binary.LittleEndian.PutUint32(w.cur.buf, stateFull)
	}
	if w.budget == 0 {
		return fmt.Errorf("%w in the partition: increase the partition size", ErrNoSpace)
	}
	w.budget -= PageSize
	p := &page{buf: erased(PageSize)}
	binary.LittleEndian.PutUint32(p.buf[0:], stateActive)
	binary.LittleEndian.PutUint32(p.buf[4:], uint32(len(w.pages)))
	p.buf[8] = version2
	binary.LittleEndian.PutUint32(p.buf[28:], crc(p.buf[4:28]))
	w.pages = append(w.pages, p)
	w.cur = p
	return nil
}

// put copies data into the page at its next entry and marks n entries written.
func (p *page) put(data []byte, n int) {
	copy(p.buf[firstEntry+entrySize*p.entry:], data)
	for ; n > 0; n-- {
		bit := p.entry * 2
		p.buf[32+bit/8] &^= 1 << (bit % 8)
		p.entry++
	}
}

// header returns a fresh entry: erased, with namespace, type, span, chunk and key set.
func header(ns int, t Type, span, chunk byte, key string) []byte {
	e := erased(entrySize)
	e[0], e[1], e[2], e[3] = byte(ns), byte(t), span, chunk
	clear(e[8:24])
	copy(e[8:24], key)
	return e
}

func (w *writer) write(it Item) error {
	if len(it.Key) > MaxKeyLen {
		return fmt.Errorf("key is %d bytes, at most %d are allowed", len(it.Key), MaxKeyLen)
	}
	if !utf8.ValidString(it.Key) {
		return fmt.Errorf("key is not valid UTF-8")
	}
	if it.Namespace {
		// The device reserves index 255 (any namespace).
		if w.ns >= 254 {
			return fmt.Errorf("more than 254 namespaces")
		}
		w.ns++
		return w.primitive(0, it.Key, U8, uint64(w.ns))
	}
	if w.ns == 0 {
		return fmt.Errorf("data before any namespace row")
	}
	switch {
	case it.Type.width() > 0:
		return w.primitive(w.ns, it.Key, it.Type, it.Value)
	case it.Type == String:
		return w.str(it.Key, it.Data)
	case it.Type == Blob:
		return w.blob(it.Key, it.Data)
	}
	return fmt.Errorf("cannot write %v", it.Type)
}

func (w *writer) primitive(ns int, key string, t Type, v uint64) error {
	if err := checkRange(t, v); err != nil {
		return err
	}
	if w.cur.entry >= entriesPerPage {
		if err := w.newPage(); err != nil {
			return err
		}
	}
	e := header(ns, t, 1, chunkAny, key)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	copy(e[24:], b[:t.width()])
	binary.LittleEndian.PutUint32(e[4:], entryCRC(e))
	w.cur.put(e, 1)
	return nil
}

// checkRange refuses a value its type cannot hold (ESP-IDF's struct.pack fails on it).
func checkRange(t Type, v uint64) error {
	bits := uint(t.width() * 8)
	if bits == 64 {
		return nil
	}
	if t.signed() {
		s := int64(v)
		lo, hi := -(int64(1) << (bits - 1)), int64(1)<<(bits-1)-1
		if s < lo || s > hi {
			return fmt.Errorf("value %d is out of range for %v (%d..%d)", s, t, lo, hi)
		}
		return nil
	}
	if v > uint64(1)<<bits-1 {
		return fmt.Errorf("value %d is out of range for %v (0..%d)", v, t, uint64(1)<<bits-1)
	}
	return nil
}

func entriesFor(n int) int { return (n + entrySize - 1) / entrySize }

// str writes a NUL-terminated string into one page (strings never span pages).
func (w *writer) str(key string, s []byte) error {
	data := append(append([]byte{}, s...), 0)
	if len(data) > MaxStringLen {
		return fmt.Errorf("string is %d bytes with its NUL, at most %d are allowed", len(data), MaxStringLen)
	}
	n := entriesFor(len(data))
	if w.cur.entry+n+1 >= entriesPerPage {
		if err := w.newPage(); err != nil {
			return err
		}
		if n+1 >= entriesPerPage {
			return fmt.Errorf("string of %d bytes does not fit in one page (at most %d bytes with its NUL)", len(data), (entriesPerPage-2)*entrySize)
		}
	}
	e := header(w.ns, String, byte(n+1), chunkAny, key)
	binary.LittleEndian.PutUint16(e[24:], uint16(len(data)))
	binary.LittleEndian.PutUint32(e[28:], crc(data))
	binary.LittleEndian.PutUint32(e[4:], entryCRC(e))
	w.cur.put(e, 1)
	w.cur.put(data, n)
	return nil
}

// blob writes data as chunks filling each page's free entries, then the index entry.
func (w *writer) blob(key string, data []byte) error {
	if w.cur.entry >= entriesPerPage {
		if err := w.newPage(); err != nil {
			return err
		}
	}
	chunks, off := 0, 0
	for {
		tailroom := (entriesPerPage - w.cur.entry - 1) * entrySize
		size := min(tailroom, len(data)-off)
		n := entriesFor(size)
		e := header(w.ns, BlobData, byte(n+1), byte(chunks), key)
		chunk := data[off : off+size]
		binary.LittleEndian.PutUint16(e[24:], uint16(size))
		binary.LittleEndian.PutUint32(e[28:], crc(chunk))
		binary.LittleEndian.PutUint32(e[4:], entryCRC(e))
		w.cur.put(e, 1)
		w.cur.put(chunk, n)
		chunks++
		off += size
		// A page is left once the chunk filled it, even when only the index remains.
		if off < len(data) || tailroom-size < entrySize {
			if err := w.newPage(); err != nil {
				return err
			}
		}
		if off == len(data) {
			break
		}
	}
	if chunks > 255 {
		return fmt.Errorf("blob of %d bytes needs more than 255 chunks", len(data))
	}
	e := header(w.ns, BlobIndex, 1, chunkAny, key)
	binary.LittleEndian.PutUint32(e[24:], uint32(len(data)))
	e[28], e[29] = byte(chunks), 0
	binary.LittleEndian.PutUint32(e[4:], entryCRC(e))
	w.cur.put(e, 1)
	return nil
}

// ParseSize reads a partition size the way nvs_partition_gen.py does (Python's
// int(s, 0)): decimal, 0x hex, 0o octal or 0b binary, underscores between digits.
func ParseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	digits := strings.TrimLeft(t, "+-")
	// Python refuses a decimal with a leading zero ("012"); Go would read it as octal.
	if len(digits) > 1 && digits[0] == '0' && !strings.ContainsAny(digits[1:2], "xXoObB") && strings.Trim(digits, "0_") != "" {
		return 0, fmt.Errorf("partition size %q is not a number", s)
	}
	n, err := strconv.ParseInt(t, 0, 64)
	if err != nil || n > 1<<40 {
		return 0, fmt.Errorf("partition size %q is not a number (e.g. 0x3000 or 12288)", s)
	}
	return int(n), nil
}
