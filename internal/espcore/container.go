package espcore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
)

// Limits for untrusted input.
const (
	maxInput    = 64 << 20
	maxThreads  = 256
	maxSegments = 4096
	maxFrames   = 128
)

// errUnknownVersion marks a dump whose version word this decoder does not know.
var errUnknownVersion = errors.New("unknown core dump version word")

// container is the result of unwrapping the input down to the dump body.
type container struct {
	hdr      Header
	hasHdr   bool   // false for a bare ELF core (no header, no checksum)
	elfCore  []byte // core ELF (ELF formats or bare ELF)
	binBody  []byte // binary format body after the header
	tasksNum uint32
	tcbSz    uint32
	segsNum  uint32
	checksum ChecksumStatus
	warnings []string
}

// ChecksumStatus reports the verification of the dump checksum.
type ChecksumStatus struct {
	Kind     string `json:"kind"` // crc32, sha256, none
	OK       bool   `json:"ok"`
	Stored   string `json:"stored,omitempty"`
	Computed string `json:"computed,omitempty"`
}

func le32(b []byte, off int) uint32 {
	if off < 0 || off+4 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint32(b[off:])
}

const (
	markerStart = "CORE DUMP START"
	markerEnd   = "CORE DUMP END"
)

// decodeUART decodes the text a device prints over UART, line by line: every device
// write is encoded separately, so the text cannot be decoded as one string. With the
// CORE DUMP START/END markers only the lines between them count; without them every
// line that is valid base64 does. Log lines and anything else are skipped. marked
// reports whether a start marker was seen.
func decodeUART(text []byte) (out []byte, marked bool) {
	if !isText(text) {
		return nil, false
	}
	inside := !bytes.Contains(text, []byte(markerStart))
	marked = !inside
	for len(text) > 0 && len(out) <= maxInput {
		var line []byte
		line, text = NextLine(text)
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
		// Padding may end pieces mid-line (lines joined without their ends).
		if d, ok := DecodeBase64Line(line, true); ok {
			out = append(out, d...)
		}
	}
	return out, marked
}

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

// NextLine cuts text at the first line end: LF, CRLF or a lone CR (terminal
// captures keep the device's CR and may drop the LF).
func NextLine(text []byte) (line, rest []byte) {
	i := bytes.IndexAny(text, "\r\n")
	if i < 0 {
		return text, nil
	}
	line, rest = text[:i], text[i+1:]
	if text[i] == '\r' && len(rest) > 0 && rest[0] == '\n' {
		rest = rest[1:]
	}
	return line, rest
}

// DecodeBase64Line decodes one line of a UART dump. ESP-IDF encodes every
// write (at most 48 bytes) on its own, so '=' padding ends each piece; lines
// that were joined without their line ends keep that padding in the middle,
// and each padded piece is decoded by itself. unpadded accepts a last piece
// without padding. ok is false for anything that is not such base64.
func DecodeBase64Line(line []byte, unpadded bool) ([]byte, bool) {
	if len(line) == 0 || !isB64(line) {
		return nil, false
	}
	out := make([]byte, 0, len(line)/4*3+3) // room for an unpadded last piece
	for len(line) > 0 {
		end := len(line)
		if i := bytes.IndexByte(line, '='); i >= 0 {
			end = i
			for end < len(line) && line[end] == '=' {
				end++
			}
		}
		piece := line[:end]
		line = line[end:]
		enc := base64.StdEncoding
		if len(piece)%4 != 0 {
			if !unpadded || len(line) > 0 {
				return nil, false
			}
			enc = base64.RawStdEncoding
		}
		n := len(out)
		out = out[:n+enc.DecodedLen(len(piece))]
		m, err := enc.Decode(out[n:], piece)
		if err != nil {
			return nil, false
		}
		out = out[:n+m]
	}
	return out, true
}

