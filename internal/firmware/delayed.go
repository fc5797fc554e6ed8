package firmware

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// delayed runs functions after a delay (firmware notifications wait until every
// replica's cached answer has expired, so a notified device polling any replica sees
// the new version). flush runs the waiting ones at once, for shutdown.
type delayed struct {
	delay time.Duration

	mu   sync.Mutex
	next int
	fns  map[int]func()
}

func (d *delayed) run(fn func()) {
	if d.delay <= 0 {
		fn()
		return
	}
	d.mu.Lock()
	if d.fns == nil {
		d.fns = map[int]func(){}
	}
	id := d.next
	d.next++
	d.fns[id] = fn
	d.mu.Unlock()
	time.AfterFunc(d.delay, func() {
		if fn := d.take(id); fn != nil {
			fn()
		}
	})
}

func (d *delayed) take(id int) func() {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn := d.fns[id]
	delete(d.fns, id)
	return fn
}

func (d *delayed) flush() {
	d.mu.Lock()
	fns := d.fns
	d.fns = nil
	d.mu.Unlock()
	// In the order they were queued, so the last change is notified last.
	for _, id := range slices.Sorted(maps.Keys(fns)) {
		fns[id]()
	}
}
