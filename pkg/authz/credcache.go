package authz

import (
	"encoding/base64"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/bounded"
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
	m *bounded.Map[string, *credentials]
}

func newCredentialCache() *credentialCache {
	return &credentialCache{bounded.New[string, *credentials](credentialCacheSize, nil)}
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
	if cr, ok := c.m.Get(header, 0); ok {
		return cr, nil
	}
	id, sec, err := parseBasic(header)
	if err != nil {
		return nil, err
	}
	cr := &credentials{creds: idp.Credentials{ID: id, Secret: secret.New(sec)}}
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
	c.m.Put(cr.header, &credentials{creds: cr.creds, key: cr.key}, bounded.Never, time.Now().UnixNano())
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
func (c *credentialCache) len() int { return c.m.Len() }