func isB64(l []byte) bool {
	for _, c := range l {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}

var elfMagic = []byte("\x7fELF")

// looksRaw: a known version in bytes 4..8 (esp-coredump's auto-detection, §2.1). The
// chip id is not checked: a dump of a chip newer than the table is still a dump.
func looksRaw(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	_, ok := versions[uint16(le32(b, 4))]
	return ok
}

// isErased: an erased flash partition reads as 0xFF.
func isErased(b []byte) bool {
	return len(b) >= 8 && bytes.Equal(b[:8], bytes.Repeat([]byte{0xff}, 8))
}

// unwrap detects the input kind, strips header and checksum and fills in the header
// summary. An error means the decoder cannot try the dump; c.hdr.ProblemKind is then
// set too.
func unwrap(dump []byte) (*container, error) {
	if len(dump) > maxInput {
		dump = dump[:maxInput]
	}
	c := &container{}
	err := c.unwrap(dump)
	c.hdr.ChecksumKind, c.hdr.ChecksumOK = c.checksum.Kind, c.checksum.OK
	if c.elfCore != nil && c.hdr.Recognized {
		if ni, ok := scanInfoNote(c.elfCore); ok {
			c.hdr.AppELFSHAPrefix = ni.sha
			if !c.hasHdr {
				// Bare ELF core: the version word comes from the info note.
				c.setVersion(ni.version)
			}
		}
	}
	return c, err
}

func (c *container) unwrap(dump []byte) error {
	switch {
	case bytes.HasPrefix(dump, elfMagic):
		c.hdr.Kind = KindELF
		return c.bareELF(dump)
	case looksRaw(dump):
		c.hdr.Kind = KindRaw
		return c.parseRaw(dump)
	case isErased(dump):
		c.hdr.Kind, c.hdr.ProblemKind = KindRaw, ProblemErased
		return fmt.Errorf("espcore: erased core dump partition (reads 0xFF)")
	}
	raw, marked := decodeUART(dump)
	if len(raw) == 0 && !marked {
		c.hdr.Kind, c.hdr.ProblemKind = KindUnknown, ProblemNotCoredump
		return fmt.Errorf("espcore: input is neither a core ELF, a raw dump nor base64 text")
	}
	c.hdr.Kind = KindBase64
	switch {
	case bytes.HasPrefix(raw, elfMagic):
		return c.bareELF(raw)
	case looksRaw(raw):
		return c.parseRaw(raw)
	}
	c.hdr.ProblemKind = ProblemNotCoredump
	if len(raw) < 8 {
		return fmt.Errorf("espcore: base64 text of %d bytes holds no core dump header", len(raw))
	}
	return fmt.Errorf("espcore: %w 0x%08x", errUnknownVersion, le32(raw, 4))
}

// setVersion records a version word; an unknown one leaves the header without version
// and chip.
func (c *container) setVersion(ver uint32) {
	vi, ok := versions[uint16(ver)]
	if !ok {
		return
	}
	c.hdr.Version, c.hdr.VersionName, c.hdr.Format = ver, vi.name, FormatOf(ver)
	c.hdr.ChipID = uint16(ver >> 16)
	ci, known := chipByID(c.hdr.ChipID)
	c.hdr.Chip = ci.Title
	if known {
		c.hdr.ChipName = ci.Name
	}
}

func (c *container) warnf(f string, a ...any) { c.warnings = append(c.warnings, fmt.Sprintf(f, a...)) }

// bareELF takes a core ELF without header or checksum. One whose ELF header is not an
// ESP core's is refused; one whose notes run past its end is decoded as far as it goes.
func (c *container) bareELF(b []byte) error {
	c.hdr.Format = "elf"
	c.elfCore = b
	c.checksum = ChecksumStatus{Kind: "none", OK: true}
	notesCut, err := checkCoreELF(b)
	if err != nil || notesCut {
		c.hdr.ProblemKind = ProblemBadELF
	}
	c.hdr.Recognized = err == nil
	return err
}

// parseRaw handles header + data + checksum (+ padding).
func (c *container) parseRaw(raw []byte) error {
	c.hasHdr = true
	c.hdr.Recognized = true
	ver := le32(raw, 4)
	vi := versions[uint16(ver)]
	c.setVersion(ver)
	if len(raw) < vi.hdrLen {
		c.hdr.ProblemKind = ProblemTruncated
		return fmt.Errorf("espcore: truncated header (%d bytes)", len(raw))
	}
	switch vi.hdrLen {
	case 16, 20, 24:
		c.tasksNum, c.tcbSz = le32(raw, 8), le32(raw, 12)
		if vi.hdrLen >= 20 {
			c.segsNum = le32(raw, 16)
		}
		if vi.hdrLen == 24 {
			r := le32(raw, 20)
			c.hdr.ChipRev = &r
		}
	case 12:
		r := le32(raw, 8)
		c.hdr.ChipRev = &r
	}
	dataLen := uint64(le32(raw, 0))
	kind, csLen := "crc32", uint64(4)
	if vi.sha {
		kind, csLen = "sha256", 32
	}
	hdrLen := uint64(vi.hdrLen)
	var bodyEnd uint64
	switch {
	case dataLen > uint64(len(raw)):
		c.hdr.ProblemKind = ProblemTruncated
		c.warnf("data_len %d exceeds the %d bytes available; dump truncated", dataLen, len(raw))
		bodyEnd = uint64(len(raw)) // the checksum is among the missing bytes
		c.checksum = ChecksumStatus{Kind: kind}
		if vi.optional {
			c.checksum = ChecksumStatus{Kind: "none"}
		}
	case dataLen < hdrLen+csLen:
		c.hdr.ProblemKind = ProblemBadLength
		c.warnf("data_len %d is too small for the %d-byte header and a checksum", dataLen, hdrLen)
		bodyEnd = max(dataLen, hdrLen)
		c.checksum = ChecksumStatus{Kind: "none"}
	case vi.optional:
		// Legacy V1: flash dumps carry a CRC that data_len counts; UART dumps have none
		// and data_len excludes it. A CRC just past data_len is taken too.
		bodyEnd = dataLen
		c.checksum = ChecksumStatus{Kind: "none", OK: true}
		if sum, stored := crc32.ChecksumIEEE(raw[:dataLen-4]), le32(raw, int(dataLen-4)); sum == stored {
			bodyEnd = dataLen - 4
			c.checksum = crcStatus(sum, stored)
		} else if dataLen+4 <= uint64(len(raw)) && crc32.ChecksumIEEE(raw[:dataLen]) == le32(raw, int(dataLen)) {
			c.checksum = crcStatus(le32(raw, int(dataLen)), le32(raw, int(dataLen)))
		}
	default:
		bodyEnd = dataLen - csLen
		if vi.sha {
			sum := sha256.Sum256(raw[:bodyEnd])
			c.checksum = ChecksumStatus{Kind: kind, OK: bytes.Equal(sum[:], raw[bodyEnd:dataLen]),
				Computed: hex.EncodeToString(sum[:]), Stored: hex.EncodeToString(raw[bodyEnd:dataLen])}
		} else {
			c.checksum = crcStatus(crc32.ChecksumIEEE(raw[:bodyEnd]), le32(raw, int(bodyEnd)))
		}
		if !c.checksum.OK {
			c.hdr.ProblemKind = ProblemChecksumMismatch
			c.warnf("%s checksum mismatch (stored %s, computed %s); decoding anyway", kind, c.checksum.Stored, c.checksum.Computed)
		}
	}
	body := raw[hdrLen:bodyEnd]
	if vi.elf {
		c.elfCore = body
		if notesCut, err := checkCoreELF(body); c.hdr.ProblemKind == "" && (err != nil || notesCut) {
			c.hdr.ProblemKind = ProblemBadELF
		}
	} else {
		c.binBody = body
	}
	if dataLen == 0xFFFFFFFF || dataLen == 0 {
		return fmt.Errorf("espcore: empty or erased core dump partition")
	}
	return nil
}

func crcStatus(computed, stored uint32) ChecksumStatus {
	return ChecksumStatus{Kind: "crc32", OK: computed == stored, Computed: fmt.Sprintf("%08x", computed), Stored: fmt.Sprintf("%08x", stored)}
}
