// Package espcoretest builds minimal ESP-IDF core dumps for tests. Its layouts are
// written from ESP-FORMATS §2.2–2.4, not taken from espcore, so tests built on it check
// espcore's own tables.
package espcoretest

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"hash/crc32"
)

// layout is one version's container: header length, SHA-256 (else CRC32) checksum and
// ELF (else binary) data.
type layout struct {
	headerLen   int
	sha256, elf bool
}

// versions maps the low 16 bits of every known version word to its layout.
var versions = map[uint16]layout{
	0x0001: {16, false, false},
	0x0002: {20, false, false},
	0x0003: {24, false, false},
	0x0100: {20, false, true},
	0x0101: {20, true, true},
	0x0102: {24, false, true},
	0x0103: {24, true, true},
	0x0104: {12, true, true},
}

// BuildDump makes a minimal valid dump of the given (known) version word: header, data (a
// core ELF with an ESP_CORE_DUMP_INFO note for ELF formats, one empty task otherwise) and
// checksum.
func BuildDump(version uint32, shaPrefix string) []byte {
	if versions[uint16(version)].elf {
		return Wrap(version, BuildCoreELF(version, shaPrefix))
	}
	return Wrap(version, make([]byte, 12+8)) // one task header and a tiny TCB
}

// BuildThreadDump makes a dump of the given ELF-format version word whose core ELF, built
// for machine, holds one thread (all registers zero) and the ESP_CORE_DUMP_INFO note.
func BuildThreadDump(version uint32, machine elf.Machine) []byte {
	prstatus := make([]byte, 72+4*80) // registers at 72: Xtensa's block is the longer
	return Wrap(version, coreELF(machine, note("CORE", ntPRStatus, prstatus), infoNote(version, "")))
}

// Wrap puts data under the header of a known version word and appends its checksum.
func Wrap(version uint32, data []byte) []byte {
	vi := versions[uint16(version)]
	csLen := 4
	if vi.sha256 {
		csLen = 32
	}
	hdr := make([]byte, vi.headerLen)
	le := binary.LittleEndian
	le.PutUint32(hdr[0:], uint32(len(hdr)+len(data)+csLen))
	le.PutUint32(hdr[4:], version)
	if vi.headerLen >= 16 && !vi.elf {
		le.PutUint32(hdr[8:], 1)  // tasks_num
		le.PutUint32(hdr[12:], 8) // tcb_sz
	}
	out := append(hdr, data...)
	if vi.sha256 {
		s := sha256.Sum256(out)
		return append(out, s[:]...)
	}
	return le.AppendUint32(out, crc32.ChecksumIEEE(out))
}

// ELF constants of the core files built here.
const (
	ntPRStatus   = 1
	ntESPInfo    = 8266
	ptNote       = 4
	elfHeaderLen = 52
	phEntLen     = 32
)

// BuildCoreELF makes a RISC-V core ELF holding only an ESP_CORE_DUMP_INFO note with the
// version word and the app ELF SHA-256 prefix.
func BuildCoreELF(version uint32, shaPrefix string) []byte {
	return coreELF(elf.EM_RISCV, infoNote(version, shaPrefix))
}

func infoNote(version uint32, shaPrefix string) []byte {
	desc := make([]byte, 72)
	binary.LittleEndian.PutUint32(desc, version)
	copy(desc[4:], shaPrefix)
	return note("ESP_CORE_DUMP_INFO", ntESPInfo, desc)
}

func note(name string, typ uint32, desc []byte) []byte {
	le := binary.LittleEndian
	name += "\x00"
	n := le.AppendUint32(nil, uint32(len(name)))
	n = le.AppendUint32(n, uint32(len(desc)))
	n = le.AppendUint32(n, typ)
	n = append(n, name...)
	for len(n)%4 != 0 {
		n = append(n, 0)
	}
	n = append(n, desc...)
	for len(n)%4 != 0 {
		n = append(n, 0)
	}
	return n
}

// coreELF makes a core ELF with one PT_NOTE segment holding the notes.
func coreELF(machine elf.Machine, notes ...[]byte) []byte {
	le := binary.LittleEndian
	var body []byte
	for _, n := range notes {
		body = append(body, n...)
	}
	h := make([]byte, elfHeaderLen)
	copy(h, "\x7fELF\x01\x01\x01")
	le.PutUint16(h[16:], 4)               // ET_CORE
	le.PutUint16(h[18:], uint16(machine)) // e_machine
	le.PutUint32(h[20:], 1)               // e_version
	le.PutUint32(h[28:], 52)              // e_phoff
	le.PutUint16(h[40:], 52)              // e_ehsize
	le.PutUint16(h[42:], 32)              // e_phentsize
	le.PutUint16(h[44:], 1)               // e_phnum
	ph := make([]byte, phEntLen)          // PT_NOTE
	le.PutUint32(ph[0:], ptNote)
	le.PutUint32(ph[4:], elfHeaderLen+phEntLen)
	le.PutUint32(ph[16:], uint32(len(body)))
	le.PutUint32(ph[20:], uint32(len(body)))
	return append(append(h, ph...), body...)
}

// HeaderLen is the header length of a known version word.
func HeaderLen(version uint32) int { return versions[uint16(version)].headerLen }

// ChecksumLen is the checksum length of a known version word.
func ChecksumLen(version uint32) int {
	if versions[uint16(version)].sha256 {
		return 32
	}
	return 4
}

// Reseal returns a copy of a raw dump whose checksum is recomputed over the dump as it
// stands, so an edit of its header or data leaves a dump with a valid checksum.
func Reseal(dump []byte) []byte {
	out := append([]byte{}, dump...)
	le := binary.LittleEndian
	version := le.Uint32(out[4:])
	end := int(le.Uint32(out))
	cs := end - ChecksumLen(version)
	if versions[uint16(version)].sha256 {
		s := sha256.Sum256(out[:cs])
		copy(out[cs:end], s[:])
	} else {
		le.PutUint32(out[cs:], crc32.ChecksumIEEE(out[:cs]))
	}
	return out
}
