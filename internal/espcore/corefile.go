package espcore

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// segment is one memory region captured in the dump.
type segment struct {
	addr uint32
	data []byte
	exec bool
}

// memory is a sorted, read-only view of the dump's memory.
type memory struct{ segs []segment }

func (m *memory) add(s segment) {
	if len(m.segs) < maxSegments && len(s.data) > 0 {
		m.segs = append(m.segs, s)
	}
}

func (m *memory) sort() {
	sort.SliceStable(m.segs, func(i, j int) bool { return m.segs[i].addr < m.segs[j].addr })
}

// find returns the segment holding [a, a+n). Segments may overlap, so a
// few earlier ones are checked too.
func (m *memory) find(a uint32, n int) *segment {
	i := sort.Search(len(m.segs), func(i int) bool { return m.segs[i].addr > a }) - 1
	for k := 0; i >= 0 && k < 8; i, k = i-1, k+1 {
		s := &m.segs[i]
		if a >= s.addr && uint64(a)+uint64(n) <= uint64(s.addr)+uint64(len(s.data)) {
			return s
		}
	}
	return nil
}

func (m *memory) u32(a uint32) (uint32, bool) {
	s := m.find(a, 4)
	if s == nil {
		return 0, false
	}
	return le32(s.data, int(a-s.addr)), true
}

func (m *memory) bytes(a uint32, n int) ([]byte, bool) {
	s := m.find(a, n)
	if s == nil {
		return nil, false
	}
	o := int(a - s.addr)
	return s.data[o : o+n], true
}

// coreThread is a task as recorded by the device.
type coreThread struct {
	tcb        uint32
	regs       []uint32 // xtensa: xPC..a15; riscv: pc, x1..x31
	stackStart uint32   // binary format only
	stackEnd   uint32
	flags      uint32 // TASK_INFO flags: 1 TCB corrupted, 2 stack corrupted
	hasInfo    bool
	name       string
	frameExcCause,
	frameExcVAddr uint32 // Xtensa binary: from the saved frame
	hasFrameExc bool
}

type xtPair struct{ idx, val uint32 }

// core is the decoded dump content, independent of the container format.
type core struct {
	arch        chips.Arch
	threads     []coreThread
	mem         memory
	crashedTCB  uint32
	hasCrashed  bool
	isr         *bool
	panic       string
	excCause    *uint32
	excVAddr    *uint32
	xtPairs     []xtPair
	infoVersion uint32
	hasInfo     bool
	chipRev     *uint32
	nnotes      int
	warnings    []string
}

func (c *core) warnf(f string, a ...any) { c.warnings = append(c.warnings, fmt.Sprintf(f, a...)) }

// Note types.
const (
	ntPRStatus    = 1
	ntESPInfo     = 8266
	ntExtraInfo   = 677
	ntTaskInfo    = 678
	ntPanicDetail = 679
)

type note struct {
	name string
	typ  uint32
	desc []byte
}

// parseNotes walks a PT_NOTE payload. Names are cut at the first NUL because
// namesz is either padded or strlen+1 depending on the IDF version.
func parseNotes(b []byte, fn func(note) bool) {
	for off := 0; off+12 <= len(b); {
		namesz, descsz, typ := le32(b, off), le32(b, off+4), le32(b, off+8)
		off += 12
		na := (uint64(namesz) + 3) &^ 3
		da := (uint64(descsz) + 3) &^ 3
		if uint64(off)+na > uint64(len(b)) {
			return
		}
		name := b[off : off+int(namesz)]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		off += int(na)
		if uint64(off)+uint64(descsz) > uint64(len(b)) {
			return
		}
		desc := b[off : off+int(descsz)]
		if uint64(off)+da > uint64(len(b)) {
			off = len(b)
		} else {
			off += int(da)
		}
		if !fn(note{string(name), typ, desc}) {
			return
		}
	}
}

type elfProg struct {
	typ, off, vaddr, filesz, memsz, flags uint32
}

