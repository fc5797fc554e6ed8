package coredumps

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"strings"

	"github.com/iotsupport/iotsupport/internal/espcore"
)

// Containers: how the dump arrived (ESP-FORMATS §2.1).
const (
	ContainerRaw     = "raw"     // header + data + checksum, as in the flash partition
	ContainerBase64  = "base64"  // the UART text: base64 lines, optionally with markers and log lines
	ContainerELF     = "elf"     // a bare core ELF (esp-coredump --save-core)
	ContainerUnknown = "unknown" // not recognisable as a core dump; stored anyway
)

// Problems found at ingest (the parse_error column). Empty means none.
const (
	ProblemNotCoredump      = "not_a_coredump"
	ProblemErased           = "erased_partition"
	ProblemTruncated        = "truncated"
	ProblemBadLength        = "bad_length"
	ProblemChecksumMismatch = "checksum_mismatch"
	ProblemBadELF           = "bad_elf"
)

// Header is what a cheap look at a dump reveals, without decoding it.
type Header struct {
	Container string
	// Version is the version word: (chip_id << 16) | (major << 8) | minor; 0 when unknown.
	Version uint32
	// Chip is the chip named by the version word's chip id ("" when unknown).
	Chip string
	// ChecksumOK is nil when the dump carries no checksum to verify (bare ELF, UART V1).
	ChecksumOK *bool
	// AppELFSHAPrefix is the hex prefix of the app ELF's SHA-256 from the ESP_CORE_DUMP_INFO
	// note (ELF formats only).
	AppELFSHAPrefix string
	// Recognized: the container and version word are those of an ESP-IDF core dump.
	Recognized bool
	// Problem is one of the Problem* kinds, "" when the header looks sound.
	Problem string
}

// Format is "elf" or "binary" for a recognised version word, "" otherwise.
func (h Header) Format() string { return FormatOf(h.Version) }

// FormatOf names the data format of a version word: major 0 = binary, major 1 = ELF.
func FormatOf(version uint32) string {
	if _, ok := versions[uint16(version)]; !ok {
		return ""
	}
	if version>>8&0xff == 1 {
		return "elf"
	}
	return "binary"
}

type checksumKind int

const (
	noChecksum checksumKind = iota
	crc32Checksum
	sha256Checksum
)

type versionInfo struct {
	headerLen int
	checksum  checksumKind
	optional  bool // V1: UART dumps carry no checksum
	elf       bool
}

// versions maps the low 16 bits of the version word (ESP-FORMATS §2.2).
var versions = map[uint16]versionInfo{
	0x0001: {16, crc32Checksum, true, false},
	0x0002: {20, crc32Checksum, false, false},
	0x0003: {24, crc32Checksum, false, false},
	0x0100: {20, crc32Checksum, false, true},
	0x0101: {20, sha256Checksum, false, true},
	0x0102: {24, crc32Checksum, false, true},
	0x0103: {24, sha256Checksum, false, true},
	0x0104: {12, sha256Checksum, false, true},
}

// chipNames maps the chip id in the version word (esp_chip_id_t) to its name.
var chipNames = map[uint16]string{
	0x0000: "esp32", 0x0002: "esp32s2", 0x0005: "esp32c3", 0x0009: "esp32s3", 0x000C: "esp32c2",
	0x000D: "esp32c6", 0x0010: "esp32h2", 0x0012: "esp32p4", 0x0014: "esp32c61", 0x0017: "esp32c5",
	0x0019: "esp32h21", 0x001C: "esp32h4", 0x0020: "esp32s31",
}

// KnownChip reports whether name (lower case) is an ESP32-family chip.
func KnownChip(name string) bool {
	for _, n := range chipNames {
		if n == name {
			return true
		}
	}
	return false
}

var elfMagic = []byte("\x7fELF")

