package tokencache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
)

// Options configure a Cache.
type Options struct {
	MaxEntries int              // bound on cached tokens
	Now        func() time.Time // a coarse clock, a little ahead of time.Now, when nil
	Logger     *zap.Logger
	Metrics    *metrics.Metrics // metrics.Nop() when nil
}

// Cache is an in-process token cache with single-flight fetching,
// refresh-ahead and negative caching, in front of the Redis tiers endpoints
// name. It is safe for concurrent use.
type Cache struct {
	store    memoryTier
	negative negativeCache
	flights  *flights
	now      func() time.Time // coarse, for the hot path
	exact    func() time.Time // for decisions at a token's expiry
	log      *zap.Logger
	m        *metrics.Metrics
	counters lookupCounters

	stopClock func() // stops the coarse clock, if Now is one

	ids      *identities // keys the hashes of client ids and accepted credentials
	accepted acceptedSet // credentials the endpoints accepted

	mu    sync.Mutex
	gates map[string]*gate // by token endpoint URL
}

// New returns an empty Cache.
func New(o Options) *Cache {
	stop, exact := func() {}, o.Now
	if o.Now == nil {
		o.Now, stop = coarseClock(clockResolution)
		exact = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Nop()
	}
	return &Cache{
		store:     newMemoryTier(o.MaxEntries),
		negative:  newNegativeCache(o.MaxEntries),
		now:       o.Now,
		exact:     exact,
		log:       o.Logger,
		m:         o.Metrics,
		counters:  newLookupCounters(o.Metrics),
		flights:   newFlights(),
		ids:       newIdentities(),
		accepted:  newAcceptedSet(),
		gates:     map[string]*gate{},
		stopClock: stop,
	}
}

// clockResolution is how often the coarse clock reads the time.
const clockResolution = 10 * time.Millisecond

// coarseClock returns a clock that reads the time only every resolution
// and reports it one resolution ahead, so that while its ticker keeps time
// a token is taken for a little older than it is, never for younger.
// Reading the system clock costs more than the rest of a cache hit on some
// virtual machines. Decisions at a token's very expiry use the exact clock.
func coarseClock(resolution time.Duration) (now func() time.Time, stop func()) {
	var t atomic.Int64
	t.Store(time.Now().Add(resolution).UnixNano())
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(resolution)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case at := <-tick.C:
				t.Store(at.Add(resolution).UnixNano())
			}
		}
	}()
	var once sync.Once
	return func() time.Time { return time.Unix(0, t.Load()) }, func() { once.Do(func() { close(done) }) }
}

// lookupCounters are the lookup series, resolved once so that counting a
// hit allocates nothing.
type lookupCounters struct {
	memoryHit, memoryMiss, memoryStale, redisHit, redisMiss prometheus.Counter
	refreshOK, refreshError                                 prometheus.Counter
}

func newLookupCounters(m *metrics.Metrics) lookupCounters {
	return lookupCounters{
		memoryHit:    m.CacheLookups.WithLabelValues("memory", "hit"),
		memoryMiss:   m.CacheLookups.WithLabelValues("memory", "miss"),
		memoryStale:  m.CacheLookups.WithLabelValues("memory", "stale"),
		redisHit:     m.CacheLookups.WithLabelValues("redis", "hit"),
		redisMiss:    m.CacheLookups.WithLabelValues("redis", "miss"),
		refreshOK:    m.Refreshes.WithLabelValues("ok"),
		refreshError: m.Refreshes.WithLabelValues("error"),
	}
}

// Close stops the cache's clock. Redis pools and tiers are their
// creators' to close.
func (c *Cache) Close() error {
	c.stopClock()
	return nil
}

// Len returns the number of cached tokens, expired ones included until evicted.
func (c *Cache) Len() int { return c.store.len() }

// ErrExpired reports a token that the endpoint handed out already expired.
var ErrExpired = errors.New("the token endpoint issued a token that has already expired")

