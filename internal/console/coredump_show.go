package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/iotsupport/iotsupport/internal/espcore"
)

// coredumpShow is a decoded dump made readable: crashed task, fault and crashing line
// first, then every thread's backtrace, the registers and the raw text on demand. While
// PENDING the page polls itself (htmx) until the decode is recorded.
func (c *Console) coredumpShow(w http.ResponseWriter, r *http.Request) {
	devID, id := pathID(r, "id"), pathID(r, "cid")
	if devID == 0 || id == 0 {
		c.notFound(w, r)
		return
	}
	d, err := c.d.Devices.GetDevice(r.Context(), devID)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	cd, err := c.d.Coredumps.Get(r.Context(), devID, id)
	if err != nil {
		c.serviceError(w, r, err)
		return
	}
	var rep *espcore.Report
	if len(cd.Report) > 0 {
		rep = &espcore.Report{}
		if err := json.Unmarshal(cd.Report, rep); err != nil {
			c.d.Log.Warn("stored report does not parse", "coredump", id, "error", err)
			rep = nil
		}
	}
	data := map[string]any{"Device": d, "Dump": cd, "Report": rep, "Pending": cd.ParseStatus == "PENDING",
		"Self": fmt.Sprintf("/devices/%d/coredumps/%d", devID, id)}
	if rep != nil {
		data["Top"] = topFrame(rep)
	}
	c.render(w, r, http.StatusOK, "coredump", fmt.Sprintf("Core dump %d", id), data)
}

// topFrame is the crashing line: the crashed thread's first named frame outside ESP-IDF's
// panic and abort machinery (an abort() or assert's frames are panic_abort,
// esp_system_abort, abort… above the caller that failed), else its first named frame.
func topFrame(rep *espcore.Report) *espcore.Frame {
	for i := range rep.Threads {
		t := &rep.Threads[i]
		if !t.Crashed {
			continue
		}
		var first *espcore.Frame
		for j := range t.Frames {
			f := &t.Frames[j]
			if f.Function == "" {
				continue
			}
			if first == nil {
				first = f
			}
			if !panicMachinery(f) {
				return f
			}
		}
		return first
	}
	return nil
}

// panicMachinery reports frames of ESP-IDF's panic, abort and assert paths.
func panicMachinery(f *espcore.Frame) bool {
	switch f.Function {
	case "abort", "__assert_func", "__assert", "esp_system_abort", "panic_abort", "esp_panic_handler", "panic_handler",
		"xt_unhandled_exception", "panicHandler", "vApplicationStackOverflowHook":
		return true
	}
	return strings.HasPrefix(f.Function, "panic_") || strings.Contains(f.File, "/esp_system/port/") || strings.HasSuffix(f.File, "/newlib/abort.c") ||
		strings.HasSuffix(f.File, "/newlib/assert.c")
}

// coredumpReparse queues the dump for decoding again and shows it (PENDING).
func (c *Console) coredumpReparse(w http.ResponseWriter, r *http.Request) {
	devID, id := pathID(r, "id"), pathID(r, "cid")
	if err := c.d.Coredumps.Reparse(r.Context(), devID, id); err != nil {
		c.serviceError(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/devices/%d/coredumps/%d", devID, id), http.StatusSeeOther)
}
