package authz

import (
	"encoding/base64"
	"strings"
	"sync/atomic"
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
	m *bounded.Map[string, *caller]
}

func newCredentialCache() *credentialCache {
	return &credentialCache{bounded.New[string, *caller](credentialCacheSize, nil)}
}

// caller is whom a check acts for — a Basic header's client, a delegated
// grant's caller token, a gateway policy's own client — with its token
// cache key, and the answer its last check got from memory, which the next
// check serves again, without the token cache's lookup or the answer kept
// with the token, as long as the token cache says the answer's token is current
// (tokencache.Cache.Current). A policy's callers are all of one answer
// shape: a reload that changes the shape starts the policy with a new
// credential cache. Every cached client has one: it holds no more than
// the credentials the check sends.
type caller struct {
	id string // the client id the check names: the Basic client's, else the policy's
	// secret is the Basic client's secret, or a delegated grant's subject
	// token (the policy's own secret goes with it), or a gateway policy's
	// secret.
	secret secret.Value
	key    tokencache.Key
	last   atomic.Pointer[answer]
}

// creds returns the credentials c's check sends under p.
func (c *caller) creds(p *policy) idp.Credentials {
	if p.subject != nil {
		cr := p.creds
		cr.Subject = c.secret
		return cr
	}
	return idp.Credentials{ID: c.id, Secret: c.secret}
}

// keep remembers the answer a check got from memory for the next one.
func (c *caller) keep(a *answer) {
	if c.last.Load() != a {
		c.last.Store(a)
	}
}

// get returns the caller of header, remembered or parsed anew; fresh says
// it was parsed, and remember may keep it.
func (c *credentialCache) get(header string, e *tokencache.Endpoint) (cr *caller, fresh bool, err error) {
	if cr, ok := c.m.Get(header, 0); ok {
		return cr, false, nil
	}
	id, sec, err := parseBasic(header)
	if err != nil {
		return nil, false, err
	}
	cr = &caller{id: id, secret: secret.New(sec)}
	cr.key = e.Key(idp.Credentials{ID: id, Secret: cr.secret})
	return cr, true, nil
}

// remember keeps cr, parsed from header, whose credentials just got a
// token: only in the header's one canonical spelling.
func (c *credentialCache) remember(header string, cr *caller) {
	if canonicalBasic(header) {
		c.m.Put(header, cr, bounded.Never, time.Now().UnixNano())
	}
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

// subject returns the credentials of a delegated grant's header: the
// policy's own client with the caller's token, remembered or read anew
// (fresh), so that a caller's next request skips reading and hashing it.
func (c *credentialCache) subject(header string, p *policy, in input) (cr *caller, fresh bool, err error) {
	if cr, ok := c.m.Get(header, 0); ok {
		return cr, false, nil
	}
	cr = &caller{id: p.creds.ID}
	if cr.secret, err = p.subjectToken(in); err != nil {
		return nil, false, err
	}
	cr.key = p.endpoint.Key(cr.creds(p))
	return cr, true, nil
}

// rememberSubject keeps cr, read from header, whose token was just
// exchanged: only in its canonical spelling ("Bearer <token>", or the
// token alone in another header).
func (c *credentialCache) rememberSubject(header string, p *policy, cr *caller) {
	tok := cr.secret.Reveal()
	if header == tok || p.subject.Header == "authorization" && len(header) == len(tok)+7 && strings.HasPrefix(header, "Bearer ") && header[7:] == tok {
		c.m.Put(header, cr, bounded.Never, time.Now().UnixNano())
	}
}

// len returns how many headers are remembered.
func (c *credentialCache) len() int { return c.m.Len() }
