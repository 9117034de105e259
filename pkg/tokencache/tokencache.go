// Package tokencache keeps access tokens so that requests almost never wait
// on the token endpoint.
//
// # Keys
//
// A Cache looks a token up by a Key that binds everything that shapes a token
// request (the endpoint's identity: URL, auth method, audience, scopes, extra
// parameters, client certificate or signing key, and how tokens are verified)
// and the client's id and secret, hashed with SHA-256: a wrong secret gets a
// key of its own and can never reach another client's token, a policy that
// verifies tokens never shares one with a policy that does not, and no secret
// appears in a key.
//
// # Lifetimes
//
// A token's lifetime is expires_in, or the JWT's exp when that is earlier or
// expires_in is absent, or the endpoint's default TTL. Within it:
//
//   - until 80% of the lifetime the token is simply served;
//   - from 80% until expiry - skew (skew = min(30s, lifetime/10)) it is served
//     and one background refresh replaces it (refresh-ahead), so that hot keys
//     never wait on the endpoint;
//   - from expiry - skew until expiry it is served while its refresh is under
//     way or the endpoint fails; otherwise a request waits for a new token,
//     and gets the old one if the endpoint cannot give one;
//   - after expiry it is never served.
//
// A failed fetch is remembered per key for the endpoint's negative TTL (or the
// Retry-After it was told, if longer): meanwhile requests get the same error
// (or a still valid token) without asking the endpoint again. A success
// forgets it.
//
// # Protecting the endpoint
//
// Every token endpoint (URL) has a gate. Its bulkhead bounds the requests
// open there to MaxConcurrent: a request is sent only with its whole
// budget ahead of it and holds its place until the answer or that budget's
// end. The others wait in a bounded queue (MaxQueued per class, refused at
// once when full), refreshes and credentials the endpoint accepted before
// first, client ids in turn. Callers choose client ids and secrets, and
// IdPs lock a client out, or throttle the gateway, after repeated
// failures: so the gate keeps failure budgets per client id and for the
// whole endpoint (see budget.go), which never refuse credentials the
// endpoint accepted.
//
// On a miss exactly one request per key goes to the endpoint at a time;
// concurrent callers wait for it and share its result, each until its own
// deadline. A request whose callers have all gone before it was sent is
// abandoned; one already sent finishes, bounded by the endpoint's own
// budget, and caches its token for the next caller. A JWT's payload is
// decoded, and with a Verifier its signature and times checked, once,
// when the token arrives.
//
// # Redis
//
// With a Redis tier (Shared) the in-process tier stays in front: a local miss
// reads Redis, and a Redis miss takes a short fleet-wide lock (SET NX PX)
// so that one replica asks the endpoint while the others wait for its value
// in Redis, and fetch themselves if it does not come within a second (the
// holder died, or could not write it). Refreshes take the
// same lock, so one replica refreshes for the fleet. Redis entries live as
// long as their token; values carry a format byte and, with an encryption
// key, are sealed with AES-256-GCM bound to their Redis key. Every Redis call
// is bounded by a short timeout; when Redis fails, requests go on with the
// in-process tier and the endpoint, and Redis is tried again a second later.
package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync/atomic"
	"time"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
)

// Lifetime shares.
const (
	// maxSkew bounds how long before its expiry a token stops being served
	// while the endpoint works.
	maxSkew = 30 * time.Second
	// refreshShare is the share of its lifetime after which a served token
	// is refreshed in the background.
	refreshShare = 0.8
)

// Token is a cached access token. It is immutable but for its memo and
// refresh bookkeeping, and is shared by every request that uses it. It
// keeps no decoded claims: what is made of them (headers, a claims
// expression's verdict) is made once per use and kept in the memo.
type Token struct {
	AccessToken secret.Value
	fetched     int64        // UnixNano: when the endpoint issued it
	expiry      int64        // UnixNano: the token's own end of validity
	kept        atomic.Value // what its user keeps with it (Keep)
	// nextRefresh is when a refresh may start, in whole seconds after
	// fetched, rounded up (a token lives at most idp.MaxLifetime, a year).
	nextRefresh atomic.Int32
	refreshing  atomic.Bool // a background refresh is under way
	// retired is set once the memory tier no longer holds the token under
	// its key: replaced, evicted, deleted or purged (Cache.Current).
	retired atomic.Bool
	bound   bool // token_type DPoP: bound to a key (RFC 9449)
}

