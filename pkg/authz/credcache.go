package authz

import (
	"encoding/base64"
	"strings"
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
//
// Caller input costs no memory before it is proven: a header is remembered
// only once its credentials got a token (remember), and only in its one
// canonical spelling, so that neither wrong secrets nor respellings of a
// right one (extra spaces, missing padding) fill it.
type credentialCache struct {
	mu sync.RWMutex
	m  map[string]*credentials
}

type credentials struct {
	creds idp.Credentials
	key   tokencache.Key
	// header is the Authorization header to remember these under; empty
	// when they are remembered already, or the header is not canonical.
	header string
}

// get returns the credentials of header: remembered ones, or parsed anew.
func (c *credentialCache) get(header string, e *tokencache.Endpoint) (*credentials, error) {
	c.mu.RLock()
	cr := c.m[header]
	c.mu.RUnlock()
	if cr != nil {
		return cr, nil
	}
	id, sec, err := parseBasic(header)
	if err != nil {
		return nil, err
	}
	cr = &credentials{creds: idp.Credentials{ID: id, Secret: secret.New(sec)}}
	cr.key = e.Key(cr.creds)
	if canonicalBasic(header) {
		cr.header = header
	}
	return cr, nil
}

// remember keeps cr, whose credentials just got a token, for its header.
func (c *credentialCache) remember(cr *credentials) {
	if cr.header == "" {
		return
	}
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
	c.m[cr.header] = &credentials{creds: cr.creds, key: cr.key}
}

// canonicalBasic reports a header spelt as RFC 7617 writes it: "Basic",
// one space, padded base64. A client's library always sends that one.
func canonicalBasic(header string) bool {
	payload, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(payload)
	return err == nil && base64.StdEncoding.EncodeToString(raw) == payload
}

// len returns how many headers are remembered.
func (c *credentialCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
