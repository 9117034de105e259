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

// credentials are what an Authorization header decodes to.
type credentials struct {
	creds idp.Credentials
	key   tokencache.Key
}

// caller is a remembered header's credentials, and what its last check
// got: the token and the answer that the next check serves again, without
// the token cache's lookup or the token's memo, as long as the token cache
// says the token is current (tokencache.Cache.Current).
type caller struct {
	credentials
	last atomic.Pointer[reuse]
}

// reuse is the token a caller's check got from memory, and its answer
// under the policy shape it was made for.
type reuse struct {
	token  *tokencache.Token
	answer *answer
	shape  tokencache.MemoKey // the policy's answerKey
	// headers are HTTP mode's, from the token's memo on first use.
	headers atomic.Pointer[[]httpHeader]
}

// reusable returns what c's last check got, if it was made for shape; the
// token cache says whether the token is still current.
func (c *caller) reusable(shape tokencache.MemoKey) *reuse {
	if r := c.last.Load(); r != nil && r.shape == shape {
		return r
	}
	return nil
}

// keep remembers what a check got from memory for the next one.
func (c *caller) keep(tok *tokencache.Token, a *answer, shape tokencache.MemoKey) *reuse {
	if r := c.last.Load(); r != nil && r.token == tok && r.shape == shape {
		return r
	}
	r := &reuse{token: tok, answer: a, shape: shape}
	c.last.Store(r)
	return r
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
	cr = &caller{}
	cr.creds = idp.Credentials{ID: id, Secret: secret.New(sec)}
	cr.key = e.Key(cr.creds)
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
	cr = &caller{}
	cr.creds = p.creds
	if cr.creds.Subject, err = p.subjectToken(in); err != nil {
		return nil, false, err
	}
	cr.key = p.endpoint.Key(cr.creds)
	return cr, true, nil
}

// rememberSubject keeps cr, read from header, whose token was just
// exchanged: only in its canonical spelling ("Bearer <token>", or the
// token alone in another header).
func (c *credentialCache) rememberSubject(header string, p *policy, cr *caller) {
	tok := cr.creds.Subject.Reveal()
	if header == tok || p.subject.Header == "authorization" && len(header) == len(tok)+7 && strings.HasPrefix(header, "Bearer ") && header[7:] == tok {
		c.m.Put(header, cr, bounded.Never, time.Now().UnixNano())
	}
}

// len returns how many headers are remembered.
func (c *credentialCache) len() int { return c.m.Len() }
