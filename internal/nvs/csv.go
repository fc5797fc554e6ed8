package nvs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ReadFile reads a `file` row's path; ESP-IDF resolves relative paths against the
// working directory, so the CLI passes os.ReadFile.
type ReadFile func(path string) ([]byte, error)

// ParseCSV reads ESP-IDF's CSV format (header `key,type,encoding,value`; rows of type
// namespace, data or file) the way nvs_partition_gen.py does: lines starting with `#`
// are dropped before CSV parsing, values may be quoted and span lines, and a value is
// converted by its encoding. Errors name the line the row starts on.
func ParseCSV(r io.Reader, readFile ReadFile) ([]Item, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("CSV is not valid UTF-8")
	}
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		return nil, fmt.Errorf("line %d: CSV contains a NUL character", bytes.Count(raw[:i], []byte("\n"))+1)
	}
	recs := csvRecords(universalNewlines(string(raw)))
	if len(recs) == 0 {
		return nil, errors.New("CSV is empty: the header key,type,encoding,value is missing")
	}
	for _, rec := range recs {
		for _, f := range rec.fields {
			if utf8.RuneCountInString(f) > maxField {
				return nil, fmt.Errorf("line %d: field larger than the field limit (%d characters)", rec.line, maxField)
			}
		}
	}
	col := map[string]int{}
	for i, name := range recs[0].fields {
		col[name] = i // a repeated name maps to its last column, as in Python's DictReader
	}
	for _, name := range []string{"key", "type", "encoding", "value"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("line %d: header has no %q column (want key,type,encoding,value)", recs[0].line, name)
		}
	}
	var items []Item
	seenNamespace := false
	for _, rec := range recs[1:] {
		if len(rec.fields) == 0 {
			continue // blank line
		}
		field := func(name string) (string, error) {
			if i := col[name]; i < len(rec.fields) {
				return rec.fields[i], nil
			}
			return "", fmt.Errorf("line %d: row has no %s column", rec.line, name)
		}
		var f [4]string
		for i, name := range []string{"key", "type", "encoding", "value"} {
			if f[i], err = field(name); err != nil {
				return nil, err
			}
		}
		it, err := parseRow(f[0], f[1], f[2], f[3], readFile)
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q: %w", rec.line, f[0], err)
		}
		if !it.Namespace && !seenNamespace {
			return nil, fmt.Errorf("line %d: key %q: data row before any namespace row", rec.line, f[0])
		}
		seenNamespace = seenNamespace || it.Namespace
		it.Line = rec.line
		items = append(items, it)
	}
	return items, nil
}

// maxField is Python's csv.field_size_limit(), which ESP-IDF's generator runs into.
const maxField = 131072

var encodings = map[string]Type{"u8": U8, "i8": I8, "u16": U16, "i16": I16, "u32": U32, "i32": I32, "u64": U64, "i64": I64,
	"string": String, "hex2bin": Blob, "base64": Blob, "binary": Blob}

func parseRow(key, typ, encoding, value string, readFile ReadFile) (Item, error) {
	if len(key) > MaxKeyLen {
		return Item{}, fmt.Errorf("key is %d bytes, at most %d are allowed", len(key), MaxKeyLen)
	}
	it := Item{Key: key}
	var raw []byte
	switch typ {
	case "namespace":
		it.Namespace = true
		return it, nil
	case "data":
		raw = []byte(value)
	case "file":
		if readFile == nil {
			return it, errors.New("file rows are not allowed here")
		}
		b, err := readFile(value)
		if err != nil {
			return it, fmt.Errorf("read file: %w", err)
		}
		raw = b
	default:
		return it, fmt.Errorf("unknown type %q (want namespace, data or file)", typ)
	}
	t, ok := encodings[encoding]
	if !ok {
		return it, fmt.Errorf("unknown encoding %q (want u8, i8, u16, i16, u32, i32, u64, i64, string, hex2bin, base64 or binary)", encoding)
	}
	it.Type = t
	var err error
	switch encoding {
	case "string":
		if !utf8.Valid(raw) {
			return it, errors.New("string file is not valid UTF-8")
		}
		it.Data = raw
	case "binary":
		it.Data = raw
	case "hex2bin":
		h := pyStrip(string(raw), typ == "data")
		if len(h)%2 != 0 {
			return it, errors.New("hex2bin value has an odd number of digits")
		}
		if it.Data, err = hex.DecodeString(h); err != nil {
			return it, errors.New("hex2bin value is not hexadecimal")
		}
	case "base64":
		if typ == "data" && !isASCII(raw) {
			return it, errors.New("base64 value contains non-ASCII characters")
		}
		if it.Data, err = a2bBase64(raw); err != nil {
			return it, err
		}
	default:
		if it.Value, err = parseInt(string(raw), t); err != nil {
			return it, err
		}
		if err := checkRange(t, it.Value); err != nil {
			return it, err
		}
	}
	return it, nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// pyStrip is Python's str.strip() (text) or bytes.strip() (file contents) for the
// whitespace that matters in ASCII input.
func pyStrip(s string, text bool) string {
	cut := " \t\n\r\v\f"
	if text {
		cut += "\x1c\x1d\x1e\x1f\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
	}
	return strings.Trim(s, cut)
}

// parseInt is Python's int(value) for base-10 ASCII input: surrounding whitespace, an
// optional sign, digits with single underscores between them.
func parseInt(s string, t Type) (uint64, error) {
	orig := s
	s = strings.Trim(s, " \t\n\r\v\f\x1c\x1d\x1e\x1f")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	bad := fmt.Errorf("%q is not a decimal integer", orig)
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return 0, bad
	}
	var mag uint64
	overflow := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			continue
		}
		if c < '0' || c > '9' {
			return 0, bad
		}
		d := uint64(c - '0')
		if mag > (1<<64-1-d)/10 {
			overflow = true
		}
		mag = mag*10 + d
	}
	out := fmt.Errorf("value %s is out of range for %v", strings.TrimSpace(orig), t)
	if overflow {
		return 0, out
	}
	if neg {
		if !t.signed() && mag != 0 {
			return 0, out
		}
		if mag > 1<<63 {
			return 0, out
		}
		return uint64(-int64(mag)), nil
	}
	if t.signed() && mag > 1<<63-1 {
		return 0, out
	}
	return mag, nil
}

