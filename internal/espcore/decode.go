package espcore

import (
	"debug/elf"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// Options tunes decoding; zero values pick safe defaults.
type Options struct {
	MaxFrames  int  // per thread, default 64
	MaxThreads int  // default 64
	NoScan     bool // disable the heuristic stack scan
}

func (o *Options) norm() {
	if o.MaxFrames <= 0 {
		o.MaxFrames = 64
	}
	o.MaxFrames = min(o.MaxFrames, maxFrames)
	if o.MaxThreads <= 0 {
		o.MaxThreads = 64
	}
	o.MaxThreads = min(o.MaxThreads, maxThreads)
}

// recoverPanics is turned off by the fuzz tests so that bugs surface.
var recoverPanics = true

// DecodeWith decodes a dump with any Symbolizer (nil means no ELF).
func DecodeWith(dump []byte, sym Symbolizer, opts Options) (rep *Report, err error) {
	if recoverPanics {
		defer func() {
			if r := recover(); r != nil {
				// Safety net only; fuzzing is what keeps this path unused.
				rep, err = nil, fmt.Errorf("espcore: internal error decoding dump: %v", r)
			}
		}()
	}
	opts.norm()
	ct, err := unwrap(dump)
	if err != nil {
		return nil, err
	}
	rep = &Report{
		Input: ct.hdr.Kind, DumpFormat: ct.hdr.Format, Version: ct.hdr.Version, VersionName: ct.hdr.VersionName,
		ChipID: ct.hdr.ChipID, Chip: ct.hdr.Chip, ChipRev: ct.hdr.ChipRev, Checksum: ct.checksum,
		Registers: []Register{}, Threads: []Thread{}, Memory: []MemRegion{},
	}
	rep.Warnings = append(rep.Warnings, ct.warnings...)
	var c *core
	if ct.elfCore != nil {
		c, err = parseCoreELF(ct.elfCore)
	} else {
		ci, known := chipByID(ct.hdr.ChipID)
		if !known {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("chip id 0x%04x is not in the chip table: its architecture, and so the task registers, are unknown", ct.hdr.ChipID))
		}
		c, err = parseBinary(ct.binBody, ci.Arch, ct.tasksNum, ct.tcbSz, ct.segsNum)
	}
	if c == nil {
		return nil, err
	}
	if err != nil && len(c.threads) == 0 {
		return nil, err
	}
	rep.Warnings = append(rep.Warnings, c.warnings...)
	if ct.hasHdr && c.hasInfo && c.infoVersion != ct.hdr.Version {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("info note version 0x%08x differs from header version 0x%08x", c.infoVersion, ct.hdr.Version))
	}
	if rep.ChipRev == nil {
		rep.ChipRev = c.chipRev
	}
	chip, known := chips.ByID(rep.ChipID)
	if rep.Version == 0 || !known || chip.Arch != c.arch {
		// No chip (or one the core ELF contradicts): the core's architecture, a generic ROM range.
		chip = chips.Chip{Title: rep.Chip, Arch: c.arch, ROMLo: 0x40000000, ROMHi: 0x40070000}
	}
	rep.Arch = string(c.arch)
	if rep.Arch == "" {
		rep.Arch = "unknown"
	}
	rep.AppELFSHAPrefix = ct.hdr.AppELFSHAPrefix

	if sym != nil {
		sum := sym.SHA256()
		rep.ELFSHA256 = hex.EncodeToString(sum[:])
		want := elf.EM_XTENSA
		if c.arch == chips.RISCV {
			want = elf.EM_RISCV
		}
		if m := sym.Machine(); m != want {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("app ELF is for %v but the dump is %s; symbols ignored", m, c.arch))
			sym = nil
		} else if rep.AppELFSHAPrefix != "" {
			ok := strings.HasPrefix(rep.ELFSHA256, rep.AppELFSHAPrefix)
			rep.ELFMatch = &ok
			if !ok {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("app ELF SHA-256 %s does not match the dump's %s: wrong firmware ELF, names and lines may be wrong", rep.ELFSHA256, rep.AppELFSHAPrefix))
			}
		}
	}
	o := codeOracle{sym: sym, chip: chip}
	lay := tcbLayoutFor(sym, c.arch)
	lists := loadTaskLists(sym, &c.mem)

	// Crashed task, ISR, panic.
	if c.hasCrashed {
		if c.crashedTCB == 0xDEADBEEF {
			rep.CrashedSkipped = true
		} else {
			rep.CrashedTask = &TaskRef{TCB: c.crashedTCB, Name: taskName(&c.mem, lay, c.crashedTCB, "")}
		}
	}
	rep.ISRContext = c.isr
	rep.PanicReason = c.panic

	// Threads.
	for i, t := range c.threads {
		if i >= opts.MaxThreads {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("only the first %d of %d threads decoded", opts.MaxThreads, len(c.threads)))
			break
		}
		th := Thread{Index: i + 1, TCB: t.tcb, Name: taskName(&c.mem, lay, t.tcb, t.name), Frames: []Frame{}}
		th.Crashed = rep.CrashedTask != nil && t.tcb == rep.CrashedTask.TCB
		if th.Crashed {
			th.State = "crashed"
		} else {
			th.State = lists.state(&c.mem, lay, t.tcb)
		}
		fillTaskInfo(&th, &c.mem, lay)
		if t.flags&1 != 0 {
			th.Corrupted = "tcb"
		}
		if t.flags&2 != 0 || fakeStack(t.regs, c.arch) {
			th.Corrupted = "stack"
		}
		if t.regs != nil {
			var raw []rawFrame
			if th.Corrupted == "stack" {
				raw = []rawFrame{{t.regs[0], MethodRegs}}
			} else if c.arch == chips.Xtensa {
				raw = unwindXtensa(&c.mem, o, t.regs, opts.MaxFrames)
			} else {
				raw = unwindRISCV(&c.mem, o, t.regs, opts.MaxFrames, !opts.NoScan)
			}
			th.Frames = symbolize(sym, raw, opts.MaxFrames*4)
			th.Truncated = len(raw) >= opts.MaxFrames
		}
		rep.Threads = append(rep.Threads, th)
	}
	if rep.CrashedTask != nil && rep.CrashedTask.Name == "" {
		for _, th := range rep.Threads {
			if th.TCB == rep.CrashedTask.TCB {
				rep.CrashedTask.Name = th.Name
			}
		}
	}

	// Current thread (thread 1) registers and exception.
	if len(c.threads) > 0 && c.threads[0].regs != nil {
		r := c.threads[0].regs
		names := xtensaRegNames
		if c.arch == chips.RISCV {
			names = riscvRegNames[:]
		}
		for i, n := range names {
			if i < len(r) {
				reg := Register{Name: n, Value: r[i]}
				if (n == "pc" || n == "ra") && sym != nil && sym.IsCode(uint64(r[i])) {
					reg.Symbol = symbolPlusOffset(sym, r[i])
				}
				rep.Registers = append(rep.Registers, reg)
			}
		}
	}
	rep.Exception = exception(c, chip)

	// Memory summary.
	tcbs := map[uint32]bool{}
	for _, t := range c.threads {
		tcbs[t.tcb] = true
	}
	for _, s := range c.mem.segs {
		k := "data"
		if tcbs[s.addr] {
			k = "tcb"
		} else if isStackSeg(c, s) || inTaskStack(rep.Threads, s.addr) {
			k = "stack"
		}
		rep.Memory = append(rep.Memory, MemRegion{Address: s.addr, Size: uint32(len(s.data)), Kind: k, Exec: s.exec})
	}
	if !rep.Checksum.OK {
		// Keep the report, but make the mismatch visible at the top.
		rep.Warnings = append([]string{"checksum mismatch: the dump may be corrupted"}, rep.Warnings...)
	}
	return rep, nil
}

