package authz

import (
	"sync"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// credentialCacheSize bounds how many Authorization headers a policy
// remembers the credentials and cache key of.
const credentialCacheSize = 10_000

// credentialCache remembers, per policy, what an Authorization header
// decodes to: the client's credentials and their cache key. A client sends
// the same header on every request, so a hit skips base64, form decoding
// and hashing. It holds secrets exactly as the token cache does, in memory
// only.
type credentialCache struct {
	mu sync.RWMutex
	m  map[string]*credentials
}

type credentials struct {
	creds idp.Credentials
	key   tokencache.Key
}

// get returns the credentials of header, parsing it on first sight.
func (c *credentialCache) get(header string, e *tokencache.Endpoint) (*credentials, error) {
	c.mu.RLock()
	cr := c.m[header]
	c.mu.RUnlock()
	if cr != nil {
		return cr, nil
	}
	id, sec, err := parseBasic(header)
	if err != nil {
		return nil, err // not remembered: malformed headers must not fill the cache
	}
	cr = &credentials{creds: idp.Credentials{ID: id, Secret: secret.New(sec)}}
	cr.key = e.Key(cr.creds)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*credentials)
	}
	if len(c.m) >= credentialCacheSize {
		for k := range c.m { // drop an arbitrary entry: Go's map order is random
			delete(c.m, k)
			break
		}
	}
	c.m[header] = cr
	return cr, nil
}
