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
//
// With a Redis tier (Shared) the in-process tier stays in front: a local miss
// reads Redis, and a Redis miss takes a short fleet-wide lock (SET NX PX)
// so that one replica asks the endpoint while the others wait for its value
// in Redis, and fetch themselves if the holder disappears. Redis entries live
// as long as their token; values carry a format byte and, with an encryption
// key, are sealed with AES-256-GCM bound to their Redis key. Every Redis call
// is bounded by a short timeout; when Redis fails, requests go on with the
// in-process tier and the endpoint, and Redis is tried again a second later.
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
	Fetched     time.Time      // when the endpoint issued it
	Expiry      time.Time      // the token's own end of validity
	Claims      *claims.Claims // the decoded JWT payload; nil when the token is not a JWT
	memo        sync.Map
}

// serveUntil is when the token stops being handed out: min(30s, lifetime/10)
// before it expires, so that it never reaches an upstream about to expire.
func (t *Token) serveUntil() time.Time {
	return t.Expiry.Add(-min(maxSkew, t.Expiry.Sub(t.Fetched)/10))
}

// decodeClaims decodes the token's JWT payload, if it has one.
func (t *Token) decodeClaims() {
	if c, err := claims.ParseJWT(t.AccessToken.Reveal()); err == nil {
		t.Claims = c
	}
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

// Store is a tier tokens are kept in: the in-process tier and the Redis
// tier keep the same contract.
type Store interface {
	// Get returns the token under k, or nil when there is none that may
	// still be served.
	Get(ctx context.Context, k Key) (*Token, error)
	// Set stores t under k until t expires.
	Set(ctx context.Context, k Key, t *Token) error
	// Lock takes the lock for fetching k's token for at most ttl, or
	// returns ErrLocked while another holder has it.
	Lock(ctx context.Context, k Key, ttl time.Duration) (unlock func(), err error)
}

// Key identifies a token in the cache.
type Key [sha256.Size]byte

// Endpoint is a token endpoint as a policy uses it, with the Redis tier its
// tokens are shared through, if any.
type Endpoint struct {
	Client     *idp.Client
	DefaultTTL time.Duration
	Shared     *Shared // nil: the in-process tier only
	identity   [sha256.Size]byte
}

// NewEndpoint returns the Endpoint for client, whose tokens live defaultTTL
// when neither the answer nor the token says otherwise, shared through
// shared unless it is nil.
func NewEndpoint(client *idp.Client, defaultTTL time.Duration, shared *Shared) *Endpoint {
	return &Endpoint{Client: client, DefaultTTL: defaultTTL, Shared: shared, identity: sha256.Sum256([]byte(client.Identity()))}
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

// Cache is an in-process token cache with single-flight fetching, in front
// of the Redis tiers endpoints name.
type Cache struct {
	store  *memoryStore
	flight singleflight.Group
	now    func() time.Time
	log    *zap.Logger

	mu      sync.Mutex
	redises map[string]*Redis // by RedisOptions.Identity
}

// New returns an empty Cache.
func New(o Options) *Cache {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Cache{store: newMemoryStore(o.MaxEntries, o.Now), now: o.Now, log: o.Logger, redises: map[string]*Redis{}}
}

// Shared returns a Redis tier with the given key prefix and encryption key
// (empty for none). Tiers whose options have the same Identity share one
// connection pool.
func (c *Cache) Shared(o RedisOptions, prefix string, encryptionKey []byte) (*Shared, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.redises[o.Identity]
	if r == nil || o.Identity == "" {
		var err error
		if r, err = newRedis(o, c.log, c.now); err != nil {
			return nil, err
		}
		c.redises[o.Identity] = r
	}
	return newShared(r, prefix, encryptionKey)
}

// Close closes every Redis connection pool.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for id, r := range c.redises {
		errs = append(errs, r.Close())
		delete(c.redises, id)
	}
	return errors.Join(errs...)
}

// Source says where a token came from.
type Source uint8

// Sources, nearest first.
const (
	FromMemory   Source = iota + 1 // the in-process tier
	FromShared                     // the Redis tier
	FromEndpoint                   // the token endpoint
)