func isStackSeg(c *core, s segment) bool {
	for _, t := range c.threads {
		if len(t.regs) == 0 {
			continue
		}
		sp := t.regs[2]
		if c.arch == chips.Xtensa {
			sp = t.regs[xA0+1]
		}
		if sp >= s.addr && uint64(sp) <= uint64(s.addr)+uint64(len(s.data)) {
			return true
		}
		if t.stackStart != 0 && (t.stackStart == s.addr || t.stackEnd == s.addr) {
			return true
		}
	}
	return false
}

func inTaskStack(ths []Thread, a uint32) bool {
	for _, t := range ths {
		if t.StackLow < t.StackHigh && a >= t.StackLow && a < t.StackHigh {
			return true
		}
	}
	return false
}

// fakeStack detects the dummy frame the device writes for corrupted tasks.
func fakeStack(r []uint32, a chips.Arch) bool {
	if len(r) == 0 {
		return false
	}
	sp := uint32(0)
	switch a {
	case chips.Xtensa:
		if len(r) > xA0+1 {
			sp = r[xA0+1]
		}
	case chips.RISCV:
		if len(r) > 2 {
			sp = r[2]
		}
	}
	inFake := func(v uint32) bool {
		return v >= 0x20000000 && v < 0x30000000 || (a == chips.RISCV && v >= 0x70000000 && v < 0x80000000)
	}
	return inFake(r[0]) && inFake(sp)
}