// Type is the token's type: DPoP for a bound token, else Bearer (idp
// accepts no other).
func (t *Token) Type() string {
	if t.bound {
		return "DPoP"
	}
	return "Bearer"
}

// Fetched is when the endpoint issued the token.
func (t *Token) Fetched() time.Time { return time.Unix(0, t.fetched) }

// Expiry is the token's own end of validity.
func (t *Token) Expiry() time.Time { return time.Unix(0, t.expiry) }

// isDPoP reports a token_type of DPoP, in any case.
func isDPoP(tokenType string) bool { return strings.EqualFold(tokenType, "DPoP") }

// Claims decodes the token's JWT payload; nil when the token is not a JWT.
// It decodes anew on every call: for building what a memo keeps, never
// per request.
func (t *Token) Claims() *claims.Claims {
	c, err := claims.ParseJWT(t.AccessToken.Reveal())
	if err != nil {
		return nil
	}
	return c
}

func (t *Token) lifetime() time.Duration { return time.Duration(t.expiry - t.fetched) }

// refreshAt is when a hit starts a background refresh.
func (t *Token) refreshAt() time.Time { return time.Unix(0, t.refreshAtNano()) }

func (t *Token) refreshAtNano() int64 {
	return t.fetched + int64(float64(t.lifetime())*refreshShare)
}

// serveUntil is when the token stops being handed out while the endpoint
// works: min(30s, lifetime/10) before it expires, so that it never reaches
// an upstream about to expire.
func (t *Token) serveUntil() time.Time { return time.Unix(0, t.serveUntilNano()) }

func (t *Token) serveUntilNano() int64 {
	return t.expiry - int64(min(maxSkew, t.lifetime()/10))
}

// setExpiry ends the token at expiry, but no later than its JWT exp (c,
// its claims, nil for none) and idp.MaxLifetime after now: whatever the
// endpoint or a stored value says, a token is never served past its own
// exp, and its expiry fits every clock (and an int64 of nanoseconds).
func (t *Token) setExpiry(expiry time.Time, c *claims.Claims, now time.Time) {
	var exp time.Time
	if c != nil {
		exp, _ = c.Expiry()
	}
	t.setExpiryAt(expiry, exp, now)
}

