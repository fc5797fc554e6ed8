package auth

import (
	"sync"
	"time"
)

// FailureLimiter counts failed logins per key in a sliding window; a key over the
// limit is locked out until its oldest failure leaves the window.
type FailureLimiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	fails  map[string][]time.Time
	now    func() time.Time
}

// NewFailureLimiter allows limit failures per window for each key.
func NewFailureLimiter(limit int, window time.Duration) *FailureLimiter {
	return &FailureLimiter{limit: limit, window: window, fails: map[string][]time.Time{}, now: time.Now}
}

// Blocked reports whether key is locked out and for how long.
func (l *FailureLimiter) Blocked(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.prune(key)
	if len(ts) >= l.limit {
		return true, ts[0].Add(l.window).Sub(l.now())
	}
	return false, 0
}

// Fail records a failure for key.
func (l *FailureLimiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.prune(key)
	l.fails[key] = append(ts, l.now())
	// Bound memory under a flood of distinct keys: drop the whole table rather than grow.
	if len(l.fails) > 100000 {
		l.fails = map[string][]time.Time{}
	}
}

func (l *FailureLimiter) prune(key string) []time.Time {
	ts := l.fails[key]
	cut := l.now().Add(-l.window)
	i := 0
	for i < len(ts) && ts[i].Before(cut) {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, key)
		return nil
	}
	l.fails[key] = ts
	return ts
}
