// Package tokencache keeps access tokens so that most requests never wait on
// the token endpoint.
//
// A Cache looks a token up by a Key that binds everything that shapes a token
// request (the endpoint's identity: URL, auth method, audience, scopes, extra
// parameters) and the client's id and secret, hashed with SHA-256: a wrong
// secret gets a key of its own and can never reach another client's token,
// and no secret appears in a key. On a miss exactly one request per key goes
// to the endpoint at a time; concurrent callers wait for it and share its
// result. The request runs detached from the caller that started it, bounded
// by the endpoint's own budget, so a cancelled caller fails nobody else, and
// every caller stops waiting at its own deadline.
//
// A token is served until expiry - skew, where expiry comes from expires_in
// (or the JWT's exp when earlier or when expires_in is absent, or the
// endpoint's default TTL when neither exists) and skew is min(30s, lifetime/10).
// A JWT's payload is decoded once, when the token arrives, and kept with it.
package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
)

// maxSkew bounds how long before its expiry a token stops being served.
const maxSkew = 30 * time.Second

// Token is a cached access token. It is immutable but for its memo and is
// shared by every request that uses it.
type Token struct {
	AccessToken secret.Value
	Type        string
	Expiry      time.Time      // the token's own end of validity
	Claims      *claims.Claims // the decoded JWT payload; nil when the token is not a JWT
	memo        sync.Map
}

// Memo returns the value stored under key, building and storing it on first
// use. Callers keep per-token work there (rendered headers, responses) so
// that it is done once per token, not per request. key must be comparable
// and should be a pointer owned by the caller.
func (t *Token) Memo(key any, build func() any) any {
	if v, ok := t.memo.Load(key); ok {
		return v
	}
	v, _ := t.memo.LoadOrStore(key, build())
	return v
}

// Key identifies a token in the cache.
type Key [sha256.Size]byte

// Endpoint is a token endpoint as a policy uses it.
type Endpoint struct {
	Client     *idp.Client
	DefaultTTL time.Duration
	identity   [sha256.Size]byte
}

// NewEndpoint returns the Endpoint for client, whose tokens live defaultTTL
// when neither the answer nor the token says otherwise.
func NewEndpoint(client *idp.Client, defaultTTL time.Duration) *Endpoint {
	return &Endpoint{Client: client, DefaultTTL: defaultTTL, identity: sha256.Sum256([]byte(client.Identity()))}
}

// Key returns the cache key of creds' token at e.
func (e *Endpoint) Key(creds idp.Credentials) Key {
	h := sha256.New()
	h.Write(e.identity[:])
	writeField(h, creds.ID)
	writeField(h, creds.Secret.Reveal())
	var k Key
	h.Sum(k[:0])
	return k
}

// writeField writes s with its length, so that no two field lists collide.
func writeField(h interface{ Write([]byte) (int, error) }, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// Options configure a Cache.
type Options struct {
	MaxEntries int              // bound on cached tokens
	Now        func() time.Time // time.Now when nil
	Logger     *zap.Logger
}

// Cache is an in-process token cache with single-flight fetching.
type Cache struct {
	store  *memoryStore
	flight singleflight.Group
	now    func() time.Time
	log    *zap.Logger
}

// New returns an empty Cache.
func New(o Options) *Cache {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Cache{store: newMemoryStore(o.MaxEntries), now: o.Now, log: o.Logger}
}

// ErrExpired reports a token that the endpoint handed out already expired.
var ErrExpired = errors.New("the token endpoint issued a token that has already expired")

// Token returns the token for creds at e, from the cache (hit is true) or from
// the endpoint. key must be e.Key(creds). The error is the endpoint's
// (*idp.Error), ErrExpired, or ctx's when the caller stopped waiting.
func (c *Cache) Token(ctx context.Context, e *Endpoint, key Key, creds idp.Credentials) (tok *Token, hit bool, err error) {
	if t := c.store.get(key, c.now()); t != nil {
		return t, true, nil
	}
	ch := c.flight.DoChan(string(key[:]), func() (any, error) {
		// A flight that ended just before this one began may have filled the cache.
		if t := c.store.get(key, c.now()); t != nil {
			return t, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.Client.Budget())
		defer cancel()
		resp, err := e.Client.Token(fctx, creds)
		if err != nil {
			return nil, err
		}
		t, serveUntil, err := c.newToken(resp, e.DefaultTTL)
		if err != nil {
			return nil, err
		}
		c.store.put(key, t, serveUntil, c.now())
		return t, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, false, r.Err
		}
		return r.Val.(*Token), false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

func (c *Cache) newToken(resp *idp.Token, defaultTTL time.Duration) (*Token, time.Time, error) {
	now := c.now()
	t := &Token{AccessToken: resp.AccessToken, Type: resp.Type}
	if cl, err := claims.ParseJWT(resp.AccessToken.Reveal()); err == nil {
		t.Claims = cl
	}
	var jwtExp time.Time
	if t.Claims != nil {
		jwtExp, _ = t.Claims.Expiry()
	}
	switch {
	case resp.ExpiresIn > 0:
		t.Expiry = now.Add(resp.ExpiresIn)
		if !jwtExp.IsZero() && jwtExp.Before(t.Expiry) {
			t.Expiry = jwtExp
		}
	case !jwtExp.IsZero():
		t.Expiry = jwtExp
	default:
		t.Expiry = now.Add(defaultTTL)
	}
	lifetime := t.Expiry.Sub(now)
	if lifetime <= 0 {
		return nil, time.Time{}, ErrExpired
	}
	return t, t.Expiry.Add(-min(maxSkew, lifetime/10)), nil
}

// Len returns the number of cached tokens, expired ones included until evicted.
func (c *Cache) Len() int { return c.store.len() }
