package bench

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/iotsupport/iotsupport/internal/espimage"
)

// This file is a small elf2image and bundle writer. espimagetest and
// bundletest do the same for tests but import "testing", which the binary
// must not link, so the few functions the benchmark needs live here.

// member is one ZIP entry of a bundle.
type member struct {
	Name string
	Data []byte
}

// testELF returns the path of a shared test app ELF.
func testELF(testdata, name string) string {
	return filepath.Join(testdata, "esp-coredump", name, "app.elf")
}

// makeBundle builds the five members of a firmware bundle for modelCode from
// an app ELF: an image padded to exactly padTo bytes (0: natural size), the
// ELF, a map, sdkconfig and version.json (with gitCommit).
func makeBundle(modelCode string, elfBytes []byte, padTo int, gitCommit string) ([]member, error) {
	img, err := imageFromELF(elfBytes, padTo)
	if err != nil {
		return nil, err
	}
	im, err := espimage.Parse(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		return nil, fmt.Errorf("built image does not parse: %w", err)
	}
	vj, _ := json.MarshalIndent(map[string]string{
		"git_commit": gitCommit, "idf_version": im.IDFVersion, "firmware_version": im.Version,
	}, "", "  ")
	return []member{
		{modelCode + ".bin", img},
		{modelCode + ".elf", elfBytes},
		{modelCode + ".map", []byte("Archive member included to satisfy reference by file (symbol)\n\n.flash.appdesc 0x3c020020 0x100\n")},
		{"sdkconfig", []byte("CONFIG_IDF_TARGET=\"esp32\"\nCONFIG_APP_PROJECT_VER_FROM_CONFIG=y\n")},
		{"version.json", vj},
	}, nil
}

// zipMembers writes members uncompressed (the image padding is incompressible).
func zipMembers(members []member) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: m.Name, Method: zip.Store})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(m.Data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// imageFromELF converts an ESP-IDF app ELF to an app image like esptool
// elf2image, grown to exactly padTo bytes with incompressible padding
// segments when padTo > 0.
func imageFromELF(elfBytes []byte, padTo int) ([]byte, error) {
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
	type segment struct {
		addr uint32
		data []byte
	}
	var segs []segment
	first := -1
	for _, s := range secs {
		if n := len(segs); n > 0 && !s.desc && segs[n-1].addr+uint32(len(segs[n-1].data)) == s.addr {
			segs[n-1].data = append(segs[n-1].data, s.data...)
			continue
		}
		if s.desc {
			first = len(segs)
		}
		segs = append(segs, segment{s.addr, append([]byte(nil), s.data...)})
	}
	segs = append(segs[first:first+1], append(segs[:first:first], segs[first+1:]...)...)
	chip, err := guessChip(f.Machine, uint32(desc.Addr))
	if err != nil {
		return nil, err
	}
	ci, ok := espimage.ChipByName(chip)
	if !ok {
		return nil, fmt.Errorf("unknown chip %q", chip)
	}
	sum := sha256.Sum256(elfBytes)
	copy(segs[0].data[0x90:0xB0], sum[:])

	const hashLen = 32
	var b bytes.Buffer
	hdr := make([]byte, espimage.HeaderLen)
	hdr[0] = espimage.ImageMagic
	hdr[2] = 2    // DIO
	hdr[3] = 0x20 // 4 MB, 40 MHz
	binary.LittleEndian.PutUint32(hdr[4:], uint32(f.Entry))
	hdr[8] = 0xEE
	binary.LittleEndian.PutUint16(hdr[12:], ci.ID)
	binary.LittleEndian.PutUint16(hdr[17:], 399)
	hdr[23] = 1 // hash appended
	b.Write(hdr)
	nseg := 0
	writeSeg := func(addr uint32, data []byte) {
		var sh [8]byte
		padded := (len(data) + 3) &^ 3
		binary.LittleEndian.PutUint32(sh[:], addr)
		binary.LittleEndian.PutUint32(sh[4:], uint32(padded))
		b.Write(sh[:])
		b.Write(data)
		b.Write(make([]byte, padded-len(data)))
		nseg++
	}
	for _, s := range segs {
		writeSeg(s.addr, s.data)
	}
	trailing := 0
	if padTo > 0 {
		natural := (b.Len() | 15) + 1 + hashLen
		if padTo < natural {
			return nil, fmt.Errorf("pad to %d is below the natural image size %d", padTo, natural)
		}
		lastCk := (padTo-hashLen)&^15 - 1
		for {
			padLen := (lastCk - b.Len() - espimage.SegHeaderLen) &^ 3
			if padLen <= 0 || nseg >= espimage.MaxSegments {
				break
			}
			padLen = min(padLen, espimage.MaxSegmentLen)
			writeSeg(0, noise(padLen, uint64(nseg)))
		}
		trailing = padTo - ((b.Len() | 15) + 1 + hashLen)
	}
	img := b.Bytes()
	img[1] = byte(nseg)
	ckPos := len(img) | 15
	img = append(img, make([]byte, ckPos+1-len(img))...)
	ck := byte(espimage.ChecksumSeed)
	off := espimage.HeaderLen
	for i := 0; i < nseg; i++ {
		n := int(binary.LittleEndian.Uint32(img[off+4:]))
		off += 8
		for _, c := range img[off : off+n] {
			ck ^= c
		}
		off += n
	}
	img[ckPos] = ck
	d := sha256.Sum256(img[:ckPos+1])
	img = append(img, d[:]...)
	return append(img, noise(trailing, 99)...), nil
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
	return "", fmt.Errorf("cannot tell the chip of a %v ELF with the app descriptor at 0x%08X", m, descAddr)
}

// noise returns n deterministic, incompressible bytes.
func noise(n int, seed uint64) []byte {
	out := make([]byte, n)
	x := uint64(0x9E3779B97F4A7C15) ^ seed*0xBF58476D1CE4E5B9
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

// readCoredump returns a test case's core dump as the device sends it over
// HTTP: the base64 text printed over UART.
func readCoredump(testdata, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(testdata, "esp-coredump", name, "coredump.b64"))
}