// lockPoll is how often a replica waiting for another's fetch looks for its
// value, and lockPatience how long it waits before fetching itself: a cold
// burst makes one token request fleet-wide as long as the IdP answers
// within lockPatience.
const (
	lockPoll     = 10 * time.Millisecond
	lockPatience = time.Second
)

// Token returns the token for creds at e and where it came from. key must
// be e.Key(creds). The error is the endpoint's (*idp.Error), ErrExpired, or
// ctx's when the caller stopped waiting and no valid token was left.
func (c *Cache) Token(ctx context.Context, e *Endpoint, key Key, creds idp.Credentials) (*Token, Source, error) {
	now := c.now()
	t := c.store.get(key, now)
	if t != nil && now.Before(t.serveUntil()) {
		if !now.Before(t.refreshAt()) {
			c.refreshAhead(e, key, creds, t, now)
		}
		c.counters.memoryHit.Inc()
		return t, FromMemory, nil
	}
	// Either no token, or one close to its expiry. Close to expiry, the
	// exact clock decides: the coarse one may lag when the process starves.
	if t != nil && !c.exact().Before(t.Expiry()) {
		t = nil
	}
	// A token close to its expiry serves while its refresh is under way, so
	// that a slow endpoint makes no one wait.
	if t != nil && t.refreshing.Load() {
		c.counters.memoryStale.Inc()
		return t, FromMemory, nil
	}
	// A recent failure answers without asking again.
	if err := c.negative.get(key, now); err != nil {
		c.m.NegativeHits.Inc()
		if t != nil && !revoked(err) {
			c.counters.memoryStale.Inc()
			return t, FromMemory, nil
		}
		return nil, 0, err
	}
	c.counters.memoryMiss.Inc()
	return c.wait(ctx, e, key, creds, t)
}

// Current reports whether t, a token Token answered FromMemory, may be
// served again as it is without asking Token: the memory tier still holds
// it (it was not replaced, evicted, deleted, revoked or purged since), and
// it is within its serve window and before its refresh is due. A true
// answer counts a memory hit, as Token's would; on false, ask Token.
// Callers keep the last token a client got beside the client's
// credentials, so that its next request skips the key's lookup.
func (c *Cache) Current(t *Token) bool {
	if t == nil || t.retired.Load() {
		return false
	}
	now := c.now().UnixNano()
	if now >= t.refreshAtNano() || now >= t.serveUntilNano() {
		return false
	}
	c.counters.memoryHit.Inc()
	return true
}

// wait joins or starts the key's fill and waits for it until ctx ends; old
// is the token to fall back on while it has not expired. It is apart from
// Token so that a hit does not pay for the closure's captures.
func (c *Cache) wait(ctx context.Context, e *Endpoint, key Key, creds idp.Credentials, old *Token) (*Token, Source, error) {
	// The fill outlives a caller that gives up while others wait, and once
	// its request is sent, it finishes and caches its token whoever waits.
	cl := c.flights.join(ctx, key.id, func(cl *call) (filled, error) {
		return c.fill(cl, fillRequest{e: e, key: key, creds: creds, known: old != nil})
	})
	f, err := c.flights.wait(ctx, cl)
	if err == nil {
		return f.token, f.source, nil
	}
	// The endpoint could not give a new token: the old one serves until it
	// expires, unless the endpoint said the client may no longer have one.
	if old != nil && !revoked(err) && c.exact().Before(old.Expiry()) {
		c.counters.memoryStale.Inc()
		return old, FromMemory, nil
	}
	return nil, 0, err
}

