// Package elfsym indexes a firmware ELF once (symbols, DWARF line tables,
// inlined-call scopes, CFI, struct layouts) so the core dump decoder can
// symbolize and unwind without GDB. Lookups are read-only and safe for
// concurrent use after New returns.
//
// PC convention: every lookup here is exact. The caller decides which
// address to pass: the PC itself for the innermost frame, and
// return address − 1 for caller frames (GDB's rule, ESP-FORMATS.md §3.3/3.4).
package elfsym

import (
	"bytes"
	"crypto/sha256"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// maxELFSize bounds memory for hostile uploads; real app ELFs are a few MiB.
const maxELFSize = 512 << 20

// Index is an immutable lookup structure built from one ELF file.
type Index struct {
	machine elf.Machine
	sum     [32]byte
	order   byteOrder
	ptrSize int

	code  []span    // executable sections, sorted
	progs []section // PROGBITS alloc sections with contents, sorted
	alloc []span    // all alloc sections (for SymbolAt's section rule)

	funcSyms []symbol          // FUNC symbols, sorted by addr
	dataSyms map[string]symbol // OBJECT/NOTYPE symbols by name, globals preferred
	msyms    []symbol          // GDB-style minimal symbols, sorted by addr

	lines lineTable
	scope scopeTable
	types map[string]map[string]int64
	sizes map[string]int64
	cfi   cfiTable

	memSize int64
}

type byteOrder interface {
	Uint16([]byte) uint16
	Uint32([]byte) uint32
	Uint64([]byte) uint64
}

type span struct{ lo, hi uint64 }

type section struct {
	addr uint64
	data []byte
}

type symbol struct {
	addr, size uint64
	name       string
	text       bool // defined in an executable section
	global     bool
}

// New parses the ELF in r. It fails only if r is not a readable ELF file;
// missing or damaged DWARF/CFI just leaves those lookups empty.
func New(r io.ReaderAt) (*Index, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, err
	}
	f, err := safeNewFile(data)
	if err != nil {
		return nil, err
	}
	ix := &Index{
		machine: f.Machine,
		sum:     sha256.Sum256(data),
		order:   f.ByteOrder,
		ptrSize: 4,
	}
	if f.Class == elf.ELFCLASS64 {
		ix.ptrSize = 8
	}
	ix.loadSections(f, data)
	ix.loadSymbols(f)
	// DWARF and CFI are optional; a panic inside debug/dwarf on a damaged
	// file must not take down the caller.
	func() {
		defer func() { _ = recover() }()
		if d, err := f.DWARF(); err == nil {
			ix.loadDWARF(d, secSize(f, ".debug_info"), secData(f, ".debug_line"),
				secData(f, ".debug_line_str"), secData(f, ".debug_str"))
		}
	}()
	func() {
		defer func() { _ = recover() }()
		ix.loadCFI(f)
	}()
	ix.memSize = ix.computeMemSize()
	return ix, nil
}

func secSize(f *elf.File, name string) int64 {
	if s := f.Section(name); s != nil && s.Size < maxELFSize*64 {
		return int64(s.Size)
	}
	return 0
}

func secData(f *elf.File, name string) []byte {
	if s := f.Section(name); s != nil && s.Type != elf.SHT_NOBITS {
		if b, err := s.Data(); err == nil {
			return b
		}
	}
	return nil
}

func readAll(r io.ReaderAt) ([]byte, error) {
	if r == nil {
		return nil, errors.New("elfsym: nil reader")
	}
	if s, ok := r.(interface{ Size() int64 }); ok {
		n := s.Size()
		if n < 0 || n > maxELFSize {
			return nil, fmt.Errorf("elfsym: ELF size %d out of range", n)
		}
		buf := make([]byte, n)
		if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("elfsym: read: %w", err)
		}
		return buf, nil
	}
	buf, err := io.ReadAll(io.NewSectionReader(r, 0, maxELFSize+1))
	if err != nil {
		return nil, fmt.Errorf("elfsym: read: %w", err)
	}
	if len(buf) > maxELFSize {
		return nil, errors.New("elfsym: ELF too large")
	}
	return buf, nil
}

func safeNewFile(data []byte) (f *elf.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, err = nil, fmt.Errorf("elfsym: malformed ELF: %v", p)
		}
	}()
	f, err = elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("elfsym: not an ELF: %w", err)
	}
	return f, nil
}

// Machine returns the ELF e_machine (EM_XTENSA or EM_RISCV for ESP chips).
func (ix *Index) Machine() elf.Machine { return ix.machine }

// SHA256 is the digest of the whole ELF file, as esp-coredump compares it
// with the dump's app_elf_sha256.
func (ix *Index) SHA256() [32]byte { return ix.sum }

// MemSize approximates the heap bytes retained by the index.
func (ix *Index) MemSize() int64 { return ix.memSize }