// coreProgs reads the ELF32 LE program headers without debug/elf, which
// insists on sections and allocates per header. An error means the bytes are not
// an ESP core ELF: not 32-bit little-endian, not a core file, neither Xtensa nor
// RISC-V, or program headers past the end.
func coreProgs(b []byte) ([]elfProg, uint16, error) {
	if len(b) < elfHeaderLen || !bytes.HasPrefix(b, elfMagic) {
		return nil, 0, fmt.Errorf("espcore: not an ELF core")
	}
	if b[4] != 1 || b[5] != 1 {
		return nil, 0, fmt.Errorf("espcore: core ELF is not 32-bit little-endian")
	}
	if typ := le16(b, 16); typ != etCore {
		return nil, 0, fmt.Errorf("espcore: ELF type %d is not a core file", typ)
	}
	machine := le16(b, 18)
	if machine != emXtensa && machine != emRISCV {
		return nil, machine, fmt.Errorf("espcore: core ELF machine %d is neither Xtensa nor RISC-V", machine)
	}
	phoff := uint64(le32(b, 28))
	phentsize := uint64(le16(b, 42))
	phnum := uint64(le16(b, 44))
	if phentsize < phEntLen {
		return nil, machine, fmt.Errorf("espcore: bad program header size %d", phentsize)
	}
	if phoff+phentsize*phnum > uint64(len(b)) {
		return nil, machine, fmt.Errorf("espcore: %d program headers at offset %d run past the %d-byte core ELF", phnum, phoff, len(b))
	}
	ps := make([]elfProg, 0, min(phnum, maxSegments))
	for i := uint64(0); i < phnum && i < maxSegments; i++ {
		p := int(phoff + i*phentsize)
		ps = append(ps, elfProg{le32(b, p), le32(b, p+4), le32(b, p+8), le32(b, p+16), le32(b, p+20), le32(b, p+24)})
	}
	return ps, machine, nil
}

// checkCoreELF is what the inspector says about a core ELF: err as from coreProgs (the
// decoder refuses it), notesCut when a note segment runs past the end (the decoder reads
// what is there).
func checkCoreELF(b []byte) (notesCut bool, err error) {
	ps, _, err := coreProgs(b)
	if err != nil {
		return false, err
	}
	for _, p := range ps {
		if p.typ == ptNote && uint64(p.off)+uint64(p.filesz) > uint64(len(b)) {
			return true, nil
		}
	}
	return false, nil
}

func le16(b []byte, off int) uint16 { return uint16(b[off]) | uint16(b[off+1])<<8 }

func progData(b []byte, p elfProg) []byte {
	if uint64(p.off) >= uint64(len(b)) {
		return nil
	}
	end := uint64(p.off) + uint64(p.filesz)
	if end > uint64(len(b)) {
		end = uint64(len(b))
	}
	return b[p.off:end]
}

type infoNote struct {
	version uint32
	sha     string
}

