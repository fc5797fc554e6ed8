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
	"strings"
)

// Input container kinds: how the dump was wrapped. Whether the dump itself
// is in the binary or the ELF format is Header.Format.
const (
	KindELF     = "elf"     // bare ELF core (no header, no checksum)
	KindBase64  = "base64"  // UART text, decoded line by line
	KindRaw     = "raw"     // partition data: header + data + checksum
	KindUnknown = "unknown" // none of the above
)

// Limits for untrusted input.
const (
	maxInput    = 64 << 20
	maxThreads  = 256
	maxSegments = 4096
	maxFrames   = 128
)

// Header is the cheap summary Inspect returns for ingest.
type Header struct {
	Kind            string  `json:"kind"`
	Format          string  `json:"format,omitempty"` // "binary" or "elf" dump format
	Version         uint32  `json:"version"`
	VersionName     string  `json:"version_name,omitempty"`
	ChipID          uint16  `json:"chip_id"`
	Chip            string  `json:"chip,omitempty"`
	ChipRev         *uint32 `json:"chip_rev,omitempty"`
	ChecksumKind    string  `json:"checksum_kind,omitempty"` // crc32, sha256, none
	ChecksumOK      bool    `json:"checksum_ok"`
	AppELFSHAPrefix string  `json:"app_elf_sha256_prefix,omitempty"`
	// Problem says why the input cannot be decoded at all ("" when it can be tried).
	Problem string `json:"problem,omitempty"`
	// Unsupported: the problem is an unknown version word, not damage.
	Unsupported bool `json:"unsupported,omitempty"`
}

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

// knownVersion reports whether a version word looks like a core dump header.
func knownVersion(v uint32) bool {
	_, okv := versions[uint16(v)]
	_, okc := chips[uint16(v>>16)]
	return okv && okc
}