// Inspect looks at a dump as the device sent it: raw partition bytes, the base64 text
// printed over UART, or a bare core ELF. It never panics and never allocates more than
// about the size of the input.
func Inspect(dump []byte) Header {
	switch {
	case bytes.HasPrefix(dump, elfMagic):
		return inspectELFOnly(dump, ContainerELF)
	case looksRaw(dump):
		return inspectRaw(dump, ContainerRaw)
	case isErased(dump):
		return Header{Container: ContainerRaw, Problem: ProblemErased}
	}
	if decoded, marked := decodeUART(dump); len(decoded) > 0 || marked {
		switch {
		case bytes.HasPrefix(decoded, elfMagic):
			return inspectELFOnly(decoded, ContainerBase64)
		case looksRaw(decoded):
			return inspectRaw(decoded, ContainerBase64)
		case marked:
			// Framed like a UART dump but the content is not one.
			return Header{Container: ContainerBase64, Problem: ProblemNotCoredump}
		}
	}
	return Header{Container: ContainerUnknown, Problem: ProblemNotCoredump}
}

// looksRaw: a known version in bytes 4..8 (esp-coredump's auto-detection, §2.1).
func looksRaw(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	_, ok := versions[uint16(binary.LittleEndian.Uint32(b[4:8]))]
	return ok
}

// isErased: an erased flash partition reads as 0xFF.
func isErased(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	for _, c := range b[:8] {
		if c != 0xff {
			return false
		}
	}
	return true
}

func inspectRaw(b []byte, container string) Header {
	version := binary.LittleEndian.Uint32(b[4:8])
	vi := versions[uint16(version)]
	h := Header{Container: container, Version: version, Chip: chipNames[uint16(version>>16)], Recognized: true}
	if len(b) < vi.headerLen {
		h.Problem = ProblemTruncated
		return h
	}
	dataLen := uint64(binary.LittleEndian.Uint32(b[0:4]))
	csLen := uint64(0)
	switch vi.checksum {
	case crc32Checksum:
		csLen = 4
	case sha256Checksum:
		csLen = 32
	}
	if vi.optional {
		// V1: flash dumps append a CRC that data_len counts; UART dumps have none.
		if dataLen >= uint64(vi.headerLen)+csLen && dataLen <= uint64(len(b)) {
			end := dataLen - csLen
			if crc32.ChecksumIEEE(b[:end]) == binary.LittleEndian.Uint32(b[end:dataLen]) {
				t := true
				h.ChecksumOK = &t
			}
		} else if dataLen > uint64(len(b)) {
			h.Problem = ProblemTruncated
		} else {
			h.Problem = ProblemBadLength
		}
		return h
	}
	switch {
	case dataLen < uint64(vi.headerLen)+csLen:
		h.Problem = ProblemBadLength
		return h
	case dataLen > uint64(len(b)):
		h.Problem = ProblemTruncated
		f := false
		h.ChecksumOK = &f
		return h
	}
	end := dataLen - csLen
	ok := false
	switch vi.checksum {
	case crc32Checksum:
		ok = crc32.ChecksumIEEE(b[:end]) == binary.LittleEndian.Uint32(b[end:dataLen])
	case sha256Checksum:
		sum := sha256.Sum256(b[:end])
		ok = bytes.Equal(sum[:], b[end:dataLen])
	}
	h.ChecksumOK = &ok
	if !ok {
		h.Problem = ProblemChecksumMismatch
	}
	if vi.elf {
		prefix, _, err := elfInfo(b[vi.headerLen:end])
		if err != "" && h.Problem == "" {
			h.Problem = err
		}
		h.AppELFSHAPrefix = prefix
	}
	return h
}

// inspectELFOnly handles a bare core ELF: no header, no checksum; the version word comes
// from the ESP_CORE_DUMP_INFO note.
func inspectELFOnly(b []byte, container string) Header {
	h := Header{Container: container}
	prefix, version, problem := elfInfo(b)
	if problem != "" {
		h.Problem = problem
		return h
	}
	h.AppELFSHAPrefix = prefix
	if _, ok := versions[uint16(version)]; ok {
		h.Version = version
		h.Chip = chipNames[uint16(version>>16)]
	}
	h.Recognized = true
	return h
}

const (
	ntESPInfo    = 8266
	emXtensa     = 0x5e
	emRISCV      = 0xf3
	ptNote       = 4
	elfHeaderLen = 52
	phEntLen     = 32
)