func parseInfoDesc(d []byte) infoNote {
	ni := infoNote{version: le32(d, 0)}
	if len(d) > 4 {
		s := d[4:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		ni.sha = strings.ToLower(strings.TrimSpace(string(s)))
		ni.sha = ni.sha[:min(len(ni.sha), 64)] // a SHA-256 in hex
		if !isHex(ni.sha) {
			ni.sha = ""
		}
	}
	return ni
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// scanInfoNote finds ESP_CORE_DUMP_INFO cheaply, for Inspect.
func scanInfoNote(b []byte) (infoNote, bool) {
	ps, _, err := coreProgs(b)
	if err != nil {
		return infoNote{}, false
	}
	var ni infoNote
	found := false
	for _, p := range ps {
		if p.typ != ptNote {
			continue
		}
		parseNotes(progData(b, p), func(n note) bool {
			if n.typ == ntESPInfo && n.name == "ESP_CORE_DUMP_INFO" {
				ni, found = parseInfoDesc(n.desc), true
				return false
			}
			return true
		})
		if found {
			break
		}
	}
	return ni, found
}

// ELF constants of ESP core files.
const (
	etCore       = 4
	emXtensa     = 94
	emRISCV      = 243
	ptLoad       = 1
	ptNote       = 4
	elfHeaderLen = 52
	phEntLen     = 32
)

// parseCoreELF builds the model from an ELF-format dump.
func parseCoreELF(b []byte) (*core, error) {
	ps, machine, err := coreProgs(b)
	if err != nil {
		return nil, err
	}
	c := &core{}
	c.arch = chips.RISCV
	if machine == emXtensa {
		c.arch = chips.Xtensa
	}
	for _, p := range ps {
		switch p.typ {
		case ptLoad:
			d := progData(b, p)
			if len(d) < int(p.filesz) {
				c.warnf("segment at 0x%08x truncated", p.vaddr)
			}
			c.mem.add(segment{addr: p.vaddr, data: d, exec: p.flags&1 != 0})
		case ptNote:
			parseNotes(progData(b, p), c.note)
		}
	}
	c.mem.sort()
	if len(c.threads) == 0 {
		return c, fmt.Errorf("espcore: core ELF has no thread notes")
	}
	return c, nil
}

const maxNotes = 8192

func (c *core) note(n note) bool {
	// Bounded so a dump full of tiny notes cannot make per-note work quadratic.
	if c.nnotes++; c.nnotes > maxNotes {
		if c.nnotes == maxNotes+1 {
			c.warnf("more than %d notes; rest ignored", maxNotes)
		}
		return false
	}
	d := n.desc
	switch {
	case n.typ == ntPRStatus && n.name == "CORE":
		if len(c.threads) >= maxThreads {
			c.warnf("more than %d threads; rest ignored", maxThreads)
			return false
		}
		t := coreThread{tcb: le32(d, 24)}
		switch c.arch {
		case chips.Xtensa:
			r := make([]uint32, xNumRegs)
			for i := 0; i < 6; i++ {
				r[i] = le32(d, 72+4*i)
			}
			for i := 0; i < 16; i++ {
				r[xA0+i] = le32(d, 72+4*(64+i))
			}
			t.regs = r
		case chips.RISCV:
			r := make([]uint32, 32)
			for i := range r {
				r[i] = le32(d, 72+4*i)
			}
			t.regs = r
		}
		if len(d) < 72+4*16 {
			c.warnf("thread 0x%08x: short register note (%d bytes)", t.tcb, len(d))
		}
		c.threads = append(c.threads, t)
	case n.typ == ntESPInfo && n.name == "ESP_CORE_DUMP_INFO":
		ni := parseInfoDesc(d)
		c.infoVersion, c.hasInfo = ni.version, true
	case n.typ == ntESPInfo && n.name == "ESP_CHIP_REV":
		r := le32(d, 0)
		c.chipRev = &r
	case n.typ == ntExtraInfo && (n.name == "ESP_EXTRA_INFO" || n.name == "EXTRA_INFO"):
		if len(d) < 4 {
			return true
		}
		c.crashedTCB, c.hasCrashed = le32(d, 0), true
		switch c.arch {
		case chips.Xtensa:
			if len(d) >= 20 {
				// By position: esp-coredump's binary conversion writes indexes 0/1 here.
				ec, ev := le32(d, 8), le32(d, 16)
				c.excCause, c.excVAddr = &ec, &ev
			}
			for i := 0; i < 16 && 20+8*i+8 <= len(d); i++ {
				idx, val := le32(d, 20+8*i), le32(d, 24+8*i)
				if idx != 0 {
					c.xtPairs = append(c.xtPairs, xtPair{idx, val})
				}
			}
			if len(d) >= 152 {
				v := le32(d, 148) != 0
				c.isr = &v
			}
		case chips.RISCV:
			if len(d) >= 8 {
				v := le32(d, 4) != 0
				c.isr = &v
			}
		}
	case n.typ == ntPanicDetail && n.name == "ESP_PANIC_DETAILS":
		s := d
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		c.panic = strings.TrimRight(string(s), "\r\n ")
	case n.typ == ntTaskInfo && n.name == "TASK_INFO":
		// esp-coredump converted binary dumps: flags and name per task.
		tcb := le32(d, 8)
		for i := range c.threads {
			if c.threads[i].tcb == tcb {
				c.threads[i].flags, c.threads[i].hasInfo = le32(d, 4), true
				c.threads[i].stackStart = le32(d, 12)
				c.threads[i].stackEnd = le32(d, 12) + le32(d, 16)
				if len(d) >= 36 {
					nm := d[20:36]
					if j := bytes.IndexByte(nm, 0); j >= 0 {
						nm = nm[:j]
					}
					c.threads[i].name = string(nm)
				}
			}
		}
	}
	return true
}

// parseBinary converts the legacy binary format (tasks + memory segments).
func parseBinary(body []byte, a chips.Arch, tasks, tcbSz, segs uint32) (*core, error) {
	c := &core{arch: a}
	if tcbSz > 1<<16 {
		return nil, fmt.Errorf("espcore: implausible TCB size %d", tcbSz)
	}
	off := 0
	for i := uint32(0); i < tasks; i++ {
		if len(c.threads) >= maxThreads {
			c.warnf("more than %d tasks; rest ignored", maxThreads)
			break
		}
		if off+12 > len(body) {
			c.warnf("task %d header truncated", i)
			break
		}
		tcb, ss, se := le32(body, off), le32(body, off+4), le32(body, off+8)
		off += 12
		tcbEnd := off + int(tcbSz)
		if tcbEnd > len(body) {
			c.warnf("task %d TCB truncated", i)
			break
		}
		c.mem.add(segment{addr: tcb, data: body[off:tcbEnd]})
		off = align4(tcbEnd)
		lo, hi := ss, se
		if lo > hi {
			lo, hi = hi, lo
		}
		sl := uint64(hi - lo)
		if uint64(off)+sl > uint64(len(body)) {
			c.warnf("task %d stack truncated", i)
			break
		}
		stack := body[off : off+int(sl)]
		off = align4(off + int(sl))
		c.mem.add(segment{addr: lo, data: stack})
		t := coreThread{tcb: tcb, stackStart: ss, stackEnd: se}
		t.regs = regsFromFrame(c.arch, stack, &t)
		if t.regs == nil {
			c.warnf("task 0x%08x: stack too small for a saved frame", tcb)
			t.flags |= 2
		}
		if i == 0 {
			c.crashedTCB, c.hasCrashed = tcb, true
			if t.hasFrameExc {
				ec, ev := t.frameExcCause, t.frameExcVAddr
				c.excCause, c.excVAddr = &ec, &ev
			}
		}
		c.threads = append(c.threads, t)
	}
	for i := uint32(0); i < segs && i < maxSegments; i++ {
		if off+8 > len(body) {
			c.warnf("memory segment %d truncated", i)
			break
		}
		start, size := le32(body, off), le32(body, off+4)
		off += 8
		if uint64(off)+uint64(size) > uint64(len(body)) {
			c.warnf("memory segment %d truncated", i)
			break
		}
		c.mem.add(segment{addr: start, data: body[off : off+int(size)]})
		off = align4(off + int(size))
	}
	c.mem.sort()
	if len(c.threads) == 0 {
		return c, fmt.Errorf("espcore: binary dump holds no tasks")
	}
	return c, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// regsFromFrame recovers registers from the frame saved at the stack top (§2.8).
func regsFromFrame(a chips.Arch, st []byte, t *coreThread) []uint32 {
	switch a {
	case chips.Xtensa:
		if len(st) < 8*4 {
			return nil
		}
		r := make([]uint32, xNumRegs)
		if le32(st, 0) != 0 { // XtExcFrame
			if len(st) < 25*4 {
				return nil
			}
			r[xPC], r[xPS] = le32(st, 4), le32(st, 8)
			for i := 0; i < 16; i++ {
				r[xA0+i] = le32(st, 12+4*i)
			}
			r[xSAR], r[xLBEG], r[xLEND], r[xLCOUNT] = le32(st, 76), le32(st, 88), le32(st, 92), le32(st, 96)
			t.frameExcCause, t.frameExcVAddr, t.hasFrameExc = le32(st, 80), le32(st, 84), true
		} else { // XtSolFrame: only a0..a3
			r[xPC], r[xPS] = le32(st, 4), le32(st, 8)
			for i := 0; i < 4; i++ {
				r[xA0+i] = le32(st, 16+4*i)
			}
		}
		if r[xPS]&(1<<5) != 0 {
			r[xPS] &^= 1 << 4 // as the device does, so the frame is unwound as windowed
		}
		return r
	case chips.RISCV:
		if len(st) < 32*4 {
			return nil
		}
		r := make([]uint32, 32)
		for i := range r {
			r[i] = le32(st, 4*i)
		}
		return r
	}
	return nil
}