// decodeBase64Lines decodes UART output line by line: every device write is
// encoded separately, so the text cannot be decoded as one string.
func decodeBase64Lines(text []byte) ([]byte, bool) {
	start := bytes.Index(text, []byte("CORE DUMP START"))
	if start >= 0 {
		if nl := bytes.IndexAny(text[start:], "\r\n"); nl >= 0 {
			text = text[start+nl+1:]
		} else {
			text = nil
		}
		if end := bytes.Index(text, []byte("CORE DUMP END")); end >= 0 {
			text = text[:end]
		}
	}
	var out []byte
	for len(text) > 0 {
		var line []byte
		line, text = NextLine(text)
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		d, ok := DecodeBase64Line(line, false)
		if !ok {
			continue // surrounding log line
		}
		out = append(out, d...)
		if len(out) > maxInput {
			break
		}
	}
	return out, len(out) > 0
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

// unwrap detects the input kind and strips header and checksum.
func unwrap(dump []byte) (*container, error) {
	if len(dump) > maxInput {
		dump = dump[:maxInput]
	}
	c := &container{}
	switch {
	case bytes.HasPrefix(dump, elfMagic):
		c.hdr.Kind = KindELF
		c.hdr.Format = "elf"
		c.elfCore = dump
		c.checksum = ChecksumStatus{Kind: "none", OK: true}
		return c, nil
	case len(dump) >= 12 && knownVersion(le32(dump, 4)):
		c.hdr.Kind = KindRaw
		return c, c.parseRaw(dump)
	}
	raw, ok := decodeBase64Lines(dump)
	if !ok {
		c.hdr.Kind = KindUnknown
		return c, fmt.Errorf("espcore: input is neither a core ELF, a raw dump nor base64 text")
	}
	c.hdr.Kind = KindBase64
	if bytes.HasPrefix(raw, elfMagic) {
		c.hdr.Format = "elf"
		c.elfCore = raw
		c.checksum = ChecksumStatus{Kind: "none", OK: true}
		return c, nil
	}
	if len(raw) < 12 || !knownVersion(le32(raw, 4)) {
		return c, fmt.Errorf("espcore: %w 0x%08x", errUnknownVersion, le32(raw, 4))
	}
	return c, c.parseRaw(raw)
}

func (c *container) warnf(f string, a ...any) { c.warnings = append(c.warnings, fmt.Sprintf(f, a...)) }

// parseRaw handles header + data + checksum (+ padding).
func (c *container) parseRaw(raw []byte) error {
	c.hasHdr = true
	dataLen := le32(raw, 0)
	ver := le32(raw, 4)
	vi := versions[uint16(ver)]
	c.hdr.Version = ver
	c.hdr.VersionName = vi.name
	c.hdr.ChipID = uint16(ver >> 16)
	ci, _ := chipByID(c.hdr.ChipID)
	c.hdr.Chip = ci.name
	if vi.elf {
		c.hdr.Format = "elf"
	} else {
		c.hdr.Format = "binary"
	}
	if len(raw) < vi.hdrLen {
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
	end := int(dataLen)
	if dataLen == 0xFFFFFFFF || dataLen == 0 {
		return fmt.Errorf("espcore: empty or erased core dump partition")
	}
	if uint64(dataLen) > uint64(len(raw)) {
		c.warnf("data_len %d exceeds the %d bytes available; dump truncated", dataLen, len(raw))
		end = len(raw)
	}
	if end < vi.hdrLen {
		c.warnf("data_len %d is smaller than the %d-byte header", dataLen, vi.hdrLen)
		end = vi.hdrLen
	}
	csLen := 4
	c.checksum.Kind = "crc32"
	if vi.sha {
		csLen = 32
		c.checksum.Kind = "sha256"
	}
	bodyEnd := end - csLen
	if bodyEnd < vi.hdrLen {
		bodyEnd = end
		c.checksum = ChecksumStatus{Kind: "none"}
		c.warnf("dump too short to hold a checksum")
	} else if vi.sha {
		sum := sha256.Sum256(raw[:bodyEnd])
		c.checksum.Computed = hex.EncodeToString(sum[:])
		c.checksum.Stored = hex.EncodeToString(raw[bodyEnd:end])
		c.checksum.OK = bytes.Equal(sum[:], raw[bodyEnd:end])
	} else {
		sum := crc32.ChecksumIEEE(raw[:bodyEnd])
		stored := le32(raw, bodyEnd)
		c.checksum.Computed = fmt.Sprintf("%08x", sum)
		c.checksum.Stored = fmt.Sprintf("%08x", stored)
		c.checksum.OK = sum == stored
		if !c.checksum.OK && vi.optional {
			// Legacy V1 over UART has no checksum and data_len excludes it;
			// flash V1 may append one after data_len.
			if end+4 <= len(raw) && crc32.ChecksumIEEE(raw[:end]) == le32(raw, end) {
				c.checksum.OK = true
				c.checksum.Stored = fmt.Sprintf("%08x", le32(raw, end))
				c.checksum.Computed = c.checksum.Stored
			} else {
				c.checksum = ChecksumStatus{Kind: "none", OK: true}
			}
			bodyEnd = end
		}
	}
	if !c.checksum.OK {
		c.warnf("%s checksum mismatch (stored %s, computed %s); decoding anyway", c.checksum.Kind, c.checksum.Stored, c.checksum.Computed)
	}
	c.hdr.ChecksumKind = c.checksum.Kind
	c.hdr.ChecksumOK = c.checksum.OK
	if bodyEnd < vi.hdrLen {
		bodyEnd = vi.hdrLen // data_len smaller than the header itself
	}
	body := raw[vi.hdrLen:bodyEnd]
	if vi.elf {
		c.elfCore = body
	} else {
		c.binBody = body
	}
	return nil
}

// Inspect summarises a dump cheaply: container kind, version, chip, checksum
// and the app ELF SHA prefix. It never panics.
func Inspect(dump []byte) (h Header) {
	if recoverPanics {
		defer func() {
			if recover() != nil {
				h = Header{Kind: KindUnknown}
			}
		}()
	}
	c, err := unwrap(dump)
	if c == nil {
		return Header{Kind: KindUnknown}
	}
	h = c.hdr
	if err != nil {
		h.Problem = strings.TrimPrefix(err.Error(), "espcore: ")
		h.Unsupported = errors.Is(err, errUnknownVersion)
		return h
	}
	if !c.hasHdr {
		h.ChecksumKind = "none"
		h.ChecksumOK = true
	}
	if c.elfCore != nil {
		if ni, ok := scanInfoNote(c.elfCore); ok {
			h.AppELFSHAPrefix = ni.sha
			if !c.hasHdr {
				h.Version = ni.version
				h.ChipID = uint16(ni.version >> 16)
				ci, _ := chipByID(h.ChipID)
				h.Chip = ci.name
				h.VersionName = versions[uint16(ni.version)].name
			}
		}
	}
	return h
}
