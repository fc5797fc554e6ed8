package firmware

import (
	"sync"
	"testing"
	"time"
)

func TestDelayedRunsLaterOrOnFlushInOrder(t *testing.T) {
	var mu sync.Mutex
	var got []int
	add := func(i int) func() {
		return func() { mu.Lock(); got = append(got, i); mu.Unlock() }
	}
	now := delayed{}
	now.run(add(0))
	if len(got) != 1 {
		t.Fatal("no delay: not run at once")
	}
	d := delayed{delay: time.Hour}
	for i := 1; i <= 20; i++ {
		d.run(add(i))
	}
	mu.Lock()
	if len(got) != 1 {
		t.Fatalf("ran before the delay: %v", got)
	}
	mu.Unlock()
	d.flush()
	d.flush() // nothing twice
	if len(got) != 21 {
		t.Fatalf("flush ran %d of 20", len(got)-1)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("flush order %v", got)
		}
	}

	done := make(chan struct{})
	short := delayed{delay: 10 * time.Millisecond}
	short.run(func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("delayed function never ran")
	}
	short.flush() // already ran: must not run again (close twice would panic)
}
