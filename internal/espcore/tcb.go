package espcore

import (
	"strings"

	"github.com/iotsupport/iotsupport/internal/chips"
)

// tcbLayout holds FreeRTOS TCB member offsets; -1 means unknown.
type tcbLayout struct {
	top, prio, basePrio, stack, name, end int64
	container                             int64 // xStateListItem.pxContainer, -1 if unknown
	eventCont                             int64 // xEventListItem.pxContainer
	notify                                int64 // ucNotifyState[0]
}

// taskLists maps FreeRTOS list addresses to the state of tasks on them.
type taskLists struct {
	spans   []listSpan
	current []uint32 // pxCurrentTCBs from dumped memory, when captured
}

type listSpan struct {
	lo, hi uint64
	state  string
}

func loadTaskLists(sym Symbolizer, m *memory) taskLists {
	var tl taskLists
	if sym == nil {
		return tl
	}
	for _, l := range []struct{ name, state string }{
		{"pxReadyTasksLists", "ready"}, {"xPendingReadyList", "ready"},
		{"xDelayedTaskList1", "blocked"}, {"xDelayedTaskList2", "blocked"},
		{"xSuspendedTaskList", "suspended"}, {"xTasksWaitingTermination", "deleted"},
	} {
		if a, sz, ok := sym.DataSymbol(l.name); ok {
			if sz == 0 {
				sz = 1
			}
			tl.spans = append(tl.spans, listSpan{a, a + sz, l.state})
		}
	}
	for _, n := range []string{"pxCurrentTCBs", "pxCurrentTCB"} {
		if a, sz, ok := sym.DataSymbol(n); ok && sz <= 64 {
			for o := uint64(0); o < max(sz, 4); o += 4 {
				if v, ok := m.u32(uint32(a + o)); ok && v != 0 {
					tl.current = append(tl.current, v)
				}
			}
			break
		}
	}
	return tl
}

// state derives a task's scheduler state from the list holding it.
func (tl taskLists) state(m *memory, l tcbLayout, tcb uint32) string {
	for _, c := range tl.current {
		if c == tcb {
			return "running"
		}
	}
	if l.container < 0 || len(tl.spans) == 0 {
		return ""
	}
	c, ok := m.u32(tcb + uint32(l.container))
	if !ok {
		return ""
	}
	for _, s := range tl.spans {
		if uint64(c) >= s.lo && uint64(c) < s.hi {
			if s.state == "suspended" && l.waiting(m, tcb) {
				return "blocked" // waits without timeout, as eTaskGetState says
			}
			return s.state
		}
	}
	if c == 0 {
		return "suspended" // in no list: suspended without a timeout, or being deleted
	}
	return "blocked" // on an event list or a list we do not know
}

// Offsets seen in ESP-IDF v5.x builds, used when the ELF has no DWARF for TCB_t.
var defaultTCB = tcbLayout{top: 0, prio: 0x2C, basePrio: -1, stack: 0x30, name: 0x34, end: 0x48, container: -1, eventCont: -1, notify: -1}

const taskNameLen = 16

func tcbLayoutFor(sym Symbolizer, _ chips.Arch) tcbLayout {
	if sym == nil {
		return defaultTCB
	}
	l := tcbLayout{-1, -1, -1, -1, -1, -1, -1, -1, -1}
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
	cont := int64(-1)
found:
	for _, s := range []string{"xLIST_ITEM", "ListItem_t"} {
		// FreeRTOS renamed pvContainer to pxContainer in v10.
		for _, m := range []string{"pxContainer", "pvContainer"} {
			if o, ok := sym.MemberOffset(s, m); ok && o >= 0 && o < 64 {
				cont = o
				break found
			}
		}
	}
	if item := get("xStateListItem"); item >= 0 && cont >= 0 {
		l.container = item + cont
	}
	if item := get("xEventListItem"); item >= 0 && cont >= 0 {
		l.eventCont = item + cont
	}
	l.notify = get("ucNotifyState")
	return l
}

// waiting reports a task on an event list or waiting for a notification.
func (l tcbLayout) waiting(m *memory, tcb uint32) bool {
	if l.eventCont >= 0 {
		if v, ok := m.u32(tcb + uint32(l.eventCont)); ok && v != 0 {
			return true
		}
	}
	if l.notify >= 0 {
		if b, ok := m.bytes(tcb+uint32(l.notify), 1); ok && b[0] == 1 { // taskWAITING_NOTIFICATION
			return true
		}
	}
	return false
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