// a2bBase64 is Python's binascii.a2b_base64 (non-strict): characters outside the
// alphabet are skipped, enough padding ends the data, and a partial quantum is an error.
func a2bBase64(in []byte) ([]byte, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var table [256]byte
	for i := range table {
		table[i] = 0xff
	}
	for i := 0; i < len(alphabet); i++ {
		table[alphabet[i]] = byte(i)
	}
	out := make([]byte, 0, len(in)*3/4)
	quad, pads := 0, 0
	var left byte
	for _, c := range in {
		if c == '=' {
			if quad >= 2 {
				pads++
				if quad+pads >= 4 {
					return out, nil
				}
			}
			continue
		}
		v := table[c]
		if v == 0xff {
			continue
		}
		pads = 0
		switch quad {
		case 0:
			quad, left = 1, v
		case 1:
			quad = 2
			out = append(out, left<<2|v>>4)
			left = v & 0x0f
		case 2:
			quad = 3
			out = append(out, left<<4|v>>2)
			left = v & 0x03
		case 3:
			quad = 0
			out = append(out, left<<6|v)
			left = 0
		}
	}
	switch quad {
	case 0:
		return out, nil
	case 1:
		return nil, errors.New("invalid base64: the number of data characters cannot be 1 more than a multiple of 4")
	}
	return nil, errors.New("invalid base64: incorrect padding")
}

// universalNewlines turns \r\n and lone \r into \n, as Python's text mode does.
func universalNewlines(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

type record struct {
	line   int
	fields []string
}

// csvRecords parses the lines that do not start with '#' with the state machine of
// Python's csv module (excel dialect, strict off).
func csvRecords(text string) []record {
	// Physical lines with their numbers, comments dropped before parsing (so a comment
	// line inside a quoted value is dropped too, as ESP-IDF's filter does).
	type line struct {
		n    int
		text string
	}
	var lines []line
	for n := 1; text != ""; n++ {
		i := strings.IndexByte(text, '\n')
		l := text
		if i >= 0 {
			l, text = text[:i+1], text[i+1:]
		} else {
			text = ""
		}
		if l[0] != '#' {
			lines = append(lines, line{n, l})
		}
	}
	const (
		startRecord = iota
		startField
		inField
		inQuoted
		quoteInQuoted
	)
	var recs []record
	var fields []string
	var field strings.Builder
	state := startRecord
	start := 0
	save := func() { fields = append(fields, field.String()); field.Reset() }
	for _, l := range lines {
		if state == startRecord {
			start = l.n
		}
		for i := 0; i < len(l.text); i++ {
			c := l.text[i]
			switch state {
			case startRecord:
				if c == '\n' {
					recs = append(recs, record{line: start})
					continue
				}
				state = startField
				fallthrough
			case startField:
				switch c {
				case '\n':
					save()
					recs = append(recs, record{line: start, fields: fields})
					fields, state = nil, startRecord
				case '"':
					state = inQuoted
				case ',':
					save()
				default:
					field.WriteByte(c)
					state = inField
				}
			case inField:
				switch c {
				case '\n':
					save()
					recs = append(recs, record{line: start, fields: fields})
					fields, state = nil, startRecord
				case ',':
					save()
					state = startField
				default:
					field.WriteByte(c)
				}
			case inQuoted:
				if c == '"' {
					state = quoteInQuoted
				} else {
					field.WriteByte(c)
				}
			case quoteInQuoted:
				switch c {
				case '"':
					field.WriteByte(c)
					state = inQuoted
				case ',':
					save()
					state = startField
				case '\n':
					save()
					recs = append(recs, record{line: start, fields: fields})
					fields, state = nil, startRecord
				default:
					field.WriteByte(c)
					state = inField
				}
			}
		}
	}
	// End of input without a final newline (or inside a quoted value: non-strict Python
	// keeps what it has).
	if state != startRecord {
		save()
		recs = append(recs, record{line: start, fields: fields})
	}
	return recs
}
