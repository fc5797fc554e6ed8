package espcore

import "strings"

// tcbLayout holds FreeRTOS TCB member offsets; -1 means unknown.
type tcbLayout struct {
	top, prio, basePrio, stack, name, end int64
}

// Offsets seen in ESP-IDF v5.x builds, used when the ELF has no DWARF for TCB_t.
var defaultTCB = tcbLayout{top: 0, prio: 0x2C, basePrio: -1, stack: 0x30, name: 0x34, end: 0x48}

const taskNameLen = 16

func tcbLayoutFor(sym Symbolizer, _ arch) tcbLayout {
	if sym == nil {
		return defaultTCB
	}
	l := tcbLayout{-1, -1, -1, -1, -1, -1}
	get := func(m string) int64 {
		for _, s := range []string{"tskTaskControlBlock", "TCB_t", "tskTCB"} {
			if o, ok := sym.MemberOffset(s, m); ok && o >= 0 && o < 4096 {
				return o
			}
		}
		return -1
	}
	l.top, l.prio, l.basePrio = get("pxTopOfStack"), get("uxPriority"), get("uxBasePriority")
	l.stack, l.name, l.end = get("pxStack"), get("pcTaskName"), get("pxEndOfStack")
	if l.name < 0 {
		return defaultTCB
	}
	return l
}

func taskName(m *memory, l tcbLayout, tcb uint32, fallback string) string {
	if l.name < 0 {
		return fallback
	}
	b, ok := m.bytes(tcb+uint32(l.name), taskNameLen)
	if !ok {
		return fallback
	}
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		if c < 0x20 || c > 0x7e {
			sb.WriteByte('?') // corrupted TCB: keep the text printable
			continue
		}
		sb.WriteByte(c)
	}
	if sb.Len() == 0 {
		return fallback
	}
	return sb.String()
}

func fillTaskInfo(th *Thread, m *memory, l tcbLayout) {
	rd := func(off int64) (uint32, bool) {
		if off < 0 {
			return 0, false
		}
		return m.u32(th.TCB + uint32(off))
	}
	if v, ok := rd(l.prio); ok {
		th.Priority = &v
	}
	if v, ok := rd(l.basePrio); ok {
		th.BasePriority = &v
	}
	top, ok1 := rd(l.top)
	lo, ok2 := rd(l.stack)
	hi, ok3 := rd(l.end)
	if ok1 {
		th.StackTop = top
	}
	if ok2 && ok3 {
		th.StackLow, th.StackHigh = lo, hi
	}
	if ok1 && ok2 && ok3 {
		used, free := absDiff(hi, top), absDiff(top, lo)
		th.StackUsed, th.StackFree = &used, &free
		if top < min(lo, hi) || top > max(lo, hi) {
			th.Corrupted = "stack pointer outside stack bounds"
		}
	}
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}
