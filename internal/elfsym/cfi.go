package elfsym

import (
	"debug/elf"
	"sort"
)

// RuleKind says how a caller's register is recovered. The first five values
// match espcore's RuleKind so conversion is a cast.
type RuleKind int

const (
	RuleUndefined     RuleKind = iota // not recoverable (DW_CFA_undefined; for ra: outermost frame)
	RuleSameValue                     // unchanged in the caller
	RuleOffset                        // saved at memory CFA+Offset
	RuleValOffset                     // value is CFA+Offset
	RuleRegister                      // value is in register Reg
	RuleExpression                    // DWARF expression (unsupported; stop unwinding)
	RuleValExpression                 // DWARF expression (unsupported; stop unwinding)
)

// RegRule says where a caller register is saved.
type RegRule struct {
	Kind   RuleKind
	Offset int64
	Reg    int
}

// Row is the CFI row for a PC: CFA = reg[CFAReg] + CFAOffset, plus rules for
// registers the function saved. Registers absent from Regs keep their value
// (same value), which is how GDB treats them on RISC-V and what ESP-IDF's
// CIEs imply. Register numbers are DWARF numbers (RISC-V: x0..x31 = 0..31).
type Row struct {
	CFAReg    int
	CFAOffset int64
	Regs      map[int]RegRule

	RAReg    int    // return address column from the CIE (RISC-V: 1 = ra)
	Start    uint64 // the row is valid for [Start, End)
	End      uint64
	FDEStart uint64 // the covering FDE's address range
	FDEEnd   uint64
}

type fde struct {
	lo, hi     uint64
	sec        uint8 // 0 = .debug_frame, 1 = .eh_frame
	cie        int32
	insn, insE uint32 // instruction bytes [insn, insE) in the section
}

type cie struct {
	codeAlign  uint64
	dataAlign  int64
	raReg      int
	ptrEnc     byte // FDE pointer encoding (eh_frame 'R'); 0 = absptr
	z          bool // augmentation "z...": FDEs carry augmentation data
	insn, insE uint32
	sec        uint8
	addrSize   int
}

type cfiTable struct {
	secs    [2][]byte
	secAddr [2]uint64
	cies    []cie
	fdes    []fde // sorted by lo
	order   byteOrder
	ptr     int
}

func (c *cfiTable) memSize() int64 {
	return int64(len(c.secs[0])+len(c.secs[1])) + int64(len(c.cies))*48 + int64(len(c.fdes))*32
}

// maxFDEs bounds parsing work on hostile input.
const maxFDEs = 1 << 20

func (ix *Index) loadCFI(f *elf.File) {
	c := &ix.cfi
	c.order = ix.order
	c.ptr = ix.ptrSize
	for i, name := range []string{".debug_frame", ".eh_frame"} {
		s := f.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		b, err := s.Data()
		if err != nil {
			continue
		}
		c.secs[i] = b
		c.secAddr[i] = s.Addr
		c.parse(uint8(i))
	}
	sort.SliceStable(c.fdes, func(i, j int) bool { return c.fdes[i].lo < c.fdes[j].lo })
}

// reader is a bounds-checked cursor; any overrun sets bad.
type reader struct {
	b   []byte
	pos int
	bad bool
	ord byteOrder
}

func (r *reader) u8() byte {
	if r.pos >= len(r.b) {
		r.bad = true
		return 0
	}
	v := r.b[r.pos]
	r.pos++
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b)-r.pos {
		r.bad = true
		r.pos = len(r.b)
		return nil
	}
	v := r.b[r.pos : r.pos+n]
	r.pos += n
	return v
}

func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return r.ord.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return r.ord.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return r.ord.Uint64(b)
	}
	return 0
}

func (r *reader) uleb() uint64 {
	if r.pos >= len(r.b) {
		r.bad = true
		return 0
	}
	v, n := uleb(r.b[r.pos:])
	if n == 0 {
		r.bad = true
		r.pos = len(r.b)
		return 0
	}
	r.pos += n
	return v
}

func (r *reader) sleb() int64 {
	if r.pos >= len(r.b) {
		r.bad = true
		return 0
	}
	v, n := sleb(r.b[r.pos:])
	if n == 0 {
		r.bad = true
		r.pos = len(r.b)
		return 0
	}
	r.pos += n
	return v
}

func (r *reader) cstring() string {
	for i := r.pos; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.pos:i])
			r.pos = i + 1
			return s
		}
	}
	r.bad = true
	r.pos = len(r.b)
	return ""
}

func (r *reader) addr(size int) uint64 {
	switch size {
	case 2:
		return uint64(r.u16())
	case 4:
		return uint64(r.u32())
	case 8:
		return r.u64()
	}
	r.bad = true
	return 0
}