// setExpiryAt is setExpiry with the JWT's exp known (zero if none).
func (t *Token) setExpiryAt(expiry, exp time.Time, now time.Time) {
	if !exp.IsZero() && exp.Before(expiry) {
		expiry = exp
	}
	t.expiry = minTime(expiry, now.Add(idp.MaxLifetime)).UnixNano()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Keep returns the value kept with the token when fits says it fits, else
// builds one and keeps it instead, so that per-token work (an answer to
// send) is done once per token, not per request. One value at a time: a
// token is usually served under one shape of answer, and one that a
// reload changed is built again once. Values must be of one type.
func (t *Token) Keep(fits func(any) bool, build func() any) any {
	if v := t.kept.Load(); v != nil && fits(v) {
		return v
	}
	v := build()
	t.kept.Store(v)
	return v
}

// Verifier checks a token before it is cached, whether it comes from the
// endpoint or from Redis.
type Verifier interface {
	// Verify checks the token's signature and times. Its error is an
	// *idp.Error.
	Verify(ctx context.Context, token string) error
	// Identity describes what Verify accepts; it holds no secret.
	Identity() string
}

// Key identifies a token in the cache: a SHA-256 over everything that shapes
// the token, with short hashes of the endpoint's identity and of the client
// id alone beside it, so that the tokens of a policy or of a client can be
// found to purge them.
type Key struct {
	id       [sha256.Size]byte
	endpoint [8]byte
	client   [8]byte
	// owner, for a delegated grant, is the short hash of the policy's own
	// client id, which the token's client claim must name (client names
	// the caller's token); zero when it is client.
	owner [8]byte
}

// issuedTo is the short hash of the client id k's token must be issued to.
func (k Key) issuedTo() [8]byte {
	if k.owner != ([8]byte{}) {
		return k.owner
	}
	return k.client
}

// clientHash is the short hash of a client id in a Key.
func clientHash(clientID string) [8]byte { return clientHashBytes([]byte(clientID)) }

func clientHashBytes(clientID []byte) [8]byte {
	sum := sha256.Sum256(clientID)
	return [8]byte(sum[:8])
}

// EndpointOptions configure NewEndpoint.
type EndpointOptions struct {
	Client *idp.Client
	// DefaultTTL is a token's lifetime when neither the answer nor the
	// token says otherwise.
	DefaultTTL time.Duration
	// NegativeTTL is how long a failed fetch is remembered.
	NegativeTTL time.Duration
	// Shared is the Redis tier tokens are shared through; nil for the
	// in-process tier alone.
	Shared *Shared
	// Verifier checks tokens before they are cached; nil to take them as
	// they come.
	Verifier Verifier
	// MaxRejections and RejectionWindow are the failure budget of every
	// client id (see Cache); zero MaxRejections for none, as in gateway
	// mode, where the client is the policy's own.
	MaxRejections   int
	RejectionWindow time.Duration
	// MaxEndpointRejections bounds the rejections of credentials the
	// endpoint never accepted, of any client ids, per RejectionWindow
	// (see Cache); DefaultMaxEndpointRejections when 0. It applies with a
	// failure budget only.
	MaxEndpointRejections int
	// MaxConcurrent bounds the requests open at the token endpoint,
	// shared by every Endpoint with the same URL; DefaultMaxConcurrent when 0.
	MaxConcurrent int
	// MaxQueued bounds the requests waiting for a place at the endpoint,
	// per class (see Cache); DefaultMaxQueued when 0.
	MaxQueued int
	// SubjectVerifier, for a delegated grant, checks the caller's token
	// before it is sent to the endpoint (on a miss only: a cached token
	// never outlives the caller's); nil leaves it to the endpoint.
	SubjectVerifier Verifier
}

// DefaultNegativeTTL is how long a failed fetch is remembered by default.
const DefaultNegativeTTL = 5 * time.Second

// DefaultMaxConcurrent bounds the requests under way to one token endpoint by default.
const DefaultMaxConcurrent = 32

// MaxNegativeTTL bounds how long a failure is remembered, a Retry-After
// included.
const MaxNegativeTTL = 5 * time.Minute

// Endpoint is a token endpoint as a policy uses it.
type Endpoint struct {
	EndpointOptions
	identity [sha256.Size]byte
}

// NewEndpoint returns the Endpoint for o.
func NewEndpoint(o EndpointOptions) *Endpoint {
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	id := o.Client.Identity()
	if o.Verifier != nil {
		id += "\x00verified:" + o.Verifier.Identity()
	}
	return &Endpoint{EndpointOptions: o, identity: sha256.Sum256([]byte(id))}
}

// Key returns the cache key of creds' token at e. It hashes the endpoint's
// identity, then each credential with its length, so that no two
// credential pairs collide.
func (e *Endpoint) Key(creds idp.Credentials) Key {
	id, secret := creds.ID, creds.Secret.Reveal()
	var stack [256]byte // usual credentials fit: no allocation
	buf := append(stack[:0], e.identity[:]...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(id)))
	buf = append(buf, id...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(secret)))
	buf = append(buf, secret...)
	client, owner := clientHash(id), [8]byte{}
	if !creds.Subject.Empty() {
		// A delegated grant: the caller's token is the credential that
		// matters, and the client whose tokens a purge selects.
		digest := SubjectDigest(creds.Subject)
		buf = append(buf, "\x00subject\x00"...)
		buf = append(buf, digest[:]...)
		client, owner = clientHashBytes([]byte(subjectClient(digest))), client
	}
	return Key{id: sha256.Sum256(buf), endpoint: [8]byte(e.identity[:8]), client: client, owner: owner}
}

// SubjectDigest is the SHA-256 of a caller's token.
func SubjectDigest(subject secret.Value) [sha256.Size]byte {
	return sha256.Sum256([]byte(subject.Reveal()))
}

// SubjectHash names a caller's token in logs, metadata and purges: the
// first 16 bytes of its SHA-256, in hex. It reveals nothing of the token.
func SubjectHash(subject secret.Value) string {
	d := SubjectDigest(subject)
	return hex.EncodeToString(d[:16])
}

// subjectClient is the client id a delegated grant's tokens are purged
// and budgeted by: "subject:" and the SubjectHash.
func subjectClient(digest [sha256.Size]byte) string {
	return SubjectPrefix + hex.EncodeToString(digest[:16])
}

// SubjectPrefix starts the client id that selects one caller's exchanged
// tokens in a purge: "subject:<SubjectHash>".
const SubjectPrefix = "subject:"

// budgetID is the id a token request is budgeted and queued under: the
// client id, or for a delegated grant the caller's token's.
func budgetID(creds idp.Credentials) string {
	if creds.Subject.Empty() {
		return creds.ID
	}
	return subjectClient(SubjectDigest(creds.Subject))
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
