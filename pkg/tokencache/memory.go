package tokencache

import (
	"time"

	"github.com/extauthz/extauthz/internal/bounded"
)

// memoryTier is the in-process tier: tokens by key, each until its expiry,
// at most a bound of them (the least recently used go first).
type memoryTier struct {
	m *bounded.Map[Key, *Token]
}

func newMemoryTier(maxEntries int) memoryTier {
	// Keys are hashes already: their first byte picks the shard.
	m := bounded.New[Key, *Token](maxEntries, func(k Key) uint64 { return uint64(k.id[0]) })
	// A token that leaves the tier, whatever the reason, is retired: no
	// caller that kept it serves it again without asking (Cache.Current).
	m.OnRemove(func(t *Token) { t.retired.Store(true) })
	return memoryTier{m}
}

// get returns the token under key if it has not expired at now.
func (t memoryTier) get(key Key, now time.Time) *Token {
	tok, _ := t.m.Get(key, now.UnixNano())
	return tok
}

func (t memoryTier) put(key Key, tok *Token, now time.Time) {
	if tok.retired.Load() {
		return // once retired, never served from memory again
	}
	if cur, _ := t.m.Get(key, 0); cur == tok {
		return // held already: putting it again would retire it
	}
	t.m.Put(key, tok, tok.expiry, now.UnixNano())
}

func (t memoryTier) delete(key Key) { t.m.Delete(key) }

// purge drops the tokens whose key match selects, and counts them.
func (t memoryTier) purge(match func(Key) bool) int64 {
	return t.m.DeleteFunc(func(k Key, _ *Token) bool { return match(k) })
}

func (t memoryTier) len() int { return t.m.Len() }
