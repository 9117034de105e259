package tokencache

import (
	"time"

	"github.com/extauthz/extauthz/internal/bounded"
)

// negativeCache remembers failed fetches per key for a while, so that a bad
// client or a failing endpoint is not asked again on every request.
type negativeCache struct {
	m *bounded.Map[Key, error]
}

func newNegativeCache(size int) negativeCache {
	return negativeCache{bounded.New[Key, error](size, func(k Key) uint64 { return uint64(k.id[0]) })}
}

// get returns the remembered failure for key, if it still holds at now.
func (n negativeCache) get(key Key, now time.Time) error {
	err, _ := n.m.Get(key, now.UnixNano())
	return err
}

func (n negativeCache) remember(key Key, err error, ttl time.Duration, now time.Time) {
	n.m.Put(key, err, now.Add(ttl).UnixNano(), now.UnixNano())
}

func (n negativeCache) forget(key Key) { n.m.Delete(key) }

// forgetFunc forgets the failures of the keys match selects.
func (n negativeCache) forgetFunc(match func(Key) bool) {
	n.m.DeleteFunc(func(k Key, _ error) bool { return match(k) })
}