// encoded reads an eh_frame pointer with encoding enc; pcrel values are
// relative to the field's address (section address + offset).
func (c *cfiTable) encoded(r *reader, enc byte, sec uint8) (uint64, bool) {
	if enc == 0xff { // DW_EH_PE_omit
		return 0, false
	}
	fieldAddr := c.secAddr[sec] + uint64(r.pos)
	var v uint64
	switch enc & 0x0f {
	case 0x00:
		v = r.addr(c.ptr)
	case 0x01:
		v = r.uleb()
	case 0x02:
		v = uint64(r.u16())
	case 0x03:
		v = uint64(r.u32())
	case 0x04:
		v = r.u64()
	case 0x09:
		v = uint64(r.sleb())
	case 0x0a:
		v = uint64(int64(int16(r.u16())))
	case 0x0b:
		v = uint64(int64(int32(r.u32())))
	case 0x0c:
		v = r.u64()
	default:
		r.bad = true
		return 0, false
	}
	switch enc & 0x70 {
	case 0x00:
	case 0x10: // pcrel
		v += fieldAddr
	default: // textrel/datarel/funcrel/aligned: not used by ESP toolchains
		return 0, false
	}
	if enc&0x80 != 0 { // indirect: would need target memory
		return 0, false
	}
	if c.ptr == 4 {
		v &= 0xffffffff
	}
	return v, !r.bad
}

// parse reads all CIEs and FDEs of one section.
func (c *cfiTable) parse(sec uint8) {
	b := c.secs[sec]
	eh := sec == 1
	cieAt := map[int]int32{} // section offset → index in c.cies
	r := &reader{b: b, ord: c.order}
	for r.pos < len(b) && len(c.fdes) < maxFDEs {
		start := r.pos
		length := uint64(r.u32())
		is64 := false
		if length == 0xffffffff {
			length = r.u64()
			is64 = true
		}
		if r.bad {
			return
		}
		if length == 0 {
			if eh {
				return // eh_frame terminator
			}
			continue
		}
		bodyStart := r.pos
		if length > uint64(len(b)-bodyStart) {
			return
		}
		end := bodyStart + int(length)
		er := &reader{b: b[:end], pos: bodyStart, ord: c.order}
		idPos := er.pos
		var id uint64
		if is64 {
			id = er.u64()
		} else {
			id = uint64(er.u32())
		}
		isCIE := (!eh && ((!is64 && id == 0xffffffff) || (is64 && id == ^uint64(0)))) || (eh && id == 0)
		if isCIE {
			if ci, ok := c.parseCIE(er, sec, end); ok {
				cieAt[start] = int32(len(c.cies))
				c.cies = append(c.cies, ci)
			}
		} else {
			cieOff := int(id)
			if eh {
				cieOff = idPos - int(id)
			}
			ci, ok := cieAt[cieOff]
			if !ok && cieOff >= 0 && cieOff < len(b) {
				// CIE after the FDE (legal in .debug_frame): parse it now.
				ci, ok = c.cieAtOffset(sec, cieOff, cieAt)
			}
			if ok {
				c.parseFDE(er, sec, ci, end)
			}
		}
		r.pos = end
	}
}

func (c *cfiTable) cieAtOffset(sec uint8, off int, cieAt map[int]int32) (int32, bool) {
	b := c.secs[sec]
	r := &reader{b: b, pos: off, ord: c.order}
	length := uint64(r.u32())
	if length == 0xffffffff {
		length = r.u64()
	}
	if r.bad || length == 0 || length > uint64(len(b)-r.pos) {
		return 0, false
	}
	end := r.pos + int(length)
	er := &reader{b: b[:end], pos: r.pos, ord: c.order}
	if length == 0xffffffff {
		er.u64()
	} else {
		er.u32()
	}
	ci, ok := c.parseCIE(er, sec, end)
	if !ok {
		return 0, false
	}
	idx := int32(len(c.cies))
	c.cies = append(c.cies, ci)
	cieAt[off] = idx
	return idx, true
}

