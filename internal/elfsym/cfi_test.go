package elfsym

import (
	"debug/elf"
	"encoding/binary"
	"testing"
)

// rvInsn decodes the few RV32IC prologue instructions the test needs.
// It returns the instruction length, the sp adjustment (for addi
// sp,sp,imm / c.addi sp / c.addi16sp), whether sp is otherwise written,
// and the sp offset of a "sw ra" / "c.swsp ra" store.
func rvInsn(b []byte) (n int, spAdj int64, isAdj, writesSP bool, raOff int64, isRAStore bool) {
	if len(b) < 2 {
		return 0, 0, false, false, 0, false
	}
	h := uint32(binary.LittleEndian.Uint16(b))
	if h&3 != 3 {
		op, f3, rd := h&3, h>>13, (h>>7)&31
		switch {
		case op == 1 && f3 == 0 && rd == 2: // c.addi sp, imm
			imm := int64((h>>2)&31 | (h>>12&1)<<5)
			if imm&0x20 != 0 {
				imm -= 64
			}
			return 2, imm, true, false, 0, false
		case op == 1 && f3 == 3 && rd == 2: // c.addi16sp
			imm := int64((h>>12&1)<<9 | (h>>6&1)<<4 | (h>>5&1)<<6 | (h>>3&3)<<7 | (h>>2&1)<<5)
			if imm&0x200 != 0 {
				imm -= 1024
			}
			return 2, imm, true, false, 0, false
		case op == 2 && f3 == 6 && (h>>2)&31 == 1: // c.swsp ra
			off := int64((h>>9&15)<<2 | (h>>7&3)<<6)
			return 2, 0, false, false, off, true
		case (op == 1 || op == 2) && rd == 2 && f3 != 6 && f3 != 7 && !(op == 1 && f3 == 5):
			return 2, 0, false, true, 0, false
		}
		return 2, 0, false, false, 0, false
	}
	if len(b) < 4 {
		return 0, 0, false, false, 0, false
	}
	w := binary.LittleEndian.Uint32(b)
	opc, rd, f3, rs1 := w&0x7f, (w>>7)&31, (w>>12)&7, (w>>15)&31
	switch {
	case opc == 0x13 && f3 == 0 && rd == 2 && rs1 == 2:
		return 4, int64(int32(w) >> 20), true, false, 0, false
	case opc == 0x23 && f3 == 2 && rs1 == 2 && (w>>20)&31 == 1:
		off := int64(int32(w)>>25)<<5 | int64((w>>7)&31)
		return 4, 0, false, false, off, true
	case rd == 2 && opc != 0x23 && opc != 0x63:
		return 4, 0, false, true, 0, false
	}
	return 4, 0, false, false, 0, false
}

// TestCFIMatchesPrologue derives frame size and ra slot from each
// function's prologue bytes and checks the CFI row after the ra store.
func TestCFIMatchesPrologue(t *testing.T) {
	for _, c := range []string{"esp32c3", "esp32c3_bin", "esp32c6"} {
		t.Run(c, func(t *testing.T) {
			ix := loadIndex(t, c)
			if ix.Machine() != elf.EM_RISCV {
				t.Fatalf("machine %v", ix.Machine())
			}
			checked, entries := 0, 0
			for _, s := range ix.funcSyms {
				if !ix.IsCode(s.addr) || s.size < 8 {
					continue
				}
				// At entry the CIE rule holds: CFA = sp + 0, nothing saved.
				if row, ok := ix.CFARule(s.addr); ok && row.FDEStart == s.addr {
					entries++
					if row.CFAReg != 2 || row.CFAOffset != 0 || len(row.Regs) != 0 {
						t.Errorf("%s@%#x entry row %+v", s.name, s.addr, row)
					}
				}
				code, ok := ix.ReadCode(s.addr, int(min(s.size, 64)))
				if !ok {
					continue
				}
				n, adj, isAdj, _, _, _ := rvInsn(code)
				if !isAdj || adj >= 0 {
					continue
				}
				if _, ok := ix.CFARule(s.addr); !ok {
					continue // hand-written assembly without CFI
				}
				frame := -adj
				pos := n
				for k := 0; k < 12 && pos < len(code); k++ {
					n, _, isAdj, wsp, raOff, isRA := rvInsn(code[pos:])
					if n == 0 || isAdj || wsp {
						break
					}
					pos += n
					if !isRA {
						continue
					}
					// GCC notes saves after the block of stores.
					pc := s.addr + uint64(pos)
					row, ok := ix.CFARule(pc)
					for j := 0; j < 12 && ok && row.Regs[1].Kind != RuleOffset && pos < len(code); j++ {
						// Saves may be scheduled among other instructions.
						sn, _, adj, wsp, _, _ := rvInsn(code[pos:])
						if sn == 0 || adj || wsp {
							break
						}
						pos += sn
						pc = s.addr + uint64(pos)
						row, ok = ix.CFARule(pc)
					}
					if !ok {
						t.Errorf("%s: no CFI at %#x", s.name, pc)
						break
					}
					want := RegRule{Kind: RuleOffset, Offset: raOff - frame}
					if row.CFAReg != 2 || row.CFAOffset != frame || row.Regs[1] != want {
						t.Errorf("%s@%#x: row %+v; prologue says CFA=sp+%d, ra at CFA%+d", s.name, pc, row, frame, raOff-frame)
					}
					checked++
					break
				}
			}
			t.Logf("%d prologues, %d entry rows checked", checked, entries)
			if checked < 100 || entries < 100 {
				t.Errorf("too few functions checked: %d prologues, %d entries", checked, entries)
			}
		})
	}
}

// TestCFIUnwindStops covers the rules the unwinder relies on (§3.3).
func TestCFIUnwindStops(t *testing.T) {
	ix := loadIndex(t, "esp32c3")
	// vPortTaskWrapper marks ra undefined: outermost frame.
	row, ok := ix.CFARule(0x40384088 - 1)
	if !ok || row.Regs[1].Kind != RuleUndefined || row.RAReg != 1 {
		t.Errorf("vPortTaskWrapper row %+v ok=%v", row, ok)
	}
	// esp_system_abort's return address is the end of its FDE; only the
	// pc-1 lookup finds it.
	row, ok = ix.CFARule(0x4038368e - 1)
	if !ok || row.FDEEnd != 0x4038368e || row.CFAOffset != 16 || row.Regs[1] != (RegRule{Kind: RuleOffset, Offset: -4}) {
		t.Errorf("esp_system_abort row %+v ok=%v", row, ok)
	}
	// panic_abort: empty FDE, ra keeps its value.
	row, ok = ix.CFARule(0x40380698)
	if !ok || row.CFAOffset != 0 || len(row.Regs) != 0 {
		t.Errorf("panic_abort row %+v ok=%v", row, ok)
	}
	if _, ok := ix.CFARule(0x40000040); ok {
		t.Error("ROM address has CFI")
	}
	// .eh_frame FDE (pcrel|sdata4) from a prebuilt library.
	if ix.cfi.secs[1] == nil {
		t.Fatal("no .eh_frame parsed")
	}
	var ehFDEs int
	for _, f := range ix.cfi.fdes {
		if f.sec == 1 {
			ehFDEs++
			if !ix.IsCode(f.lo) {
				t.Errorf("eh_frame FDE at %#x not in code", f.lo)
			}
		}
	}
	if ehFDEs == 0 {
		t.Error("no .eh_frame FDEs")
	}
}
