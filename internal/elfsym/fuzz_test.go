package elfsym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// miniELF builds a small ELF32 from a real one: the ELF header, a slice of
// code, prefixes of the CFI sections, a few symbols and the first
// compilation unit's DWARF (all offsets in the first CU point near the
// start of their sections, so prefixes keep them valid). It keeps fuzz
// seeds a few KiB instead of MiB.
func miniELF(t testing.TB, raw []byte) []byte {
	f, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil || f.Class != elf.ELFCLASS32 {
		t.Fatalf("miniELF: %v", err)
	}
	type sec struct {
		name        string
		typ         elf.SectionType
		flags       elf.SectionFlag
		addr        uint64
		data        []byte
		link, entsz uint32
		alignOrInfo uint32
	}
	prefix := func(name string, n int) []byte {
		s := f.Section(name)
		if s == nil {
			return nil
		}
		b, err := s.Data()
		if err != nil {
			return nil
		}
		return b[:min(n, len(b))]
	}
	var secs []sec
	add := func(name string, n int) {
		s := f.Section(name)
		if b := prefix(name, n); s != nil && b != nil {
			secs = append(secs, sec{name: name, typ: s.Type, flags: s.Flags, addr: s.Addr, data: b})
		}
	}
	var text *elf.Section
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 && s.Type == elf.SHT_PROGBITS && s.Size > 0 {
			text = s
			break
		}
	}
	if text != nil {
		add(text.Name, 768)
	}
	add(".eh_frame", 256)
	add(".debug_frame", 768)
	info := prefix(".debug_info", 4)
	if len(info) == 4 {
		info = prefix(".debug_info", 4+int(f.ByteOrder.Uint32(info)))
		abbrev := prefix(".debug_abbrev", 1<<20)
		str := prefix(".debug_str", 1<<30)
		if ninfo, nstr, ok := compactStrings(info, abbrev, str); ok {
			s := f.Section(".debug_info")
			secs = append(secs, sec{name: ".debug_info", typ: s.Type, data: ninfo},
				sec{name: ".debug_str", typ: elf.SHT_PROGBITS, data: nstr})
		} else {
			add(".debug_info", len(info))
			add(".debug_str", 4096)
		}
	}
	add(".debug_abbrev", 0x400)
	if line := prefix(".debug_line", 4); len(line) == 4 {
		add(".debug_line", 4+int(f.ByteOrder.Uint32(line)))
	}
	add(".debug_line_str", 1024)
	add(".debug_ranges", 256)
	add(".debug_rnglists", 256)

	// A few FUNC symbols from the kept code, with a fresh string table.
	var symtab, strtab []byte
	strtab = append(strtab, 0)
	symtab = make([]byte, 16)
	if syms, err := f.Symbols(); err == nil && text != nil {
		n := 0
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value < text.Addr || s.Value >= text.Addr+768 || n >= 12 {
				continue
			}
			n++
			e := make([]byte, 16)
			binary.LittleEndian.PutUint32(e[0:], uint32(len(strtab)))
			binary.LittleEndian.PutUint32(e[4:], uint32(s.Value))
			binary.LittleEndian.PutUint32(e[8:], uint32(s.Size))
			e[12] = s.Info
			binary.LittleEndian.PutUint16(e[14:], 1) // first kept section
			strtab = append(append(strtab, s.Name...), 0)
			symtab = append(symtab, e...)
		}
	}
	symIdx := uint32(len(secs) + 1)
	secs = append(secs,
		sec{name: ".symtab", typ: elf.SHT_SYMTAB, data: symtab, link: symIdx + 1, entsz: 16, alignOrInfo: 1},
		sec{name: ".strtab", typ: elf.SHT_STRTAB, data: strtab})
	var shstr []byte
	shstr = append(shstr, 0)
	names := make([]uint32, len(secs)+1)
	for i, s := range secs {
		names[i] = uint32(len(shstr))
		shstr = append(append(shstr, s.name...), 0)
	}
	names[len(secs)] = uint32(len(shstr))
	shstr = append(append(shstr, ".shstrtab"...), 0)
	secs = append(secs, sec{name: ".shstrtab", typ: elf.SHT_STRTAB, data: shstr})

	out := make([]byte, 52)
	copy(out, raw[:16])
	offs := make([]uint32, len(secs))
	for i, s := range secs {
		offs[i] = uint32(len(out))
		out = append(out, s.data...)
	}
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	shoff := uint32(len(out))
	out = append(out, make([]byte, 40)...) // null section
	for i, s := range secs {
		h := make([]byte, 40)
		le := binary.LittleEndian
		le.PutUint32(h[0:], names[i])
		le.PutUint32(h[4:], uint32(s.typ))
		le.PutUint32(h[8:], uint32(s.flags))
		le.PutUint32(h[12:], uint32(s.addr))
		le.PutUint32(h[16:], offs[i])
		le.PutUint32(h[20:], uint32(len(s.data)))
		le.PutUint32(h[24:], s.link)
		le.PutUint32(h[28:], s.alignOrInfo)
		le.PutUint32(h[32:], 1)
		le.PutUint32(h[36:], s.entsz)
		out = append(out, h...)
	}
	le := binary.LittleEndian
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(f.Machine))
	le.PutUint32(out[20:], 1)
	le.PutUint32(out[32:], shoff)
	le.PutUint16(out[40:], 52)
	le.PutUint16(out[42:], 32)
	le.PutUint16(out[46:], 40)
	le.PutUint16(out[48:], uint16(len(secs)+1))
	le.PutUint16(out[50:], uint16(len(secs)))
	return out
}