func (c *cfiTable) parseCIE(r *reader, sec uint8, end int) (cie, bool) {
	ci := cie{sec: sec, addrSize: c.ptr}
	version := r.u8()
	aug := r.cstring()
	if version >= 4 {
		if as := int(r.u8()); as == 2 || as == 4 || as == 8 {
			ci.addrSize = as
		}
		r.u8() // segment selector size
	}
	ci.codeAlign = r.uleb()
	ci.dataAlign = r.sleb()
	if version == 1 {
		ci.raReg = int(r.u8())
	} else {
		ci.raReg = int(r.uleb())
	}
	if len(aug) > 0 && aug[0] == 'z' {
		ci.z = true
		n := r.uleb()
		if n > uint64(len(r.b)-r.pos) {
			return ci, false
		}
		ar := &reader{b: r.b[:r.pos+int(n)], pos: r.pos, ord: c.order}
	augLoop:
		for _, ch := range aug[1:] {
			switch ch {
			case 'R':
				ci.ptrEnc = ar.u8()
			case 'P':
				enc := ar.u8()
				c.encoded(ar, enc&^0x80, sec)
			case 'L':
				ar.u8()
			case 'S', 'B':
			default:
				break augLoop // unknown: the length lets us skip the rest
			}
		}
		r.pos += int(n)
	} else if aug != "" && aug != "eh" {
		// Unknown augmentation without 'z': cannot find the instructions.
		return ci, false
	}
	if r.bad || r.pos > end {
		return ci, false
	}
	ci.insn, ci.insE = uint32(r.pos), uint32(end)
	return ci, true
}

func (c *cfiTable) parseFDE(r *reader, sec uint8, ci int32, end int) {
	cc := &c.cies[ci]
	var lo, rng uint64
	if sec == 1 {
		var ok bool
		lo, ok = c.encoded(r, cc.ptrEnc, sec)
		if !ok {
			return
		}
		// The range uses the format but not the application of the encoding.
		rng, _ = c.encoded(r, cc.ptrEnc&0x0f, sec)
		if cc.z {
			n := r.uleb()
			r.bytes(int(min(n, uint64(len(r.b)))))
		}
	} else {
		lo = r.addr(cc.addrSize)
		rng = r.addr(cc.addrSize)
	}
	if r.bad || rng == 0 || lo+rng < lo {
		return
	}
	c.fdes = append(c.fdes, fde{lo: lo, hi: lo + rng, sec: sec, cie: ci, insn: uint32(r.pos), insE: uint32(end)})
}

// CFARule returns the CFI row in effect at pc, from .debug_frame or
// .eh_frame. ok is false if no FDE covers pc or the CFA uses an
// expression. Pass pc for frame #0 and return address − 1 for callers.
func (ix *Index) CFARule(pc uint64) (Row, bool) {
	c := &ix.cfi
	i := sort.Search(len(c.fdes), func(i int) bool { return c.fdes[i].lo > pc }) - 1
	for n := 0; i >= 0 && n < 16; i, n = i-1, n+1 {
		f := &c.fdes[i]
		if pc >= f.lo && pc < f.hi {
			return c.execute(f, pc)
		}
	}
	return Row{}, false
}

type cfaState struct {
	reg  int
	off  int64
	expr bool
	regs map[int]RegRule
}

func (s cfaState) clone() cfaState {
	m := make(map[int]RegRule, len(s.regs))
	for k, v := range s.regs {
		m[k] = v
	}
	s.regs = m
	return s
}

// maxCFIOps bounds instruction interpretation per lookup.
const maxCFIOps = 1 << 16

func (c *cfiTable) execute(f *fde, pc uint64) (Row, bool) {
	if int(f.cie) >= len(c.cies) {
		return Row{}, false
	}
	ci := &c.cies[f.cie]
	sec := c.secs[f.sec]
	st := cfaState{regs: map[int]RegRule{}}
	row := Row{RAReg: ci.raReg, Start: f.lo, End: f.hi, FDEStart: f.lo, FDEEnd: f.hi}
	// CIE initial instructions: run fully (loc never advances past pc).
	loc := f.lo
	var initial cfaState
	if !c.run(sec[:ci.insE], int(ci.insn), ci, f, &st, nil, &loc, ^uint64(0), &row) {
		return Row{}, false
	}
	initial = st.clone()
	loc = f.lo
	if !c.run(sec[:f.insE], int(f.insn), ci, f, &st, &initial, &loc, pc, &row) {
		return Row{}, false
	}
	if st.expr {
		return Row{}, false
	}
	row.CFAReg, row.CFAOffset, row.Regs = st.reg, st.off, st.regs
	return row, true
}

