package tokencache

import (
	"sync"
	"sync/atomic"
	"time"
)

// shardCount spreads keys over locks so that concurrent requests for
// different clients do not queue on one mutex.
const shardCount = 16

// evictionSample is how many entries eviction looks at to pick a victim: an
// expired one if any, else the least recently used of them (as Redis does).
const evictionSample = 8

// memoryStore is a bounded map of tokens with approximate LRU eviction.
type memoryStore struct {
	shards   [shardCount]shard
	perShard int
}

type shard struct {
	mu sync.RWMutex
	m  map[Key]*entry
}

type entry struct {
	tok        *Token
	serveUntil int64        // UnixNano
	lastUsed   atomic.Int64 // UnixNano, coarse: updated at most once a second
}

func newMemoryStore(maxEntries int) *memoryStore {
	s := &memoryStore{perShard: max(1, (maxEntries+shardCount-1)/shardCount)}
	for i := range s.shards {
		s.shards[i].m = make(map[Key]*entry)
	}
	return s
}

// get returns the token under key if it may still be served at now.
func (s *memoryStore) get(key Key, now time.Time) *Token {
	sh := &s.shards[key[0]%shardCount]
	sh.mu.RLock()
	e := sh.m[key]
	sh.mu.RUnlock()
	n := now.UnixNano()
	if e == nil || n >= e.serveUntil {
		return nil
	}
	if n-e.lastUsed.Load() > int64(time.Second) {
		e.lastUsed.Store(n)
	}
	return e.tok
}

func (s *memoryStore) put(key Key, tok *Token, serveUntil, now time.Time) {
	e := &entry{tok: tok, serveUntil: serveUntil.UnixNano()}
	e.lastUsed.Store(now.UnixNano())
	sh := &s.shards[key[0]%shardCount]
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
		if now >= e.serveUntil {
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

func (s *memoryStore) len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.RLock()
		n += len(s.shards[i].m)
		s.shards[i].mu.RUnlock()
	}
	return n
}