// refreshAhead starts one background refresh of t, unless one started
// recently: at most one per token per negative TTL.
func (c *Cache) refreshAhead(e *Endpoint, key Key, creds idp.Credentials, t *Token, now time.Time) {
	next := t.nextRefresh.Load()
	since := now.Sub(t.Fetched())
	if since < time.Duration(next)*time.Second || !t.nextRefresh.CompareAndSwap(next, int32((since+e.NegativeTTL+time.Second-1)/time.Second)) {
		return
	}
	t.refreshing.Store(true)
	go func() {
		defer t.refreshing.Store(false)
		// Joining the key's flight keeps refreshes and cold fetches to one
		// at a time; a refresh waits for its fill to the end, so that the
		// fill is never abandoned.
		cl := c.flights.join(context.Background(), key.id, func(cl *call) (filled, error) {
			return c.fill(cl, fillRequest{e: e, key: key, creds: creds, newerThan: t.Fetched(), known: true, refresh: true})
		})
		<-cl.done
		if cl.err != nil {
			c.counters.refreshError.Inc()
		} else {
			c.counters.refreshOK.Inc()
		}
	}()
}

type filled struct {
	token  *Token
	source Source
}

// fillRequest is one fill's work.
type fillRequest struct {
	e     *Endpoint
	key   Key
	creds idp.Credentials
	// newerThan is the time a token must have been fetched after; zero for any.
	newerThan time.Time
	// known says the cache holds a token for key: its credentials worked.
	known bool
	// refresh says no caller waits: the token is refreshed ahead of its expiry.
	refresh bool
}

// fill finds or fetches a token for r.key, for the callers of cl. One
// fill per key runs at a time.
func (c *Cache) fill(cl *call, r fillRequest) (filled, error) {
	e, key := r.e, r.key
	// Until its request is sent, the fill ends when its callers have all
	// gone, and waits no longer than a whole fetch could take.
	ctx, cancel := context.WithTimeout(cl.ctx, e.Client.Budget())
	defer cancel()
	now := c.now()
	// A flight that ended just before this one began may have done the work.
	if t := c.store.get(key, now); t != nil && t.Fetched().After(r.newerThan) && now.Before(t.serveUntil()) {
		return filled{t, FromMemory}, nil
	}
	if e.SubjectVerifier != nil && !r.creds.Subject.Empty() {
		// The caller's token is checked before anything is asked for it;
		// a refused one is remembered like a refused exchange.
		if err := e.SubjectVerifier.Verify(ctx, r.creds.Subject.Reveal()); err != nil {
			err = &SubjectError{Err: err}
			c.negative.remember(key, err, e.NegativeTTL, c.now())
			return filled{}, err
		}
	}
	if e.Shared != nil {
		t, unlock := c.fromShared(ctx, e, key, r.creds.ID, r.newerThan)
		if t != nil {
			c.store.put(key, t, c.now())
			c.negative.forget(key)
			return filled{t, FromShared}, nil
		}
		if unlock != nil {
			defer unlock()
		}
	}
	t, err := c.guardedFetch(ctx, cl, r)
	// What follows the answer is not cut short by callers who left: each
	// Redis call has its own timeout.
	after := context.WithoutCancel(cl.ctx)
	var refused *RefusedError
	switch {
	case errors.As(err, &refused) || errors.Is(err, errAbandoned) || err != nil && !sent(err):
		// Not the client's fault, nor the endpoint's answer: not remembered.
		return filled{}, err
	case err != nil:
		if revoked(err) {
			// The secret was revoked, or the client lost the scope: its
			// token goes at once, from this replica and from Redis.
			c.store.delete(key)
			if e.Shared != nil {
				_ = e.Shared.Delete(after, key)
			}
		}
		c.negative.remember(key, err, negativeTTL(e, err), c.now())
		c.log.Debug("token fetch failed", zap.Error(err))
		return filled{}, err
	}
	c.negative.forget(key)
	if e.Shared != nil {
		_ = e.Shared.Set(after, key, t) // a failure is logged by the tier; the token serves anyway
	}
	c.store.put(key, t, c.now())
	return filled{t, FromEndpoint}, nil
}

