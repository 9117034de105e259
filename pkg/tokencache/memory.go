package tokencache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// maxShards spreads keys over locks so that concurrent requests for
// different clients do not queue on one mutex; a small cache keeps fewer
// shards so that each can still choose whom to evict.
const (
	maxShards       = 16
	minShardEntries = 256
)

// evictionSample is how many entries eviction looks at to pick a victim: an
// expired one if any, else the least recently used of them (as Redis does).
const evictionSample = 8

// memoryStore is a bounded map of tokens with approximate LRU eviction.
type memoryStore struct {
	shards   []shard
	perShard int
	now      func() time.Time

	lockMu sync.Mutex
	locks  map[Key]time.Time // lock expiry; for the Store contract
}

type shard struct {
	mu sync.RWMutex
	m  map[Key]*entry
}

type entry struct {
	tok      *Token
	expiry   int64        // UnixNano
	lastUsed atomic.Int64 // UnixNano, coarse: updated at most once a second
}

func newMemoryStore(maxEntries int, now func() time.Time) *memoryStore {
	n := min(max(maxEntries/minShardEntries, 1), maxShards)
	s := &memoryStore{shards: make([]shard, n), perShard: max(1, (maxEntries+n-1)/n), now: now, locks: map[Key]time.Time{}}
	for i := range s.shards {
		s.shards[i].m = make(map[Key]*entry)
	}
	return s
}

func (s *memoryStore) shard(key Key) *shard { return &s.shards[int(key.id[0])%len(s.shards)] }

// get returns the token under key if it has not expired at now.
func (s *memoryStore) get(key Key, now time.Time) *Token {
	sh := s.shard(key)
	sh.mu.RLock()
	e := sh.m[key]
	sh.mu.RUnlock()
	n := now.UnixNano()
	if e == nil || n >= e.expiry {
		return nil
	}
	if n-e.lastUsed.Load() > int64(time.Second) {
		e.lastUsed.Store(n)
	}
	return e.tok
}

func (s *memoryStore) put(key Key, tok *Token, now time.Time) {
	e := &entry{tok: tok, expiry: tok.Expiry.UnixNano()}
	e.lastUsed.Store(now.UnixNano())
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[key]; !ok && len(sh.m) >= s.perShard {
		sh.evict(now.UnixNano())
	}
	sh.m[key] = e
}

// evict removes one entry: the first expired one in a sample of the map
// (whose iteration order is random), else the least recently used.
func (sh *shard) evict(now int64) {
	var victim Key
	oldest, seen := int64(1<<63-1), 0
	for k, e := range sh.m {
		if now >= e.expiry {
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
	delete(sh.m, victim)
}

// delete drops the entry under key.
func (s *memoryStore) delete(key Key) {
	sh := s.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
}

// purge drops the entries whose key match selects, and counts them.
func (s *memoryStore) purge(match func(Key) bool) int64 {
	var n int64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k := range sh.m {
			if match(k) {
				delete(sh.m, k)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

func (s *memoryStore) len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.RLock()
		n += len(s.shards[i].m)
		s.shards[i].mu.RUnlock()
	}
	return n
}

var (
	_ Store = (*memoryStore)(nil)
	_ Store = (*Shared)(nil)
)

// Get is get as a Store.
func (s *memoryStore) Get(_ context.Context, key Key) (*Token, error) {
	return s.get(key, s.now()), nil
}

// Set is put as a Store.
func (s *memoryStore) Set(_ context.Context, key Key, t *Token) error {
	s.put(key, t, s.now())
	return nil
}

// Lock is an in-process lock with the Redis tier's semantics. The Cache
// needs none, its single-flight group does the work, but the contract is
// the same for every Store.
func (s *memoryStore) Lock(_ context.Context, key Key, ttl time.Duration) (func(), error) {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	now := s.now()
	if until, ok := s.locks[key]; ok && now.Before(until) {
		return nil, ErrLocked
	}
	until := now.Add(ttl)
	s.locks[key] = until
	return func() {
		s.lockMu.Lock()
		defer s.lockMu.Unlock()
		if s.locks[key] == until {
			delete(s.locks, key)
		}
	}, nil
}