func (ix *Index) loadSections(f *elf.File, data []byte) {
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 {
			continue
		}
		end := s.Addr + s.Size
		if end < s.Addr {
			continue
		}
		ix.alloc = append(ix.alloc, span{s.Addr, end})
		if s.Flags&elf.SHF_EXECINSTR != 0 {
			ix.code = append(ix.code, span{s.Addr, end})
		}
		if s.Type != elf.SHT_PROGBITS || s.Addr == 0 {
			continue
		}
		if s.Offset > uint64(len(data)) || s.Size > uint64(len(data))-s.Offset {
			continue
		}
		// Copy so the whole file buffer can be released.
		b := make([]byte, s.Size)
		copy(b, data[s.Offset:s.Offset+s.Size])
		ix.progs = append(ix.progs, section{addr: s.Addr, data: b})
	}
	sort.Slice(ix.alloc, func(i, j int) bool { return ix.alloc[i].lo < ix.alloc[j].lo })
	sort.Slice(ix.code, func(i, j int) bool { return ix.code[i].lo < ix.code[j].lo })
	sort.Slice(ix.progs, func(i, j int) bool { return ix.progs[i].addr < ix.progs[j].addr })
}

func inSpans(sp []span, addr uint64) (span, bool) {
	i := sort.Search(len(sp), func(i int) bool { return sp[i].lo > addr })
	// Sections may overlap (e.g. NOBITS placeholders); check a few back.
	for j := i - 1; j >= 0 && j >= i-8; j-- {
		if addr >= sp[j].lo && addr < sp[j].hi {
			return sp[j], true
		}
	}
	return span{}, false
}

// IsCode reports whether addr lies in an executable (SHF_EXECINSTR) section.
func (ix *Index) IsCode(addr uint64) bool {
	_, ok := inSpans(ix.code, addr)
	return ok
}

// ReadCode returns n bytes at addr from the ELF's PROGBITS alloc sections
// (code and initialized data as flashed). The range must lie in one section.
func (ix *Index) ReadCode(addr uint64, n int) ([]byte, bool) {
	if n < 0 {
		return nil, false
	}
	i := sort.Search(len(ix.progs), func(i int) bool { return ix.progs[i].addr > addr })
	for j := i - 1; j >= 0 && j >= i-8; j-- {
		s := ix.progs[j]
		off := addr - s.addr
		if addr >= s.addr && off < uint64(len(s.data)) && uint64(n) <= uint64(len(s.data))-off {
			out := make([]byte, n)
			copy(out, s.data[off:])
			return out, true
		}
	}
	return nil, false
}

func (ix *Index) loadSymbols(f *elf.File) {
	syms, err := f.Symbols()
	if err != nil {
		return
	}
	intern := map[string]string{}
	ix.dataSyms = map[string]symbol{}
	for _, s := range syms {
		typ := elf.ST_TYPE(s.Info)
		if s.Name == "" || s.Section == elf.SHN_UNDEF {
			continue
		}
		name, ok := intern[s.Name]
		if !ok {
			name = s.Name
			intern[name] = name
		}
		sym := symbol{addr: s.Value, size: s.Size, name: name}
		if int(s.Section) < len(f.Sections) && f.Sections[s.Section].Flags&elf.SHF_EXECINSTR != 0 {
			sym.text = true
		}
		if typ == elf.STT_FUNC {
			ix.funcSyms = append(ix.funcSyms, sym)
		}
		if (typ == elf.STT_OBJECT || typ == elf.STT_NOTYPE) && s.Section != elf.SHN_ABS {
			if old, dup := ix.dataSyms[name]; !dup || (!old.global && elf.ST_BIND(s.Info) == elf.STB_GLOBAL) {
				sym.global = elf.ST_BIND(s.Info) == elf.STB_GLOBAL
				ix.dataSyms[name] = sym
				sym.global = false
			}
		}
		// Minimal symbols as GDB's elfread keeps them: no section/file
		// symbols, no absolute ones, no mapping symbols or local labels.
		if typ != elf.STT_FUNC && typ != elf.STT_OBJECT && typ != elf.STT_NOTYPE {
			continue
		}
		if s.Section == elf.SHN_ABS || s.Section >= elf.SHN_LORESERVE {
			continue
		}
		if strings.HasPrefix(s.Name, "$") || strings.HasPrefix(s.Name, ".L") {
			continue
		}
		ix.msyms = append(ix.msyms, sym)
	}
	sortSyms(ix.funcSyms)
	sortSyms(ix.msyms)
}

func sortSyms(s []symbol) {
	sort.SliceStable(s, func(i, j int) bool { return s[i].addr < s[j].addr })
}

