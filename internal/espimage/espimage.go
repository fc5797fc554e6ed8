// Package espimage parses and validates ESP-IDF application images (the
// firmware .bin written by esptool elf2image), as described in
// docs/ESP-FORMATS.md §1. It reads the image sequentially in bounded chunks,
// so memory use does not grow with the image size.
package espimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// Layout constants of the app image format.
const (
	ImageMagic     = 0xE9
	AppDescMagic   = 0xABCD5432
	HeaderLen      = 24
	SegHeaderLen   = 8
	AppDescLen     = 256
	AppDescOffset  = HeaderLen + SegHeaderLen // 0x20
	ELFSHA256Off   = AppDescOffset + 0x90     // 0xB0 in the file
	MaxSegments    = 16
	MaxSegmentLen  = 16 << 20 // no ESP chip maps a larger segment
	ChecksumSeed   = 0xEF
	MinFileLen     = 80 // the original service's minimum, kept for its message
	bootloaderDesc = 0x50
	chunkLen       = 32 << 10
)

// Sentinel errors; every error returned by Parse for bad input is an *Error
// that matches exactly one of them with errors.Is.
var (
	ErrTooShort      = errors.New("image too short")
	ErrNotImage      = errors.New("not an ESP-IDF app image")
	ErrSegments      = errors.New("bad segment table")
	ErrTruncated     = errors.New("image truncated")
	ErrUnknownChip   = errors.New("unknown chip id")
	ErrNoAppDesc     = errors.New("no app descriptor")
	ErrChecksum      = errors.New("image checksum mismatch")
	ErrDigest        = errors.New("image SHA-256 mismatch")
	ErrVersionString = errors.New("bad version string")
)

// Error is a validation failure with a message fit for API clients.
type Error struct {
	Kind error // one of the sentinels above
	Msg  string
}

func (e *Error) Error() string        { return e.Msg }
func (e *Error) Is(target error) bool { return target == e.Kind }

