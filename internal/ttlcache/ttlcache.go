// Package ttlcache holds a small in-memory cache whose entries expire after a fixed time.
//
// It serves the hot device-facing reads (credentials, current firmware) from memory
// for a few seconds. Writers in the same process clear it at once; other replicas see
// a change within the TTL, which is the documented bound on staleness.
package ttlcache

import (
	"sync"
	"time"
)

type entry[V any] struct {
	val     V
	expires time.Time
}

// Cache maps keys to values for TTL. The zero TTL disables it: Get always misses.
// It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	ttl time.Duration
	max int
	// Now is the clock; tests replace it.
	Now func() time.Time

	mu sync.Mutex
	m  map[K]entry[V]
	// gen counts Clear calls so a value read from the database before a Clear is not
	// stored after it (it could be the state the write just replaced).
	gen uint64
}

// New returns a cache keeping entries for ttl, at most max of them.
func New[K comparable, V any](ttl time.Duration, max int) *Cache[K, V] {
	if max < 1 {
		max = 1
	}
	return &Cache[K, V]{ttl: ttl, max: max, Now: time.Now, m: map[K]entry[V]{}}
}

// Enabled reports whether entries are kept at all.
func (c *Cache[K, V]) Enabled() bool { return c != nil && c.ttl > 0 }

// Get returns the value for k if present and not expired.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	var zero V
	if !c.Enabled() {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return zero, false
	}
	if !c.Now().Before(e.expires) {
		delete(c.m, k)
		return zero, false
	}
	return e.val, true
}

// Generation returns a token to pass to Put: take it before reading the value from
// its source, so a Clear in between makes Put drop the possibly stale value.
func (c *Cache[K, V]) Generation() uint64 {
	if !c.Enabled() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Put stores v for k unless the cache was cleared since gen was taken.
func (c *Cache[K, V]) Put(gen uint64, k K, v V) {
	if !c.Enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	now := c.Now()
	if len(c.m) >= c.max {
		for key, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= c.max {
			// Still full of live entries: start over rather than track recency.
			c.m = map[K]entry[V]{}
		}
	}
	c.m[k] = entry[V]{val: v, expires: now.Add(c.ttl)}
}

// Clear drops every entry (called after any write that could change a cached value).
func (c *Cache[K, V]) Clear() {
	if !c.Enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// Len is the number of stored entries, expired ones included.
func (c *Cache[K, V]) Len() int {
	if !c.Enabled() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