// guardedFetch fetches a token within the failure budgets and the
// endpoint's gate, for the callers of cl: it waits for a place at the
// endpoint until ctx ends, and once it has one sends the request with a
// whole fetch's time ahead of it, whoever still waits.
func (c *Cache) guardedFetch(ctx context.Context, cl *call, r fillRequest) (*Token, error) {
	e := r.e
	g := c.gate(e)
	client := c.ids.client(budgetID(r.creds))
	fp := c.ids.accepted(r.key)
	trusted := r.known || r.refresh || c.accepted.has(fp)
	if !trusted && e.Shared != nil && e.Shared.Accepted(ctx, r.key) {
		trusted = true // another replica, or this one before a restart, saw them accepted
		c.accepted.add(fp, c.now())
	}
	adm, err := g.admit(e, client, trusted, c.now())
	if err != nil {
		c.refused(e, err.(*RefusedError).Reason)
		return nil, err
	}
	class := classOther
	if trusted {
		class = classTrusted
	}
	release, err := g.acquire(ctx, client.key, class)
	if err == nil {
		if err = adm.send(c.now()); err != nil {
			release()
		} else if !c.flights.commit(cl) {
			release()
			err = errAbandoned
		}
	}
	if err != nil {
		adm.done(false, c.now())
		var refused *RefusedError
		switch {
		case errors.As(err, &refused):
			c.refused(e, refused.Reason)
		case cl.ctx.Err() != nil || errors.Is(err, errAbandoned):
			c.refused(e, ReasonAbandoned)
			err = errAbandoned
		}
		return nil, err
	}
	// Sent: the request has the whole fetch's time, however long it
	// queued, and holds its place until the answer or that time's end.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(cl.ctx), e.Client.Budget())
	defer cancel()
	resp, err := e.Client.Token(sctx, r.creds)
	release()
	rejected := rejection(err, r.creds)
	if adm.done(rejected, c.now()) {
		c.log.Warn("client id over its failure budget: its unknown secrets are refused without asking the token endpoint until the window passes",
			zap.String("policy", e.Client.Name()), zap.String("client_id", r.creds.ID),
			zap.Int("max_rejections", e.MaxRejections), zap.Duration("window", e.RejectionWindow))
	}
	if rejected || err == nil {
		if rejected {
			c.accepted.forget(fp)
		} else {
			c.accepted.add(fp, c.now())
		}
		if e.Shared != nil {
			_ = e.Shared.Accept(context.WithoutCancel(sctx), r.key, !rejected)
		}
	}
	if err != nil {
		return nil, err
	}
	return c.checked(sctx, e, resp, r.creds)
}

// SubjectError is a caller's token that failed the local check before a
// delegated grant (Endpoint.SubjectVerifier).
type SubjectError struct{ Err error }

func (e *SubjectError) Error() string {
	return "the caller's token failed verification: " + e.Err.Error()
}
func (e *SubjectError) Unwrap() error { return e.Err }

// rejection reports an answer that counts against a failure budget: the
// endpoint refused the credentials — for a delegated grant, the caller's
// token.
func rejection(err error, creds idp.Credentials) bool {
	var ie *idp.Error
	if !errors.As(err, &ie) {
		return false
	}
	if !creds.Subject.Empty() {
		return ie.Kind == idp.KindInvalidGrant
	}
	return ie.Kind == idp.KindRejected
}

// refused counts a token request not sent.
func (c *Cache) refused(e *Endpoint, reason string) {
	c.m.IdPRefusals.WithLabelValues(e.Client.Name(), reason).Inc()
}

// sent reports an error that came from asking the endpoint (or from what
// it answered), not from the wait before: only those are remembered.
func sent(err error) bool {
	var ie *idp.Error
	return errors.As(err, &ie) || errors.Is(err, ErrExpired)
}

// revoked reports an endpoint's answer that the client may have no token
// (any more): its credentials are rejected, or its scope or audience refused.
// A cached token is not served after it.
func revoked(err error) bool {
	var ie *idp.Error
	return errors.As(err, &ie) && (ie.Kind == idp.KindRejected || ie.Kind == idp.KindForbidden || ie.Kind == idp.KindInvalidGrant)
}