// run interprets CFA instructions until the location passes pc. initial is
// nil while running the CIE's own instructions (restore is then a no-op).
func (c *cfiTable) run(b []byte, pos int, ci *cie, f *fde, st *cfaState, initial *cfaState, loc *uint64, pc uint64, row *Row) bool {
	r := &reader{b: b, pos: pos, ord: c.order}
	var stack []cfaState
	restore := func(reg int) {
		if initial != nil {
			if v, ok := initial.regs[reg]; ok {
				st.regs[reg] = v
				return
			}
		}
		delete(st.regs, reg)
	}
	advance := func(delta uint64) bool {
		next := *loc + delta*ci.codeAlign
		if next > pc {
			row.End = next
			return false
		}
		*loc = next
		row.Start = next
		return true
	}
	for ops := 0; r.pos < len(b) && ops < maxCFIOps; ops++ {
		op := r.u8()
		switch op >> 6 {
		case 1: // advance_loc
			if !advance(uint64(op & 0x3f)) {
				return true
			}
			continue
		case 2: // offset
			st.regs[int(op&0x3f)] = RegRule{Kind: RuleOffset, Offset: int64(r.uleb()) * ci.dataAlign}
			continue
		case 3: // restore
			restore(int(op & 0x3f))
			continue
		}
		switch op {
		case 0x00: // nop
		case 0x01: // set_loc
			var nl uint64
			if f.sec == 1 {
				v, ok := c.encoded(r, ci.ptrEnc, f.sec)
				if !ok {
					return false
				}
				nl = v
			} else {
				nl = r.addr(ci.addrSize)
			}
			if nl > pc {
				row.End = nl
				return true
			}
			*loc, row.Start = nl, nl
		case 0x02:
			if !advance(uint64(r.u8())) {
				return true
			}
		case 0x03:
			if !advance(uint64(r.u16())) {
				return true
			}
		case 0x04:
			if !advance(uint64(r.u32())) {
				return true
			}
		case 0x05: // offset_extended
			reg := int(r.uleb())
			st.regs[reg] = RegRule{Kind: RuleOffset, Offset: int64(r.uleb()) * ci.dataAlign}
		case 0x06: // restore_extended
			restore(int(r.uleb()))
		case 0x07: // undefined
			st.regs[int(r.uleb())] = RegRule{Kind: RuleUndefined}
		case 0x08: // same_value
			st.regs[int(r.uleb())] = RegRule{Kind: RuleSameValue}
		case 0x09: // register
			reg := int(r.uleb())
			st.regs[reg] = RegRule{Kind: RuleRegister, Reg: int(r.uleb())}
		case 0x0a: // remember_state
			if len(stack) >= 64 {
				return false
			}
			stack = append(stack, st.clone())
		case 0x0b: // restore_state
			if len(stack) == 0 {
				return false
			}
			// GDB restores the whole row, CFA included.
			*st = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		case 0x0c: // def_cfa
			st.reg = int(r.uleb())
			st.off = int64(r.uleb())
			st.expr = false
		case 0x0d: // def_cfa_register
			st.reg = int(r.uleb())
			st.expr = false
		case 0x0e: // def_cfa_offset
			st.off = int64(r.uleb())
		case 0x0f: // def_cfa_expression
			n := r.uleb()
			r.bytes(int(min(n, uint64(len(b)))))
			st.expr = true
		case 0x10: // expression
			reg := int(r.uleb())
			n := r.uleb()
			r.bytes(int(min(n, uint64(len(b)))))
			st.regs[reg] = RegRule{Kind: RuleExpression}
		case 0x11: // offset_extended_sf
			reg := int(r.uleb())
			st.regs[reg] = RegRule{Kind: RuleOffset, Offset: r.sleb() * ci.dataAlign}
		case 0x12: // def_cfa_sf
			st.reg = int(r.uleb())
			st.off = r.sleb() * ci.dataAlign
			st.expr = false
		case 0x13: // def_cfa_offset_sf
			st.off = r.sleb() * ci.dataAlign
		case 0x14: // val_offset
			reg := int(r.uleb())
			st.regs[reg] = RegRule{Kind: RuleValOffset, Offset: int64(r.uleb()) * ci.dataAlign}
		case 0x15: // val_offset_sf
			reg := int(r.uleb())
			st.regs[reg] = RegRule{Kind: RuleValOffset, Offset: r.sleb() * ci.dataAlign}
		case 0x16: // val_expression
			reg := int(r.uleb())
			n := r.uleb()
			r.bytes(int(min(n, uint64(len(b)))))
			st.regs[reg] = RegRule{Kind: RuleValExpression}
		case 0x1d: // MIPS_advance_loc8
			if !advance(r.u64()) {
				return true
			}
		case 0x2d: // GNU_window_save (SPARC/AArch64); nothing for us
		case 0x2e: // GNU_args_size
			r.uleb()
		case 0x2f: // GNU_negative_offset_extended
			reg := int(r.uleb())
			st.regs[reg] = RegRule{Kind: RuleOffset, Offset: -int64(r.uleb()) * ci.dataAlign}
		default:
			return false
		}
		if r.bad {
			return false
		}
	}
	return true
}
