package espcore

import (
	"fmt"
	"strings"
)

func banner(title string) string {
	const width = 63
	t := " " + title + " "
	if len(t) >= width {
		return t
	}
	l := (width - len(t)) / 2
	return strings.Repeat("=", l) + t + strings.Repeat("=", width-len(t)-l)
}

// Text renders the report laid out like esp-coredump's info_corefile.
func (r *Report) Text() string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	chip := strings.ToUpper(r.Chip)
	if chip == "" {
		chip = "ESP"
	}
	p("%s\n%s\n", strings.Repeat("=", 63), banner(chip+" CORE DUMP START"))
	p("Dump format: %s (version 0x%08x, %s input)", r.VersionName, r.Version, r.Input)
	if r.ChipRev != nil {
		p(", chip revision v%d.%d", *r.ChipRev/100, *r.ChipRev%100)
	}
	p("\n")
	switch {
	case r.Checksum.Kind == "none":
		p("Checksum: none\n")
	case r.Checksum.OK:
		p("Checksum: %s OK\n", r.Checksum.Kind)
	case r.Checksum.Stored == "":
		p("Checksum: %s not checked: dump truncated\n", r.Checksum.Kind)
	default:
		p("Checksum: %s MISMATCH (stored %s, computed %s)\n", r.Checksum.Kind, r.Checksum.Stored, r.Checksum.Computed)
	}
	switch {
	case r.ELFMatch == nil && r.ELFSHA256 == "":
		p("App ELF: not given\n")
	case r.ELFMatch == nil:
		p("App ELF SHA-256: %s (dump carries no prefix to check)\n", r.ELFSHA256)
	case *r.ELFMatch:
		p("App ELF SHA-256: %s matches dump prefix %s\n", r.ELFSHA256, r.AppELFSHAPrefix)
	default:
		p("App ELF SHA-256: %s DOES NOT MATCH dump prefix %s\n", r.ELFSHA256, r.AppELFSHAPrefix)
	}
	for _, w := range r.Warnings {
		p("Warning: %s\n", w)
	}
	p("\n")
	if r.CrashedSkipped {
		p("Crashed task has been skipped.\n")
	} else if r.CrashedTask != nil {
		p("Crashed task handle: 0x%x, name: '%s'\n", r.CrashedTask.TCB, r.CrashedTask.Name)
	}
	if r.ISRContext != nil {
		if *r.ISRContext {
			p("Crash happened in the interrupt context\n")
		} else {
			p("Crashed task is not in the interrupt context\n")
		}
	}
	if r.PanicReason != "" {
		p("Panic reason: %s\n", r.PanicReason)
	}
	p("\n%s\n", banner("CURRENT THREAD REGISTERS"))
	if e := r.Exception; e != nil {
		if r.Arch == "xtensa" {
			p("%-15s0x%x (%s)\n", "exccause", e.Cause, e.CauseName)
			if e.ExcVAddr != nil {
				p("%-15s0x%x\n", "excvaddr", *e.ExcVAddr)
			}
			for _, x := range e.EPC {
				p("%-15s0x%x\n", x.Name, x.Value)
			}
			for _, x := range e.EPS {
				p("%-15s0x%x\n", x.Name, x.Value)
			}
		} else {
			p("%-15s0x%x (%s)\n", "mcause", e.Cause, e.CauseName)
			if e.MTVal != nil {
				p("%-15s0x%x\n", "mtval", *e.MTVal)
			}
			if e.MEPC != nil {
				p("%-15s0x%x\n", "mepc", *e.MEPC)
			}
			if e.MStatus != nil {
				p("%-15s0x%x\n", "mstatus", *e.MStatus)
			}
		}
	}
	for _, x := range r.Registers {
		if x.Symbol != "" {
			p("%-15s0x%-18x<%s>\n", x.Name, x.Value, x.Symbol)
		} else {
			p("%-15s0x%-18x%d\n", x.Name, x.Value, int32(x.Value))
		}
	}
	if len(r.Threads) > 0 {
		p("\n%s\n", banner("CURRENT THREAD STACK"))
		writeFrames(&b, r.Threads[0].Frames)
	}
	p("\n%s\n", banner("THREADS INFO"))
	p("%10s %16s %8s %16s %s\n", "TCB", "NAME", "PRIO C/B", "STACK USED/FREE", "STATE")
	p("---------- ---------------- -------- ---------------- ---------\n")
	for _, t := range r.Threads {
		prio := "?/?"
		if t.Priority != nil {
			bp := "?"
			if t.BasePriority != nil {
				bp = fmt.Sprint(*t.BasePriority)
			}
			prio = fmt.Sprintf("%d/%s", *t.Priority, bp)
		}
		st := "?/?"
		if t.StackUsed != nil {
			st = fmt.Sprintf("%d/%d", *t.StackUsed, *t.StackFree)
		}
		p("0x%08x %16s %8s %16s %s\n", t.TCB, t.Name, prio, st, t.State)
	}
	for _, t := range r.Threads {
		p("\n%s\n", banner(fmt.Sprintf("THREAD %d (TCB: 0x%08x, name: '%s')", t.Index, t.TCB, t.Name)))
		if t.Corrupted != "" {
			p("Corrupted: %s\n", t.Corrupted)
		}
		writeFrames(&b, t.Frames)
		if t.Truncated {
			p("(backtrace truncated)\n")
		}
	}
	p("\n%s\n", banner("ALL MEMORY REGIONS"))
	p("Name   Address   Size   Attrs\n")
	for _, m := range r.Memory {
		attr := "RW "
		if m.Exec {
			attr = "RWX"
		}
		p(".coredump.%s 0x%08x 0x%x %s\n", m.Kind, m.Address, m.Size, attr)
	}
	p("\n%s\n%s\n", banner(chip+" CORE DUMP END"), strings.Repeat("=", 63))
	return b.String()
}

func writeFrames(b *strings.Builder, fr []Frame) {
	for i, f := range fr {
		// GDB prints the outer frames of an inline chain without address.
		addr := fmt.Sprintf("0x%08x in ", f.PC)
		if i > 0 && fr[i-1].Inlined && fr[i-1].PC == f.PC {
			addr = ""
		}
		fmt.Fprintf(b, "#%-2d %s%s ()", i, addr, f.Function)
		if f.File != "" {
			fmt.Fprintf(b, " at %s:%d", f.File, f.Line)
		}
		if f.Method != "" {
			fmt.Fprintf(b, " [%s]", f.Method)
		}
		b.WriteByte('\n')
	}
}