func (s Source) String() string {
	switch s {
	case FromMemory:
		return "memory"
	case FromShared:
		return "redis"
	case FromEndpoint:
		return "endpoint"
	}
	return "none"
}

// Hit reports whether the token came from a cache tier.
func (s Source) Hit() bool { return s == FromMemory || s == FromShared }

// lockPoll is how often a replica waiting for another's fetch looks for its value.
const lockPoll = 10 * time.Millisecond

// ErrExpired reports a token that the endpoint handed out already expired.
var ErrExpired = errors.New("the token endpoint issued a token that has already expired")

// Token returns the token for creds at e and where it came from. key must
// be e.Key(creds). The error is the endpoint's (*idp.Error), ErrExpired, or
// ctx's when the caller stopped waiting.
func (c *Cache) Token(ctx context.Context, e *Endpoint, key Key, creds idp.Credentials) (*Token, Source, error) {
	if t := c.store.get(key, c.now()); t != nil {
		return t, FromMemory, nil
	}
	ch := c.flight.DoChan(string(key[:]), func() (any, error) {
		// The fetch outlives a caller that gives up, bounded by its own budget.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.Client.Budget())
		defer cancel()
		return c.fill(fctx, e, key, creds)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, 0, r.Err
		}
		f := r.Val.(filled)
		return f.token, f.source, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

type filled struct {
	token  *Token
	source Source
}

// fill finds or fetches the token for a local miss; one call per key runs at a time.
func (c *Cache) fill(ctx context.Context, e *Endpoint, key Key, creds idp.Credentials) (filled, error) {
	// A flight that ended just before this one began may have filled the cache.
	if t := c.store.get(key, c.now()); t != nil {
		return filled{t, FromMemory}, nil
	}
	if sh := e.Shared; sh != nil {
		t, unlock := c.fromShared(ctx, e, key)
		if t != nil {
			c.store.put(key, t, t.serveUntil(), c.now())
			return filled{t, FromShared}, nil
		}
		if unlock != nil {
			defer unlock()
		}
	}
	resp, err := e.Client.Token(ctx, creds)
	if err != nil {
		return filled{}, err
	}
	t, err := c.newToken(resp, e.DefaultTTL)
	if err != nil {
		return filled{}, err
	}
	if e.Shared != nil {
		_ = e.Shared.Set(ctx, key, t) // a failure is logged by the tier; the token serves anyway
	}
	c.store.put(key, t, t.serveUntil(), c.now())
	return filled{t, FromEndpoint}, nil
}

// fromShared reads the Redis tier and, on a miss, takes the fleet-wide
// lock. It returns a token found there, or the unlock of a lock this
// replica now holds (nil when Redis failed: fetch without it), or waits
// while another replica holds the lock.
func (c *Cache) fromShared(ctx context.Context, e *Endpoint, key Key) (*Token, func()) {
	sh := e.Shared
	lockTTL := e.Client.AttemptTimeout() + time.Second
	for {
		t, err := sh.Get(ctx, key)
		if t != nil || err != nil {
			return t, nil
		}
		unlock, err := sh.Lock(ctx, key, lockTTL)
		switch {
		case err == nil:
			// Another replica may have stored the token between Get and Lock.
			if t, _ := sh.Get(ctx, key); t != nil {
				unlock()
				return t, nil
			}
			return nil, unlock
		case !errors.Is(err, ErrLocked):
			return nil, nil
		}
		timer := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, nil
		case <-timer.C:
		}
	}
}

func (c *Cache) newToken(resp *idp.Token, defaultTTL time.Duration) (*Token, error) {
	now := c.now()
	t := &Token{AccessToken: resp.AccessToken, Type: resp.Type, Fetched: now}
	t.decodeClaims()
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
	if !t.Expiry.After(now) {
		return nil, ErrExpired
	}
	return t, nil
}

// Len returns the number of cached tokens, expired ones included until evicted.
func (c *Cache) Len() int { return c.store.len() }