func fail(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Segment is one segment of the image.
type Segment struct {
	LoadAddr uint32
	Offset   int64 // file offset of the segment data
	Len      uint32
}

// Image is a parsed, validated app image.
type Image struct {
	ChipID uint16
	Chip   string // "esp32c3"
	Arch   chips.Arch

	EntryAddr      uint32
	SPIMode        uint8
	SPISpeedSize   uint8 // speed in the low nibble, flash size in the high one
	MinChipRevFull uint16
	MaxChipRevFull uint16
	HashAppended   bool
	Segments       []Segment

	// From esp_app_desc_t.
	Version       string
	ProjectName   string
	IDFVersion    string
	SecureVersion uint32
	CompileDate   string
	CompileTime   string
	AppELFSHA256  [32]byte

	Checksum byte     // stored (and verified) checksum
	Digest   [32]byte // appended SHA-256, when HashAppended
	ImageLen int64    // bytes up to the checksum, or the digest when appended
	Size     int64    // file size; bytes past ImageLen are signatures or padding
	SHA256   [32]byte // of the whole file
}

// Parse validates the image held in r (size bytes) and returns its contents.
// Failures caused by the data are *Error; read errors from r are wrapped.
func Parse(r io.ReaderAt, size int64) (*Image, error) {
	return ParseReader(io.NewSectionReader(r, 0, size), size)
}

// ParseReader is Parse over a stream that yields exactly size bytes, such as
// a ZIP member. It consumes all size bytes.
func ParseReader(r io.Reader, size int64) (*Image, error) {
	if size < MinFileLen {
		return nil, fail(ErrTooShort, "binary too short (minimum %d bytes required)", MinFileLen)
	}
	s := &scanner{r: r, size: size, h: sha256.New(), buf: make([]byte, chunkLen)}
	im := &Image{Size: size}

	hdr, err := s.next(HeaderLen)
	if err != nil {
		return nil, err
	}
	if hdr[0] != ImageMagic {
		return nil, fail(ErrNotImage, "not an ESP-IDF app image (first byte 0x%02X, expected 0xE9)", hdr[0])
	}
	nseg := int(hdr[1])
	if nseg == 0 || nseg > MaxSegments {
		return nil, fail(ErrSegments, "image has %d segments (expected 1 to %d)", nseg, MaxSegments)
	}
	im.SPIMode = hdr[2]
	im.SPISpeedSize = hdr[3]
	im.EntryAddr = binary.LittleEndian.Uint32(hdr[4:])
	im.ChipID = binary.LittleEndian.Uint16(hdr[12:])
	im.MinChipRevFull = binary.LittleEndian.Uint16(hdr[15:])
	im.MaxChipRevFull = binary.LittleEndian.Uint16(hdr[17:])
	im.HashAppended = hdr[23] == 1
	chip, ok := chips.ByID(im.ChipID)
	if !ok {
		return nil, fail(ErrUnknownChip, "unknown chip id 0x%04X in image header", im.ChipID)
	}
	im.Chip, im.Arch = chip.Name, chip.Arch

	im.Segments = make([]Segment, 0, nseg)
	var sum uint64 // XOR of all segment data, folded to a byte at the end
	for i := range nseg {
		off := s.off
		sh, err := s.next(SegHeaderLen)
		if err != nil {
			return nil, fail(ErrTruncated, "image truncated: header of segment %d at offset 0x%X is past the end of the file (%d bytes)", i, off, size)
		}
		seg := Segment{
			LoadAddr: binary.LittleEndian.Uint32(sh),
			Len:      binary.LittleEndian.Uint32(sh[4:]),
			Offset:   s.off,
		}
		if seg.Len > MaxSegmentLen {
			return nil, fail(ErrSegments, "segment %d is %d bytes long (limit %d)", i, seg.Len, MaxSegmentLen)
		}
		if int64(seg.Len) > size-s.off {
			return nil, fail(ErrTruncated, "image truncated: segment %d (%d bytes at offset 0x%X) runs past the end of the file (%d bytes)", i, seg.Len, seg.Offset, size)
		}
		im.Segments = append(im.Segments, seg)
		remaining := int(seg.Len)
		if i == 0 {
			if err := parseAppDesc(s, im, remaining, &sum); err != nil {
				return nil, err
			}
			remaining -= AppDescLen
		}
		for remaining > 0 {
			b, err := s.next(min(remaining, chunkLen))
			if err != nil {
				return nil, err
			}
			sum ^= xorFold(b)
			remaining -= len(b)
		}
	}

	// Padding up to the checksum byte, which ends a 16-byte block.
	ckPos := s.off | 15
	if ckPos >= size {
		return nil, fail(ErrTruncated, "image truncated: checksum at offset 0x%X is past the end of the file (%d bytes)", ckPos, size)
	}
	if err := s.skip(ckPos - s.off); err != nil {
		return nil, err
	}
	ck, err := s.next(1)
	if err != nil {
		return nil, err
	}
	im.Checksum = ck[0]
	computed := byte(ChecksumSeed) ^ foldByte(sum)
	if im.Checksum != computed {
		return nil, fail(ErrChecksum, "image checksum mismatch (stored 0x%02X, computed 0x%02X)", im.Checksum, computed)
	}
	im.ImageLen = s.off
	if im.HashAppended {
		var want [32]byte
		s.h.Sum(want[:0]) // Sum leaves the running whole-file hash untouched
		if size-s.off < 32 {
			return nil, fail(ErrTruncated, "image truncated: appended SHA-256 at offset 0x%X is past the end of the file (%d bytes)", s.off, size)
		}
		d, err := s.next(32)
		if err != nil {
			return nil, err
		}
		copy(im.Digest[:], d)
		if im.Digest != want {
			return nil, fail(ErrDigest, "image SHA-256 mismatch (stored %x, computed %x)", im.Digest[:8], want[:8])
		}
		im.ImageLen = s.off
	}
	if err := s.skip(size - s.off); err != nil {
		return nil, err
	}
	s.h.Sum(im.SHA256[:0])
	return im, nil
}

// parseAppDesc reads the descriptor at the start of the first segment.
func parseAppDesc(s *scanner, im *Image, segLen int, sum *uint64) error {
	if segLen < 4 {
		return fail(ErrNoAppDesc, "first segment is too short for an app descriptor (%d bytes, need %d)", segLen, AppDescLen)
	}
	peek := min(segLen, AppDescLen)
	d, err := s.next(peek)
	if err != nil {
		return err
	}
	*sum ^= xorFold(d)
	magic := binary.LittleEndian.Uint32(d)
	if magic != AppDescMagic {
		if d[0] == bootloaderDesc {
			return fail(ErrNoAppDesc, "this is a bootloader image, not an app image")
		}
		return fail(ErrNoAppDesc, "magic number mismatch (expected 0x%08X, got 0x%08X)", uint32(AppDescMagic), magic)
	}
	if segLen < AppDescLen {
		return fail(ErrNoAppDesc, "first segment is too short for an app descriptor (%d bytes, need %d)", segLen, AppDescLen)
	}
	im.SecureVersion = binary.LittleEndian.Uint32(d[0x04:])
	ver := cstr(d[0x10:0x30])
	if ver == "" {
		return fail(ErrVersionString, "empty version string")
	}
	if !utf8.ValidString(ver) {
		return fail(ErrVersionString, "cannot decode version string: invalid UTF-8")
	}
	im.Version = ver
	im.ProjectName = text(d[0x30:0x50])
	im.CompileTime = text(d[0x50:0x60])
	im.CompileDate = text(d[0x60:0x70])
	im.IDFVersion = text(d[0x70:0x90])
	copy(im.AppELFSHA256[:], d[0x90:0xB0])
	return nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func text(b []byte) string {
	s := cstr(b)
	if !utf8.ValidString(s) {
		s = string(bytes.ToValidUTF8([]byte(s), []byte("\uFFFD")))
	}
	return s
}

// xorFold XORs b into a 64-bit word; foldByte finishes the reduction. Word-wise
// XOR keeps the checksum of a 16 MiB image cheap.
func xorFold(b []byte) uint64 {
	var w uint64
	for len(b) >= 8 {
		w ^= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	var tail [8]byte
	copy(tail[:], b)
	return w ^ binary.LittleEndian.Uint64(tail[:])
}

func foldByte(w uint64) byte {
	w ^= w >> 32
	w ^= w >> 16
	w ^= w >> 8
	return byte(w)
}

// scanner reads the file front to back through one fixed buffer, hashing
// everything it reads.
type scanner struct {
	r    io.Reader
	off  int64
	size int64
	h    interface {
		io.Writer
		Sum([]byte) []byte
	}
	buf []byte
}

// next returns the next n (≤ len(buf)) bytes; they are valid until the next call.
func (s *scanner) next(n int) ([]byte, error) {
	if int64(n) > s.size-s.off {
		return nil, fail(ErrTruncated, "image truncated at offset 0x%X (file is %d bytes)", s.off, s.size)
	}
	b := s.buf[:n]
	if _, err := io.ReadFull(s.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("read image at offset %d: file shorter than its stated size %d: %w", s.off, s.size, err)
		}
		return nil, fmt.Errorf("read image at offset %d: %w", s.off, err)
	}
	s.h.Write(b)
	s.off += int64(n)
	return b, nil
}

func (s *scanner) skip(n int64) error {
	for n > 0 {
		b, err := s.next(int(min(n, chunkLen)))
		if err != nil {
			return err
		}
		n -= int64(len(b))
	}
	return nil
}

// AppELFSHA256Hex is app_elf_sha256 in lower-case hex, the form core dumps
// carry a prefix of.
func (im *Image) AppELFSHA256Hex() string { return fmt.Sprintf("%x", im.AppELFSHA256) }
