package espcore

import (
	"encoding/binary"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// rawFrame is an unwound PC before symbolization.
type rawFrame struct {
	pc     uint32
	method string // regs, windowed, cfi, scan
}

// Frame discovery methods.
const (
	MethodRegs     = "regs"
	MethodWindowed = "windowed"
	MethodCFI      = "cfi"
	MethodScan     = "scan"
	MethodRA       = "ra" // caller from the ra register: the innermost function has no unwind info
)

// codeOracle tells whether an address is code, for stopping unwinds and for
// validating scanned return addresses.
type codeOracle struct {
	sym  Symbolizer
	chip chips.Chip
}

func (o codeOracle) inELF(a uint32) bool { return o.sym != nil && o.sym.IsCode(uint64(a)) }

func (o codeOracle) exec(a uint32) bool {
	if o.inELF(a) || o.chip.InROM(a) {
		return true
	}
	if o.sym == nil {
		// No ELF: accept the usual instruction buses.
		if o.chip.Arch == chips.RISCV && o.chip.ROMHi <= 0x40100000 {
			// C- and H-series: IRAM (C3/C2), HP SRAM (C6 and later) and the flash
			// window; the rest of 0x4xxx_xxxx is data or unmapped, and stack words
			// such as ASCII text would otherwise pass for code.
			return a >= 0x4037C000 && a < 0x403E0000 || a >= 0x40800000 && a < 0x40880000 || a >= 0x42000000 && a < 0x43000000
		}
		return a >= 0x40000000 && a < 0x50000000
	}
	return false
}

// unwindXtensa walks the windowed-ABI base save areas (§3.2): the 16 bytes
// below a frame's SP hold its caller's a0..a3, spilled by the panic handler.
func unwindXtensa(m *memory, o codeOracle, regs []uint32, max int) []rawFrame {
	if len(regs) < xNumRegs || max <= 0 {
		return nil
	}
	pc, sp, ret := regs[xPC], regs[xA0+1], regs[xA0]
	frames := []rawFrame{{pc, MethodRegs}}
	for len(frames) < max {
		if ret == 0 {
			break
		}
		hi := pc & 0xC0000000
		if hi == 0 || hi == 0xC0000000 {
			hi = 0x40000000 // bad first pc (InstrFetchProhibited): all code is in 0x4000_0000–0x7FFF_FFFF
		}
		cpc := ret&0x3FFFFFFF | hi
		if !o.exec(cpc) {
			break
		}
		frames = append(frames, rawFrame{cpc, MethodWindowed})
		nret, ok1 := m.u32(sp - 16)
		nsp, ok2 := m.u32(sp - 12)
		if !ok1 || !ok2 || nsp <= sp || nsp&15 != 0 {
			break
		}
		pc, sp, ret = cpc, nsp, nret
	}
	return frames
}

// unwindRISCV follows DWARF CFI (§3.3), falling back to a stack scan where
// no FDE covers the PC (ROM code).
func unwindRISCV(m *memory, o codeOracle, regs []uint32, max int, scan bool) []rawFrame {
	if len(regs) < 32 || max <= 0 {
		return nil
	}
	var x [32]uint32
	copy(x[:], regs)
	pc := x[0]
	x[0] = 0
	frames := []rawFrame{{pc, MethodRegs}}
	first := true
	for len(frames) < max {
		look := pc
		if !first {
			look = pc - 1 // return addresses may sit just past the FDE's end
		}
		var row Row
		ok := false
		if o.sym != nil {
			row, ok = o.sym.CFARule(uint64(look))
		}
		if !ok && first && leafReturn(m, o, x[1], pc) {
			// No CFI for the innermost function (a leaf in assembly or ROM, or no ELF):
			// a leaf keeps its return address in ra and leaves sp alone, so its caller
			// is ra, and the stack is still the caller's. Scanning instead would skip
			// the caller, whose own return address is the first one on the stack.
			frames = append(frames, rawFrame{x[1], MethodRA})
			pc, first = x[1], false
			continue
		}
		if !ok {
			if !scan {
				break
			}
			v, nsp, found := scanStack(m, o, chips.RISCV, x[2], pc)
			if !found {
				break
			}
			frames = append(frames, rawFrame{v, MethodScan})
			pc, x[2], first = v, nsp, false
			continue
		}
		if row.CFAReg < 0 || row.CFAReg >= 32 {
			break
		}
		cfa := x[row.CFAReg] + uint32(row.CFAOffset)
		nx := x
		stop := false
		for reg, r := range row.Regs {
			if reg < 1 || reg >= 32 {
				continue
			}
			switch r.Kind {
			case RuleUndefined:
				if reg == 1 {
					stop = true // outermost frame, e.g. vPortTaskWrapper
				}
			case RuleOffset:
				v, ok := m.u32(cfa + uint32(r.Offset))
				if !ok {
					if reg == 1 {
						stop = true
					}
					continue
				}
				nx[reg] = v
			case RuleValOffset:
				nx[reg] = cfa + uint32(r.Offset)
			case RuleRegister:
				if r.Reg >= 0 && r.Reg < 32 {
					nx[reg] = x[r.Reg]
				}
			case RuleSameValue:
			default: // DWARF expressions: unsupported
				if reg == 1 {
					stop = true
				}
			}
		}
		if stop {
			break
		}
		nx[2] = cfa
		npc := nx[1]
		if npc == 0 || cfa < x[2] || (cfa == x[2] && npc == pc) || !o.exec(npc) {
			break
		}
		frames = append(frames, rawFrame{npc, MethodCFI})
		pc, x, first = npc, nx, false
	}
	return frames
}

// leafReturn reports whether ra can be the return address of the innermost
// function at pc: code after a call that targets pc's function (with an ELF to
// check against), and not an address the dump itself holds as data.
func leafReturn(m *memory, o codeOracle, ra, pc uint32) bool {
	if ra == 0 || ra == pc || ra&1 != 0 || !o.exec(ra) || m.find(ra, 1) != nil {
		return false
	}
	if o.sym == nil {
		return true
	}
	if o.inELF(ra) {
		return afterCall(o.sym, chips.RISCV, ra) && callReaches(o, chips.RISCV, ra, pc)
	}
	return o.chip.InROM(ra) && ra&0xff != 0
}

const scanLimit = 1024 // words

// scanStack looks upward from sp for a word that is a plausible return
// address: in ELF text just after a call, or inside the chip's ROM. It
// returns the address and the caller's sp at the call.
func scanStack(m *memory, o codeOracle, a chips.Arch, sp uint32, cur uint32) (uint32, uint32, bool) {
	seg := m.find(sp, 4)
	if seg == nil {
		return 0, 0, false
	}
	for i := 0; i < scanLimit; i++ {
		slot := sp + uint32(4*i)
		if slot < sp {
			break
		}
		v, ok := m.u32(slot)
		if !ok {
			break
		}
		if v == cur || v&1 != 0 {
			continue
		}
		if o.inELF(v) && afterCall(o.sym, a, v) && callReaches(o, a, v, cur) {
			if nsp, ok := plausibleResume(m, o, v, slot+4); ok {
				return v, nsp, true
			}
		}
		// Without an ELF nothing can be checked: any code-bus word that is not
		// an address of the captured memory (TCBs, stacks) is taken; round
		// values are usually table pointers.
		if o.sym == nil && o.exec(v) && m.find(v, 1) == nil && v&0xff != 0 {
			return v, slot + 4, true
		}
		// ROM code is not in the ELF, so ROM return addresses cannot be
		// checked; round values are usually pointers to ROM tables.
		if o.chip.InROM(v) && !o.inELF(v) && v&0xff != 0 {
			return v, slot + 4, true
		}
	}
	return 0, 0, false
}

// plausibleResume checks a scanned return address by unwinding a few CFI
// steps from it: a real caller saved its own ra where its CFI says, and
// that value must again look like a return address (or the chain must end
// there). The callee saved ra somewhere below its CFA (variadic functions
// keep their register save area above it), so candidate sps are the
// 16-aligned values just above the slot. It returns the sp to resume with.
func plausibleResume(m *memory, o codeOracle, pc, minSP uint32) (uint32, bool) {
	if o.sym == nil {
		return minSP, true
	}
	// At most 32 bytes: the RV32 vararg save area for a1..a7.
	for k := uint32(0); k < 3; k++ {
		sp := (minSP+15)&^15 + 16*k
		if ok, unchecked := chainOK(m, o, pc, sp, 3); unchecked {
			return minSP, true // nothing to check against
		} else if ok {
			return sp, true
		}
	}
	return 0, false
}

// chainOK reports whether unwinding depth CFI steps from (pc, sp) stays on
// plausible return addresses. unchecked is true when there was nothing to
// check (no CFI or a frame-pointer CFA), so the sp guess cannot be refined.
func chainOK(m *memory, o codeOracle, pc, sp uint32, depth int) (ok, unchecked bool) {
	row, found := o.sym.CFARule(uint64(pc - 1))
	if !found || row.CFAReg != 2 {
		return true, true
	}
	r, saved := row.Regs[1]
	if !saved {
		return false, false // it made a call, so it must have saved ra
	}
	switch r.Kind {
	case RuleUndefined:
		return true, false
	case RuleOffset:
	default:
		return true, true
	}
	cfa := sp + uint32(row.CFAOffset)
	ra, okm := m.u32(cfa + uint32(r.Offset))
	if !okm || ra == 0 {
		return false, false
	}
	rom := o.chip.InROM(ra) && !o.inELF(ra)
	if !(o.inELF(ra) && afterCall(o.sym, chips.RISCV, ra) || rom && ra&0xff != 0) {
		return false, false
	}
	if depth <= 1 || rom {
		return true, false
	}
	ok, _ = chainOK(m, o, ra, cfa, depth-1)
	return ok, false
}

// callReaches rejects a candidate return address whose call instruction
// provably targets somewhere else than the function we are unwinding from
// (cur): stale return addresses left in a frame's locals fail this.
func callReaches(o codeOracle, a chips.Arch, ret, cur uint32) bool {
	if a != chips.RISCV {
		return true
	}
	target, ok := riscvCallTarget(o.sym, ret)
	if !ok {
		return true
	}
	if !o.inELF(cur) {
		return !o.inELF(target) // ROM code is reached by a direct call into ROM
	}
	tn, ok1 := o.sym.Symbol(uint64(target))
	cn, ok2 := o.sym.Symbol(uint64(cur))
	return !ok1 || !ok2 || tn == cn
}

func sext(v uint32, bits uint) uint32 { return uint32(int32(v<<(32-bits)) >> (32 - bits)) }

// riscvCallTarget decodes the target of the call ending at ret when it is
// direct: jal, c.jal, or auipc/lui followed by jalr.
func riscvCallTarget(s Symbolizer, ret uint32) (uint32, bool) {
	if s == nil || ret < 8 {
		return 0, false
	}
	if b, ok := s.ReadCode(uint64(ret-4), 4); ok && len(b) == 4 {
		in := binary.LittleEndian.Uint32(b)
		if in&3 == 3 && (in>>7)&0x1f == 1 {
			switch in & 0x7f {
			case 0x6f: // jal
				imm := (in>>31)<<20 | ((in>>21)&0x3ff)<<1 | ((in>>20)&1)<<11 | ((in>>12)&0xff)<<12
				return ret - 4 + sext(imm, 21), true
			case 0x67: // jalr rs1, imm
				rs1 := (in >> 15) & 0x1f
				lo := sext(in>>20, 12)
				if p, ok := s.ReadCode(uint64(ret-8), 4); ok && len(p) == 4 {
					pi := binary.LittleEndian.Uint32(p)
					if (pi>>7)&0x1f == rs1 {
						switch pi & 0x7f {
						case 0x17: // auipc
							return ret - 8 + pi&0xfffff000 + lo, true
						case 0x37: // lui
							return pi&0xfffff000 + lo, true
						}
					}
				}
			}
		}
	}
	if b, ok := s.ReadCode(uint64(ret-2), 2); ok && len(b) == 2 {
		h := uint32(binary.LittleEndian.Uint16(b))
		if h&0xe003 == 0x2001 { // c.jal
			imm := ((h>>12)&1)<<11 | ((h>>11)&1)<<4 | ((h>>9)&3)<<8 | ((h>>8)&1)<<10 |
				((h>>7)&1)<<6 | ((h>>6)&1)<<7 | ((h>>3)&7)<<1 | ((h>>2)&1)<<5
			return ret - 2 + sext(imm, 12), true
		}
	}
	return 0, false
}

// afterCall reports whether the instruction before addr is a call.
func afterCall(s Symbolizer, a chips.Arch, addr uint32) bool {
	if s == nil || addr < 4 {
		return false
	}
	switch a {
	case chips.RISCV:
		if b, ok := s.ReadCode(uint64(addr-4), 4); ok && len(b) == 4 {
			in := binary.LittleEndian.Uint32(b)
			if in&3 == 3 {
				op, rd := in&0x7f, (in>>7)&0x1f
				if (op == 0x6f || op == 0x67) && rd == 1 {
					return true
				}
			}
		}
		if b, ok := s.ReadCode(uint64(addr-2), 2); ok && len(b) == 2 {
			h := binary.LittleEndian.Uint16(b)
			if h&0xe003 == 0x2001 { // c.jal (RV32)
				return true
			}
			if h&0xf07f == 0x9002 && (h>>7)&0x1f != 0 { // c.jalr
				return true
			}
		}
	case chips.Xtensa:
		if b, ok := s.ReadCode(uint64(addr-3), 3); ok && len(b) == 3 {
			if b[0]&0xf == 5 { // CALLn
				return true
			}
			if b[0]&0xc0 == 0xc0 && b[0]&0xf == 0 && b[1]&0xf == 0 && b[2] == 0 { // CALLXn
				return true
			}
		}
	}
	return false
}
