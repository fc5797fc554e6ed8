package decoding

import (
	"container/list"
	"sync"

	"github.com/iotsupport/iotsupport/internal/elfsym"
)

// indexCache keeps parsed ELF indexes by the ELF's SHA-256, least recently used
// evicted first, within a byte budget (elfsym's own estimate of what it holds).
type indexCache struct {
	mu     sync.Mutex
	budget int64
	used   int64
	order  *list.List // front = most recent; values are *cacheEntry
	byKey  map[string]*list.Element
}

type cacheEntry struct {
	key  string
	ix   *elfsym.Index
	size int64
}

func newIndexCache(budget int64) *indexCache {
	return &indexCache{budget: budget, order: list.New(), byKey: map[string]*list.Element{}}
}

func (c *indexCache) get(key string) *elfsym.Index {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*cacheEntry).ix
	}
	return nil
}

func (c *indexCache) put(key string, ix *elfsym.Index) {
	size := ix.MemSize()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[key]; ok || size > c.budget {
		return // an index larger than the whole budget is used once and not kept
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, ix: ix, size: size})
	c.used += size
	for c.used > c.budget {
		last := c.order.Back()
		e := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.byKey, e.key)
		c.used -= e.size
	}
}
