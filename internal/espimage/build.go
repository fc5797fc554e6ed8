package espimage

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// The builder below writes the format Parse reads. The benchmark command uploads
// firmware built with it from the shared test ELFs, and the tests build their
// images with it (through espimagetest), so there is one writer of the format.

// BuildOptions tune a built image. The zero value builds a valid image.
type BuildOptions struct {
	// Version replaces the descriptor's version string (up to 32 bytes).
	Version string
	// Chip forces the header chip ("esp32s3"); by default it is derived
	// from the ELF machine and the descriptor address.
	Chip string
	// ELFSHA256, when set, is written as app_elf_sha256 instead of the
	// SHA-256 of the ELF.
	ELFSHA256 *[32]byte
	// PadTo grows the file to exactly this many bytes: incompressible
	// padding segments (as esptool inserts) plus trailing bytes if needed.
	PadTo int
	// NoHash leaves out the appended SHA-256 (hash_appended = 0).
	NoHash bool
}

// SegmentData is one segment to build: its load address and contents.
type SegmentData struct {
	Addr uint32
	Data []byte
}

// BuildFromELF converts an ESP-IDF app ELF to an app image the way esptool
// elf2image does: .flash.appdesc starts the first segment (so the descriptor
// sits at 0x20), the other loaded sections follow, the checksum and
// SHA-256 are appended, and app_elf_sha256 is the SHA-256 of elfBytes.
func BuildFromELF(elfBytes []byte, opts BuildOptions) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(elfBytes))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	desc := f.Section(".flash.appdesc")
	if desc == nil {
		return nil, errors.New("ELF has no .flash.appdesc section")
	}
	type sec struct {
		addr uint32
		data []byte
		desc bool
	}
	var secs []sec
	for _, s := range f.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 {
			continue
		}
		d, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("read section %s: %w", s.Name, err)
		}
		secs = append(secs, sec{uint32(s.Addr), d, s == desc})
	}
	sort.SliceStable(secs, func(i, j int) bool { return secs[i].addr < secs[j].addr })

	// Merge address-contiguous sections; the descriptor always starts a segment.
	var segs []SegmentData
	first := -1
	for _, s := range secs {
		if n := len(segs); n > 0 && !s.desc && segs[n-1].Addr+uint32(len(segs[n-1].Data)) == s.addr {
			segs[n-1].Data = append(segs[n-1].Data, s.data...)
			continue
		}
		if s.desc {
			first = len(segs)
		}
		segs = append(segs, SegmentData{s.addr, append([]byte(nil), s.data...)})
	}
	segs = append(segs[first:first+1], append(segs[:first:first], segs[first+1:]...)...)

	chip := opts.Chip
	if chip == "" {
		chip, err = guessChip(f.Machine, uint32(desc.Addr))
		if err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(elfBytes)
	if opts.ELFSHA256 == nil {
		opts.ELFSHA256 = &sum
	}
	return Build(chip, uint32(f.Entry), segs, opts)
}

func guessChip(m elf.Machine, descAddr uint32) (string, error) {
	switch m {
	case elf.EM_XTENSA:
		switch descAddr >> 24 {
		case 0x3F:
			if descAddr >= 0x3F400000 {
				return "esp32", nil
			}
			return "esp32s2", nil
		case 0x3C:
			return "esp32s3", nil
		}
	case elf.EM_RISCV:
		switch descAddr >> 24 {
		case 0x3C:
			return "esp32c3", nil
		case 0x42:
			return "esp32c6", nil
		case 0x40:
			return "esp32p4", nil
		}
	}
	return "", fmt.Errorf("cannot tell the chip of a %v ELF with the app descriptor at 0x%08X; set BuildOptions.Chip", m, descAddr)
}