// elfInfo reads a core ELF's ESP_CORE_DUMP_INFO note: the app ELF SHA-256 prefix and the
// version word. problem is ProblemBadELF when the bytes are not a 32-bit little-endian
// ESP core ELF.
func elfInfo(b []byte) (shaPrefix string, version uint32, problem string) {
	le := binary.LittleEndian
	if len(b) < elfHeaderLen || !bytes.HasPrefix(b, elfMagic) || b[4] != 1 || b[5] != 1 {
		return "", 0, ProblemBadELF
	}
	if typ, mach := le.Uint16(b[16:18]), le.Uint16(b[18:20]); typ != 4 || (mach != emXtensa && mach != emRISCV) {
		return "", 0, ProblemBadELF
	}
	phoff, phentsize, phnum := uint64(le.Uint32(b[28:32])), uint64(le.Uint16(b[42:44])), uint64(le.Uint16(b[44:46]))
	if phentsize < phEntLen || phoff+phentsize*phnum > uint64(len(b)) {
		return "", 0, ProblemBadELF
	}
	for i := uint64(0); i < phnum; i++ {
		ph := b[phoff+i*phentsize:]
		if le.Uint32(ph[0:4]) != ptNote {
			continue
		}
		off, size := uint64(le.Uint32(ph[4:8])), uint64(le.Uint32(ph[16:20]))
		if off+size > uint64(len(b)) {
			return "", 0, ProblemBadELF
		}
		notes := b[off : off+size]
		for len(notes) >= 12 {
			namesz, descsz, typ := uint64(le.Uint32(notes[0:4])), uint64(le.Uint32(notes[4:8])), le.Uint32(notes[8:12])
			nameEnd := 12 + align4(namesz)
			descEnd := nameEnd + align4(descsz)
			if nameEnd > uint64(len(notes)) || descEnd > uint64(len(notes)) || 12+namesz > uint64(len(notes)) || nameEnd+descsz > uint64(len(notes)) {
				break
			}
			name := notes[12 : 12+namesz]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			desc := notes[nameEnd : nameEnd+descsz]
			if typ == ntESPInfo && string(name) == "ESP_CORE_DUMP_INFO" && len(desc) >= 4 {
				return hexPrefix(desc[4:]), le.Uint32(desc[0:4]), ""
			}
			notes = notes[descEnd:]
		}
	}
	return "", 0, ""
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// hexPrefix returns the NUL-terminated lower-case hex string at the start of b, at most 64 characters.
func hexPrefix(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) > 64 {
		b = b[:64]
	}
	s := strings.ToLower(string(b))
	if _, err := hex.DecodeString(s + strings.Repeat("0", len(s)%2)); err != nil {
		return ""
	}
	return s
}

const (
	markerStart = "CORE DUMP START"
	markerEnd   = "CORE DUMP END"
)

// decodeUART decodes the text a device prints over UART, line by line (every write is
// encoded separately, so the joined text is not one base64 string). With the
// CORE DUMP START/END markers only the lines between them count; without them every line
// that is valid base64 does. Log lines and anything else are skipped. marked reports
// whether a start marker was seen.
func decodeUART(text []byte) (out []byte, marked bool) {
	if !isText(text) {
		return nil, false
	}
	inside := !bytes.Contains(text, []byte(markerStart))
	marked = !inside
	for len(text) > 0 {
		var line []byte
		line, text = espcore.NextLine(text)
		line = bytes.TrimSpace(line)
		switch {
		case len(line) == 0:
			continue
		case bytes.Contains(line, []byte(markerStart)):
			inside = true
			out = out[:0] // a later dump in the same capture wins
			continue
		case bytes.Contains(line, []byte(markerEnd)):
			if marked {
				return out, true
			}
			continue
		case !inside:
			continue
		}
		if d, ok := decodeLine(line); ok {
			out = append(out, d...)
		}
	}
	return out, marked
}

// decodeLine: padding may end pieces mid-line (lines joined without their ends).
func decodeLine(line []byte) ([]byte, bool) { return espcore.DecodeBase64Line(line, true) }

// isText: no control characters other than whitespace and ESC (log colours), so binary
// data is not scanned line by line; UTF-8 in log lines is fine.
func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != 0x1b {
			return false
		}
	}
	return len(b) > 0
}