// negativeTTL is how long err is remembered: the endpoint's negative TTL, or
// the Retry-After it sent if longer.
func negativeTTL(e *Endpoint, err error) time.Duration {
	ttl := e.NegativeTTL
	var ie *idp.Error
	if errors.As(err, &ie) && ie.RetryAfter > ttl {
		ttl = min(ie.RetryAfter, MaxNegativeTTL)
	}
	return ttl
}

// checked verifies the endpoint's answer and makes it a Token.
func (c *Cache) checked(ctx context.Context, e *Endpoint, resp *idp.Token, creds idp.Credentials) (*Token, error) {
	if e.Verifier != nil {
		if err := e.Verifier.Verify(ctx, resp.AccessToken.Reveal()); err != nil {
			return nil, err
		}
	}
	t, err := c.newToken(resp, e.DefaultTTL)
	if err != nil || creds.Subject.Empty() {
		return t, err
	}
	// A token exchanged for the caller's lives no longer than the
	// caller's own.
	if peek, err := claims.PeekJWT(creds.Subject.Reveal()); err == nil && !peek.Expiry.IsZero() && peek.Expiry.UnixNano() < t.expiry {
		t.expiry = peek.Expiry.UnixNano()
		if !t.Expiry().After(c.now()) {
			return nil, ErrExpired
		}
	}
	return t, nil
}

// fromShared reads the Redis tier for a servable token newer than
// newerThan and, when there is none, takes the fleet-wide lock. It returns
// a token found there; or the unlock of a lock this replica now holds; or,
// while another replica holds the lock, waits for its token. Both nil means
// Redis failed: fetch without it. A token whose JWT names another client
// than clientID is not taken, whatever Redis holds.
func (c *Cache) fromShared(ctx context.Context, e *Endpoint, key Key, clientID string, newerThan time.Time) (*Token, func()) {
	sh := e.Shared
	lockTTL := e.Client.AttemptTimeout() + time.Second
	usable := func() (*Token, error) {
		t, err := sh.Get(ctx, key)
		if t == nil || err != nil || !t.Fetched().After(newerThan) || !c.now().Before(t.serveUntil()) {
			return nil, err
		}
		if e.Verifier != nil {
			if err := e.Verifier.Verify(ctx, t.AccessToken.Reveal()); err != nil {
				c.log.Warn("token in redis failed verification; fetching a new one", zap.Error(err))
				return nil, nil
			}
		}
		return t, nil
	}
	// A holder that dies, or cannot write its token while Redis is
	// failing over or moving slots, leaves its lock for lockTTL: a waiter
	// fetches the token itself after lockPatience rather than fail its callers.
	patience := time.NewTimer(lockPatience)
	defer patience.Stop()
	for first := true; ; first = false {
		t, err := usable()
		if t != nil {
			c.counters.redisHit.Inc()
			return t, nil
		}
		if err != nil {
			return nil, nil
		}
		if first {
			c.counters.redisMiss.Inc()
		}
		unlock, err := sh.Lock(ctx, key, lockTTL)
		switch {
		case err == nil:
			// Another replica may have stored the token between Get and Lock.
			if t, _ := usable(); t != nil {
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
		case <-patience.C:
			timer.Stop()
			c.log.Debug("another replica's token request is late; fetching the token here")
			return nil, nil
		case <-timer.C:
		}
	}
}

func (c *Cache) newToken(resp *idp.Token, defaultTTL time.Duration) (*Token, error) {
	now := c.now()
	t := &Token{AccessToken: resp.AccessToken, bound: isDPoP(resp.Type), fetched: now.UnixNano()}
	payload := t.Claims()
	var expiry time.Time
	switch {
	case resp.ExpiresIn > 0:
		expiry = now.Add(resp.ExpiresIn)
	case payload != nil:
		if exp, ok := payload.Expiry(); ok {
			expiry = exp
			break
		}
		fallthrough
	default:
		expiry = now.Add(defaultTTL)
	}
	t.setExpiry(expiry, payload, now)
	if !t.Expiry().After(now) {
		return nil, ErrExpired
	}
	return t, nil
}