func readTestELF(t testing.TB, c string) []byte {
	b, err := os.ReadFile(filepath.Join(testdata, c, "app.elf"))
	if err != nil {
		t.Skipf("test data not available: %v", err)
	}
	return b
}

func TestMiniELF(t *testing.T) {
	for _, c := range []string{"esp32", "esp32c3"} {
		mini := miniELF(t, readTestELF(t, c))
		ix, err := New(bytes.NewReader(mini))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if len(ix.funcSyms) == 0 || len(ix.lines.rows) == 0 || len(ix.cfi.fdes) == 0 || len(ix.scope.scopes) == 0 {
			t.Errorf("%s mini ELF (%d bytes) too empty: syms %d rows %d fdes %d scopes %d", c, len(mini),
				len(ix.funcSyms), len(ix.lines.rows), len(ix.cfi.fdes), len(ix.scope.scopes))
		}
	}
}

// exercise runs every lookup on addresses the index itself knows about.
func exercise(ix *Index) {
	ix.Machine()
	ix.SHA256()
	ix.MemSize()
	ix.MemberOffset("TCB_t", "pcTaskName")
	var pcs []uint64
	for i, r := range ix.lines.rows {
		if i >= 64 {
			break
		}
		pcs = append(pcs, r.addr, r.addr+1)
	}
	for i, f := range ix.cfi.fdes {
		if i >= 64 {
			break
		}
		pcs = append(pcs, f.lo, f.hi-1, (f.lo+f.hi)/2)
	}
	for _, s := range ix.funcSyms {
		pcs = append(pcs, s.addr)
	}
	pcs = append(pcs, 0, ^uint64(0))
	for _, pc := range pcs {
		ix.Locations(pc)
		ix.Symbol(pc)
		ix.SymbolAt(pc)
		ix.IsCode(pc)
		ix.ReadCode(pc, 4)
		ix.CFARule(pc)
		ix.ShowAddress(pc)
	}
}

// FuzzNew: New and all lookups must never panic or hang on damaged ELFs.
func FuzzNew(f *testing.F) {
	for _, c := range []string{"esp32", "esp32c3", "esp32c6"} {
		b, err := os.ReadFile(filepath.Join(testdata, c, "app.elf"))
		if err != nil {
			continue
		}
		mini := miniELF(f, b)
		f.Add(mini)
		for _, n := range []int{52, 200, len(mini) / 2, len(mini) - 41} {
			f.Add(mini[:n])
		}
		f.Add(b[:64])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := New(bytes.NewReader(data))
		if err != nil {
			return
		}
		exercise(ix)
	})
}

// compactStrings copies the first (DWARF 4, 32-bit) unit of info and
// rewrites its DW_FORM_strp operands to point into a new, small string
// table holding only the strings it uses.
func compactStrings(info, abbrev, str []byte) ([]byte, []byte, bool) {
	le := binary.LittleEndian
	if len(info) < 11 || le.Uint16(info[4:]) != 4 {
		return nil, nil, false
	}
	type spec struct{ attr, form uint64 }
	type abbr struct {
		children bool
		specs    []spec
	}
	abbrs := map[uint64]abbr{}
	ab := &reader{b: abbrev, ord: le, pos: int(le.Uint32(info[6:]))}
	for !ab.bad {
		code := ab.uleb()
		if code == 0 {
			break
		}
		ab.uleb()
		a := abbr{children: ab.u8() != 0}
		for !ab.bad {
			at, fm := ab.uleb(), ab.uleb()
			if at == 0 && fm == 0 {
				break
			}
			a.specs = append(a.specs, spec{at, fm})
		}
		abbrs[code] = a
	}
	out := append([]byte(nil), info...)
	nstr := []byte{0}
	r := &reader{b: out, ord: le, pos: 11}
	addrSize := int(info[10])
	for r.pos < len(out) && !r.bad {
		code := r.uleb()
		if code == 0 {
			continue
		}
		a, ok := abbrs[code]
		if !ok {
			return nil, nil, false
		}
		for _, sp := range a.specs {
			switch sp.form {
			case 0x01:
				r.bytes(addrSize)
			case 0x0b, 0x0c, 0x11:
				r.bytes(1)
			case 0x05, 0x12:
				r.bytes(2)
			case 0x06, 0x13, 0x10, 0x17:
				r.bytes(4)
			case 0x07, 0x14, 0x20:
				r.bytes(8)
			case 0x0d:
				r.sleb()
			case 0x0f, 0x15:
				r.uleb()
			case 0x08:
				r.cstring()
			case 0x09, 0x18:
				r.bytes(int(r.uleb()))
			case 0x0a:
				r.bytes(int(r.u8()))
			case 0x03:
				r.bytes(int(r.u16()))
			case 0x04:
				r.bytes(int(r.u32()))
			case 0x19:
			case 0x0e: // strp
				pos := r.pos
				off := int(r.u32())
				if r.bad || off >= len(str) {
					return nil, nil, false
				}
				end := bytes.IndexByte(str[off:], 0)
				if end < 0 {
					return nil, nil, false
				}
				le.PutUint32(out[pos:], uint32(len(nstr)))
				nstr = append(append(nstr, str[off:off+end]...), 0)
			default:
				return nil, nil, false
			}
		}
	}
	return out, nstr, !r.bad
}