// Symbol names the function containing pc from the ELF symbol table: the
// FUNC symbol whose [addr, addr+size) covers pc, else (in code sections
// only) GDB's minimal-symbol choice, which also accepts zero-sized labels
// such as assembly ISR entry points. It is the fallback for code without
// DWARF.
func (ix *Index) Symbol(pc uint64) (string, bool) {
	s := ix.funcSyms
	i := sort.Search(len(s), func(i int) bool { return s[i].addr > pc })
	// Scan back over aliases/overlaps; bounded.
	for j := i - 1; j >= 0 && j >= i-16; j-- {
		if pc-s[j].addr < s[j].size {
			return s[j].name, true
		}
	}
	if ix.IsCode(pc) {
		if name, _, ok := ix.SymbolAt(pc); ok {
			return name, true
		}
	}
	return "", false
}

// DataSymbol returns the address and size of a data symbol (STT_OBJECT or
// STT_NOTYPE, file-local statics included) by name, e.g. FreeRTOS's
// pxReadyTasksLists. With duplicates a global symbol wins, else the first.
func (ix *Index) DataSymbol(name string) (addr, size uint64, ok bool) {
	s, ok := ix.dataSyms[name]
	return s.addr, s.size, ok
}

// SymbolAt mimics GDB's <symbol+offset> annotation of pointer values
// (lookup_minimal_symbol_by_pc_section + build_address_symbolic): the
// preceding FUNC/OBJECT/NOTYPE symbol in the same section, preferring sized
// symbols and refusing a sized symbol the address is past.
func (ix *Index) SymbolAt(addr uint64) (name string, off uint64, ok bool) {
	sec, ok := inSpans(ix.alloc, addr)
	if !ok {
		return "", 0, false
	}
	s := ix.msyms
	hi := sort.Search(len(s), func(i int) bool { return s[i].addr > addr }) - 1
	bestZero := -1
	for steps := 0; hi >= 0 && steps < 64; steps++ {
		if s[hi].addr < sec.lo {
			hi = -1
			break
		}
		if s[hi].size == 0 {
			if bestZero == -1 {
				bestZero = hi
			}
			hi--
			continue
		}
		if hi > 0 && addr >= s[hi].addr+s[hi].size && s[hi-1].addr >= sec.lo &&
			addr < s[hi-1].addr+s[hi-1].size {
			hi--
			continue
		}
		break
	}
	if bestZero != -1 && (hi < 0 || s[hi].size == 0) {
		hi = bestZero
	}
	if hi >= 0 && s[hi].size != 0 && addr >= s[hi].addr+s[hi].size {
		if bestZero == -1 {
			return "", 0, false
		}
		hi = bestZero
	}
	if hi < 0 || s[hi].addr < sec.lo {
		return "", 0, false
	}
	// build_address_symbolic drops zero-sized data symbols (labels such
	// as __global_pointer$) instead of printing them.
	if s[hi].size == 0 && !s[hi].text {
		return "", 0, false
	}
	return s[hi].name, addr - s[hi].addr, true
}

func (ix *Index) computeMemSize() int64 {
	n := int64(512)
	for _, s := range ix.progs {
		n += int64(len(s.data)) + 32
	}
	n += int64(len(ix.code)+len(ix.alloc)) * 16
	n += int64(len(ix.dataSyms)) * 64
	strs := map[string]bool{}
	for _, l := range [][]symbol{ix.funcSyms, ix.msyms} {
		n += int64(len(l)) * 32
		for _, s := range l {
			if !strs[s.name] {
				strs[s.name] = true
				n += int64(len(s.name))
			}
		}
	}
	n += ix.lines.memSize() + ix.scope.memSize() + ix.cfi.memSize()
	n += int64(len(ix.sizes)) * 48
	for k, m := range ix.types {
		n += int64(len(k)) + 48
		for mk := range m {
			n += int64(len(mk)) + 32
		}
	}
	// Map buckets and slice slack: measured heap growth on the ESP-IDF test
	// apps is 15-20% above the summed sizes.
	n = n * 6 / 5
	return n
}

// loadDWARF builds the line table, function/inline scopes and struct
// layouts in one pass over the compilation units.
func (ix *Index) loadDWARF(d *dwarf.Data, infoSize int64, rawLine, lineStr, str []byte) {
	b := newDwarfBuilder(d)
	// Every real DIE and line row consumes at least one byte; debug/dwarf
	// can return endless null entries on a truncated ULEB, so cap the work.
	b.dieBudget = infoSize + 1024
	b.rangeBudget = 4*infoSize + 1<<16
	b.lines.budget = 2*int64(len(rawLine)) + 1024
	b.lines.raw, b.lines.order = rawLine, ix.order
	b.lines.lineStr, b.lines.str = lineStr, str
	for _, s := range ix.alloc {
		if s.lo == 0 {
			b.lines.hasZero = true
		}
	}
	b.run()
	ix.lines = b.lines.finish()
	ix.scope = b.scopes.finish()
	ix.types = b.types
	ix.sizes = b.sizes
}
