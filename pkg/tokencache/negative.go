package tokencache

import (
	"sync"
	"time"
)

// negativeCache remembers failed fetches per key for a while, so that a bad
// client or a failing endpoint is not asked again on every request.
type negativeCache struct {
	mu      sync.Mutex
	entries map[Key]negativeEntry
	max     int
}

type negativeEntry struct {
	err   error
	until time.Time
}

func newNegativeCache(size int) *negativeCache {
	return &negativeCache{entries: map[Key]negativeEntry{}, max: max(size, 1)}
}

// get returns the remembered failure for key, if it still holds at now.
func (n *negativeCache) get(key Key, now time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.entries[key]
	if !ok {
		return nil
	}
	if !now.Before(e.until) {
		delete(n.entries, key)
		return nil
	}
	return e.err
}

func (n *negativeCache) remember(key Key, err error, ttl time.Duration, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.entries[key]; !ok && len(n.entries) >= n.max {
		// Make room: drop what has lapsed, else an arbitrary entry.
		for k, e := range n.entries {
			if !now.Before(e.until) {
				delete(n.entries, k)
			}
		}
		for k := range n.entries {
			if len(n.entries) < n.max {
				break
			}
			delete(n.entries, k)
		}
	}
	n.entries[key] = negativeEntry{err: err, until: now.Add(ttl)}
}

func (n *negativeCache) forget(key Key) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.entries, key)
}
