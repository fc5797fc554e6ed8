package ttlcache

import (
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestExpiry(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := New[string, int](5*time.Second, 10)
	c.Now = clk.now
	c.Put(c.Generation(), "a", 1)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("fresh entry: %v %v", v, ok)
	}
	clk.t = clk.t.Add(4999 * time.Millisecond)
	if _, ok := c.Get("a"); !ok {
		t.Fatal("entry gone before its TTL")
	}
	clk.t = clk.t.Add(time.Millisecond)
	if _, ok := c.Get("a"); ok {
		t.Fatal("entry served at its TTL")
	}
	if c.Len() != 0 {
		t.Fatalf("expired entry kept: %d", c.Len())
	}
}

func TestClearDropsEntriesAndStaleputs(t *testing.T) {
	c := New[int, string](time.Minute, 10)
	c.Put(c.Generation(), 1, "one")
	gen := c.Generation() // a reader starts...
	c.Clear()             // ...a writer changes the source and clears...
	c.Put(gen, 2, "old")  // ...and the reader's now stale value must not be stored.
	if _, ok := c.Get(1); ok {
		t.Error("Clear kept an entry")
	}
	if _, ok := c.Get(2); ok {
		t.Error("a value read before Clear was stored after it")
	}
	c.Put(c.Generation(), 2, "new")
	if v, ok := c.Get(2); !ok || v != "new" {
		t.Errorf("after Clear: %q %v", v, ok)
	}
}

func TestDisabled(t *testing.T) {
	c := New[int, int](0, 10)
	c.Put(c.Generation(), 1, 1)
	if _, ok := c.Get(1); ok || c.Enabled() {
		t.Error("TTL 0 cached a value")
	}
	var nilCache *Cache[int, int]
	nilCache.Put(0, 1, 1)
	nilCache.Clear()
	if _, ok := nilCache.Get(1); ok {
		t.Error("nil cache returned a value")
	}
}

func TestBounded(t *testing.T) {
	clk := &clock{t: time.Unix(0, 0)}
	c := New[int, int](time.Second, 3)
	c.Now = clk.now
	c.Put(0, 1, 1)
	c.Put(0, 2, 2)
	clk.t = clk.t.Add(2 * time.Second) // 1 and 2 expire
	c.Put(0, 3, 3)
	c.Put(0, 4, 4) // full: expired ones go first
	if c.Len() != 2 {
		t.Fatalf("len %d, want the 2 live entries", c.Len())
	}
	c.Put(0, 5, 5)
	c.Put(0, 6, 6) // full of live entries: starts over
	if n := c.Len(); n > 3 {
		t.Fatalf("len %d exceeds max 3", n)
	}
	if v, ok := c.Get(6); !ok || v != 6 {
		t.Error("newest entry missing")
	}
}

func TestConcurrent(t *testing.T) {
	c := New[int, int](time.Minute, 100)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				c.Put(c.Generation(), i%150, i)
				if v, ok := c.Get(i % 150); ok && v%150 != i%150 {
					t.Errorf("key %d holds %d", i%150, v)
				}
				if i%97 == 0 {
					c.Clear()
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 100 {
		t.Errorf("len %d exceeds max", c.Len())
	}
}