// Build assembles an image from raw segments; the first should start with an
// app descriptor (Version and ELFSHA256 are written into it when it is long enough).
func Build(chip string, entry uint32, segs []SegmentData, opts BuildOptions) ([]byte, error) {
	ci, ok := chips.ByName(chip)
	if !ok {
		return nil, fmt.Errorf("unknown chip %q", chip)
	}
	if len(segs) == 0 || len(segs) > MaxSegments {
		return nil, fmt.Errorf("%d segments (want 1..%d)", len(segs), MaxSegments)
	}
	hashLen := 32
	if opts.NoHash {
		hashLen = 0
	}

	var b bytes.Buffer
	hdr := make([]byte, HeaderLen)
	hdr[0] = ImageMagic
	hdr[2] = 2    // DIO
	hdr[3] = 0x20 // 4 MB, 40 MHz
	binary.LittleEndian.PutUint32(hdr[4:], entry)
	hdr[8] = 0xEE
	binary.LittleEndian.PutUint16(hdr[12:], ci.ID)
	binary.LittleEndian.PutUint16(hdr[17:], 399)
	if !opts.NoHash {
		hdr[23] = 1
	}
	b.Write(hdr)
	nseg := 0
	writeSeg := func(addr uint32, data []byte) {
		var sh [8]byte
		padded := (len(data) + 3) &^ 3 // esptool keeps segments word-aligned
		binary.LittleEndian.PutUint32(sh[:], addr)
		binary.LittleEndian.PutUint32(sh[4:], uint32(padded))
		b.Write(sh[:])
		b.Write(data)
		b.Write(make([]byte, padded-len(data)))
		nseg++
	}
	for i, s := range segs {
		data := s.Data
		if i == 0 && len(data) >= AppDescLen {
			data = append([]byte(nil), data...)
			if opts.Version != "" {
				if len(opts.Version) > 32 {
					return nil, fmt.Errorf("version %q longer than 32 bytes", opts.Version)
				}
				v := data[0x10:0x30]
				clear(v)
				copy(v, opts.Version)
			}
			if opts.ELFSHA256 != nil {
				copy(data[0x90:0xB0], opts.ELFSHA256[:])
			}
		}
		writeSeg(s.Addr, data)
	}

	trailing := 0
	if opts.PadTo > 0 {
		natural := (b.Len() | 15) + 1 + hashLen
		if opts.PadTo < natural {
			return nil, fmt.Errorf("PadTo %d is below the natural image size %d", opts.PadTo, natural)
		}
		// Largest checksum position that still fits, then padding segments (each at
		// most MaxSegmentLen, as many as the segment table allows) that end at or before it.
		lastCk := ((opts.PadTo-hashLen)&^15 - 1)
		for nseg < MaxSegments {
			padLen := (lastCk - b.Len() - SegHeaderLen) &^ 3
			if padLen <= 0 {
				break
			}
			writeSeg(0, noise(min(padLen, MaxSegmentLen)))
		}
		trailing = opts.PadTo - ((b.Len() | 15) + 1 + hashLen)
	}
	img := b.Bytes()
	img[1] = byte(nseg)
	ckPos := len(img) | 15
	img = append(img, make([]byte, ckPos+1-len(img))...)
	if !opts.NoHash {
		img = append(img, make([]byte, 32)...)
	}
	if err := Reseal(img); err != nil {
		return nil, err
	}
	return append(img, noise(trailing)...), nil
}

// Reseal recomputes the checksum and, when hash_appended is set, the
// appended SHA-256 of img in place, following its segment table. Bytes after
// the digest are left alone.
func Reseal(img []byte) error {
	if len(img) < HeaderLen {
		return errors.New("image shorter than its header")
	}
	off := HeaderLen
	ck := byte(ChecksumSeed)
	for i := 0; i < int(img[1]); i++ {
		if off+8 > len(img) {
			return fmt.Errorf("segment %d header past the end", i)
		}
		n := int(binary.LittleEndian.Uint32(img[off+4:]))
		off += 8
		if n > len(img)-off {
			return fmt.Errorf("segment %d data past the end", i)
		}
		for _, c := range img[off : off+n] {
			ck ^= c
		}
		off += n
	}
	ckPos := off | 15
	if ckPos >= len(img) {
		return errors.New("no room for the checksum")
	}
	img[ckPos] = ck
	if img[23] == 1 {
		if ckPos+33 > len(img) {
			return errors.New("no room for the SHA-256")
		}
		d := sha256.Sum256(img[:ckPos+1])
		copy(img[ckPos+1:], d[:])
	}
	return nil
}

// noise returns n deterministic, incompressible bytes, so padded images do not
// look like ZIP bombs once bundled.
func noise(n int) []byte {
	out := make([]byte, n)
	x := uint64(0x9E3779B97F4A7C15)
	for i := 0; i < n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], x)
		copy(out[i:], w[:])
	}
	return out
}
