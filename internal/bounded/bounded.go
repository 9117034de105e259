// Package bounded is a concurrent map with a bound on its entries and one
// eviction rule: to make room, look at a few entries (Go's map order is
// random) and drop the first that has expired, else the least recently used
// of them, as Redis does. The token cache's memory tier, its negative cache
// and failure budgets, and the credential cache all keep their entries in
// one.
package bounded

import (
	"hash/maphash"
	"math"
	"sync/atomic"
)

// Never is the expiry of an entry that does not expire.
const Never = math.MaxInt64

// evictionSample is how many entries eviction looks at to pick a victim.
const evictionSample = 8

// Shards spread keys over locks, so that concurrent requests for different
// keys do not queue on one mutex; a small map keeps fewer shards so that
// each can still choose whom to evict.
const (
	maxShards       = 16
	minShardEntries = 256
)

// useResolution is how stale an entry's last use may be: recording every
// use would make each Get a write.
const useResolution = int64(1e9) // one second, in nanoseconds

// Map holds at most its bound of entries. Times are Unix nanoseconds from
// the caller's clock; a now of 0 reads nothing of time (no expiry check, no
// use recorded). It is safe for concurrent use.
type Map[K comparable, V any] struct {
	shards   []shard[K, V]
	perShard int
	shardOf  func(K) uint64
	seed     maphash.Seed
	removed  func(V) // told of every value that leaves the map; nil for none
}

type shard[K comparable, V any] struct {
	m  map[K]*entry[V] // read by every Get: before the lock's flag, away from its counters
	mu rwlock
}

type entry[V any] struct {
	value    V
	expiry   int64
	lastUsed atomic.Int64
}

// New returns a Map of at most maxEntries entries. shardOf, when not nil,
// spreads keys over shards (a byte of a hash the key already is); else the
// key is hashed.
func New[K comparable, V any](maxEntries int, shardOf func(K) uint64) *Map[K, V] {
	maxEntries = max(maxEntries, 1)
	n := min(max(maxEntries/minShardEntries, 1), maxShards)
	m := &Map[K, V]{shards: make([]shard[K, V], n), perShard: max(maxEntries/n, 1), shardOf: shardOf, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = make(map[K]*entry[V])
	}
	return m
}

func (m *Map[K, V]) shard(k K) *shard[K, V] {
	var h uint64
	if m.shardOf != nil {
		h = m.shardOf(k)
	} else {
		h = maphash.Comparable(m.seed, k)
	}
	return &m.shards[h%uint64(len(m.shards))]
}

// Get returns the value under k unless it expired at now, and records the use.
func (m *Map[K, V]) Get(k K, now int64) (V, bool) {
	sh := m.shard(k)
	r := sh.mu.rlock()
	e := sh.m[k]
	runlock(r)
	var zero V
	if e == nil || now != 0 && now >= e.expiry {
		return zero, false
	}
	if now != 0 && now-e.lastUsed.Load() > useResolution {
		e.lastUsed.Store(now)
	}
	return e.value, true
}

// OnRemove has the map call removed, under the lock of the value's shard,
// with every value that leaves it: replaced, evicted, deleted or purged.
// Whoever hands its values out beyond a Get learns when they stop being
// the map's. It is set before the map is used.
func (m *Map[K, V]) OnRemove(removed func(V)) { m.removed = removed }

// drop removes k's entry e from sh, telling whoever asked (OnRemove).
func (m *Map[K, V]) drop(sh *shard[K, V], k K, e *entry[V]) {
	delete(sh.m, k)
	if m.removed != nil && e != nil {
		m.removed(e.value)
	}
}

// Put stores v under k until expiry, making room if the map is full.
func (m *Map[K, V]) Put(k K, v V, expiry, now int64) {
	e := &entry[V]{value: v, expiry: expiry}
	e.lastUsed.Store(now)
	sh := m.shard(k)
	sh.mu.lock()
	defer sh.mu.unlock()
	old, ok := sh.m[k]
	if !ok && len(sh.m) >= m.perShard {
		m.evict(sh, now)
	}
	sh.m[k] = e
	if ok && m.removed != nil {
		m.removed(old.value)
	}
}

// evict drops the first expired entry of a sample, else its least recently
// used one.
func (m *Map[K, V]) evict(sh *shard[K, V], now int64) {
	var victim K
	oldest, seen := int64(math.MaxInt64), 0
	for k, e := range sh.m {
		if now != 0 && now >= e.expiry {
			victim = k
			break
		}
		if lu := e.lastUsed.Load(); lu < oldest {
			victim, oldest = k, lu
		}
		if seen++; seen == evictionSample {
			break
		}
	}
	m.drop(sh, victim, sh.m[victim])
}

// Update replaces the value under k with what fn makes of it (ok false when
// there is none); fn runs under the shard's lock, so that a read-modify-write
// is atomic. When fn returns keep false the entry goes.
func (m *Map[K, V]) Update(k K, now int64, fn func(v V, ok bool) (next V, expiry int64, keep bool)) {
	sh := m.shard(k)
	sh.mu.lock()
	defer sh.mu.unlock()
	var cur V
	e, ok := sh.m[k]
	if ok && now != 0 && now >= e.expiry {
		ok = false
	}
	if ok {
		cur = e.value
	}
	next, expiry, keep := fn(cur, ok)
	if !keep {
		if e != nil {
			m.drop(sh, k, e)
		}
		return
	}
	if e == nil && len(sh.m) >= m.perShard {
		m.evict(sh, now)
	}
	ne := &entry[V]{value: next, expiry: expiry}
	ne.lastUsed.Store(now)
	sh.m[k] = ne
	if e != nil && m.removed != nil {
		m.removed(e.value)
	}
}

// Delete drops the entry under k.
func (m *Map[K, V]) Delete(k K) {
	sh := m.shard(k)
	sh.mu.lock()
	if e, ok := sh.m[k]; ok {
		m.drop(sh, k, e)
	}
	sh.mu.unlock()
}

// DeleteFunc drops the entries match selects, and counts them.
func (m *Map[K, V]) DeleteFunc(match func(K, V) bool) int64 {
	var n int64
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.lock()
		for k, e := range sh.m {
			if match(k, e.value) {
				m.drop(sh, k, e)
				n++
			}
		}
		sh.mu.unlock()
	}
	return n
}

// Len returns the number of entries, expired ones included until evicted.
func (m *Map[K, V]) Len() int {
	n := 0
	for i := range m.shards {
		r := m.shards[i].mu.rlock()
		n += len(m.shards[i].m)
		runlock(r)
	}
	return n
}
