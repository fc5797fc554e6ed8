package espcore

import "encoding/binary"

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
)

// codeOracle tells whether an address is code, for stopping unwinds and for
// validating scanned return addresses.
type codeOracle struct {
	sym  Symbolizer
	chip chipInfo
}

func (o codeOracle) inELF(a uint32) bool { return o.sym != nil && o.sym.IsCode(uint64(a)) }

func (o codeOracle) exec(a uint32) bool {
	if o.inELF(a) || o.chip.inROM(a) {
		return true
	}
	if o.sym == nil {
		// No ELF: accept the usual instruction buses.
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
		if !ok {
			if !scan {
				break
			}
			v, slot, found := scanStack(m, o, archRISCV, x[2], pc)
			if !found {
				break
			}
			frames = append(frames, rawFrame{v, MethodScan})
			// The callee saved ra just below its CFA, which is our sp.
			pc, x[2], first = v, slot+4, false
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
			}
		}
		if stop {
			break
		}
		nx[2] = cfa
		npc := nx[1]
		if npc == 0 || cfa < x[2] || (cfa == x[2] && npc == pc) {
			break
		}
		frames = append(frames, rawFrame{npc, MethodCFI})
		pc, x, first = npc, nx, false
	}
	return frames
}

const scanLimit = 1024 // words

// scanStack looks upward from sp for a word that is a plausible return
// address: in ELF text just after a call, or inside the chip's ROM.
func scanStack(m *memory, o codeOracle, a arch, sp uint32, cur uint32) (uint32, uint32, bool) {
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
		if o.inELF(v) && afterCall(o.sym, a, v) {
			return v, slot, true
		}
		if o.chip.inROM(v) && !o.inELF(v) {
			return v, slot, true
		}
	}
	return 0, 0, false
}

// afterCall reports whether the instruction before addr is a call.
func afterCall(s Symbolizer, a arch, addr uint32) bool {
	if s == nil || addr < 4 {
		return false
	}
	switch a {
	case archRISCV:
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
	case archXtensa:
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