func exception(c *core, chip chips.Chip) *Exception {
	switch c.arch {
	case chips.Xtensa:
		if c.excCause == nil {
			return nil
		}
		e := &Exception{Cause: *c.excCause, CauseName: causeName(chips.Xtensa, *c.excCause), ExcVAddr: c.excVAddr}
		for _, p := range c.xtPairs {
			switch {
			case p.idx >= 177 && p.idx <= 183:
				e.EPC = append(e.EPC, Register{Name: fmt.Sprintf("epc%d", p.idx-176), Value: p.val})
			case p.idx >= 194 && p.idx <= 199:
				e.EPS = append(e.EPS, Register{Name: fmt.Sprintf("eps%d", p.idx-192), Value: p.val})
			}
		}
		return e
	case chips.RISCV:
		if len(c.threads) == 0 || len(c.threads[0].regs) < 32 {
			return nil
		}
		r := c.threads[0].regs
		// RvExcFrame at the start of the crashed task's stack segment: find the
		// segment whose first words repeat pc and sp.
		for _, s := range c.mem.segs {
			if len(s.data) < 37*4 || le32(s.data, 0) != r[0] || le32(s.data, 8) != r[2] {
				continue
			}
			mc, mt, ms, mepc := le32(s.data, 34*4), le32(s.data, 35*4), le32(s.data, 32*4), r[0]
			return &Exception{Cause: mc, CauseName: causeName(chips.RISCV, mc), MTVal: &mt, MEPC: &mepc, MStatus: &ms}
		}
	}
	return nil
}

// symbolPlusOffset renders GDB's <func+off> when the index can.
func symbolPlusOffset(sym Symbolizer, a uint32) string {
	if sa, ok := sym.(interface {
		SymbolAt(uint64) (string, uint64, bool)
	}); ok {
		if n, off, ok := sa.SymbolAt(uint64(a)); ok {
			if off == 0 {
				return n
			}
			return fmt.Sprintf("%s+%d", n, off)
		}
	}
	n, _ := sym.Symbol(uint64(a))
	return n
}

// symbolize turns raw PCs into frames, expanding inlined calls.
func symbolize(sym Symbolizer, raw []rawFrame, limit int) []Frame {
	out := make([]Frame, 0, len(raw))
	for i, f := range raw {
		if len(out) >= limit {
			break
		}
		look := uint64(f.pc)
		if i > 0 && f.method != MethodRegs {
			look-- // return address: look up the call instruction
		}
		var locs []Location
		if sym != nil {
			locs = sym.Locations(look)
		}
		if len(locs) == 0 {
			fn := "??"
			if sym != nil && sym.IsCode(look) {
				if n, ok := sym.Symbol(look); ok {
					fn = n
				}
			}
			out = append(out, Frame{PC: f.pc, Function: fn, Method: f.method})
			continue
		}
		for j, l := range locs {
			if j >= 16 {
				break
			}
			fn := l.Function
			if fn == "" {
				fn = "??"
			}
			out = append(out, Frame{PC: f.pc, Function: fn, File: l.File, Line: l.Line, Inlined: j < len(locs)-1, Method: f.method})
		}
	}
	return out
}
