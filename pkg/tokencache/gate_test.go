package tokencache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/secret"
)

// guarded is a cache in front of a real test IdP, with the gate's bounds.
type guarded struct {
	idp   *testidp.Server
	cache *Cache
	ep    *Endpoint
	m     *metrics.Metrics
	clock *clock
}

type guardOptions struct {
	limit, queue, rejections, endpointRejections int
	timeout                                      time.Duration
	caseInsensitive                              bool
	shared                                       *Shared
}

func newGuarded(t *testing.T, o guardOptions) *guarded {
	t.Helper()
	clk := &clock{now: time.Now()}
	s, err := testidp.New(testidp.Options{CaseInsensitiveIDs: o.caseInsensitive, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for i := range 50 {
		s.AddClient(fmt.Sprintf("app%d", i), testidp.Client{Secret: "s3cret"})
	}
	return newGuardedAt(t, s, o, clk)
}

// newGuardedAt is another replica of the same endpoint.
func newGuardedAt(t *testing.T, s *testidp.Server, o guardOptions, clk *clock) *guarded {
	t.Helper()
	c, err := idp.NewClient(idp.Options{URL: s.TokenURL, Timeout: o.timeout})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	cache := New(Options{MaxEntries: 10_000, Metrics: m, Now: clk.Now})
	t.Cleanup(func() { cache.Close() })
	return &guarded{
		idp: s, cache: cache, m: m, clock: clk,
		ep: NewEndpoint(EndpointOptions{
			Client: c, DefaultTTL: time.Minute, Shared: o.shared,
			MaxConcurrent: o.limit, MaxQueued: o.queue,
			MaxRejections: o.rejections, RejectionWindow: time.Minute, MaxEndpointRejections: o.endpointRejections,
		}),
	}
}

func (g *guarded) token(ctx context.Context, id, sec string) (*Token, Source, error) {
	creds := idp.Credentials{ID: id, Secret: secret.New(sec)}
	return g.cache.Token(ctx, g.ep, g.ep.Key(creds), creds)
}

func (g *guarded) refusals(reason string) float64 {
	return testutil.ToFloat64(g.m.IdPRefusals.WithLabelValues("", reason))
}

// quiet waits until the IdP answers nothing and the cache runs no fill.
func (g *guarded) quiet(t *testing.T) {
	t.Helper()
	poll(t, func() bool {
		g.cache.flights.mu.Lock()
		defer g.cache.flights.mu.Unlock()
		return g.idp.Inflight() == 0 && len(g.cache.flights.calls) == 0
	})
}

// TestGateBoundsWhatTheIdPWorksOn: many client ids at a slow IdP whose
// callers give up long before it answers. The IdP never works on more than
// the bound; the requests it got finish and are cached for the next
// caller; the queued requests whose callers all left are never sent.
func TestGateBoundsWhatTheIdPWorksOn(t *testing.T) {
	g := newGuarded(t, guardOptions{limit: 3})
	g.idp.SetBehavior(testidp.Behavior{Latency: 300 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if _, _, err := g.token(ctx, fmt.Sprintf("app%d", i), "s3cret"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a caller that left: %v", err)
			}
		})
	}
	wg.Wait()
	g.quiet(t)
	if n, p := g.idp.Requests(), g.idp.PeakConcurrency(); n != 3 || p != 3 {
		t.Errorf("the IdP got %d requests, %d at once; want the 3 the bound let through", n, p)
	}
	if got := g.refusals(ReasonAbandoned); got != 37 {
		t.Errorf("%v requests abandoned unsent, want 37", got)
	}
	if n := g.cache.Len(); n != 3 {
		t.Errorf("%d tokens cached, want the 3 whose requests were sent", n)
	}
	g.idp.SetBehavior(testidp.Behavior{})
	cached := 0
	for i := range 40 {
		if _, src, err := g.token(context.Background(), fmt.Sprintf("app%d", i), "s3cret"); err != nil {
			t.Fatal(err)
		} else if src.Hit() {
			cached++
		}
	}
	if cached != 3 {
		t.Errorf("%d callers found a token cached by a request whose caller had left, want 3", cached)
	}
}

// TestSentRequestsHaveTheirWholeTimeout: a request that queued is sent with
// its whole attempt timeout ahead of it, not what is left after the wait.
func TestSentRequestsHaveTheirWholeTimeout(t *testing.T) {
	g := newGuarded(t, guardOptions{limit: 1, timeout: time.Second})
	g.idp.SetBehavior(testidp.Behavior{Latency: 700 * time.Millisecond})
	first := make(chan error, 1)
	go func() { _, _, err := g.token(context.Background(), "app1", "s3cret"); first <- err }()
	poll(t, func() bool { return g.idp.Inflight() == 1 })
	// Queued for 700 ms, then 700 ms at the IdP: 1.4 s from the start,
	// more than the attempt timeout, well within each request's own.
	if _, _, err := g.token(context.Background(), "app2", "s3cret"); err != nil {
		t.Errorf("the queued request: %v", err)
	}
	if err := <-first; err != nil {
		t.Errorf("the first request: %v", err)
	}
	if p := g.idp.PeakConcurrency(); p != 1 {
		t.Errorf("%d requests at once, want 1", p)
	}
}

// TestFairQueue: waiting requests are served per client id in turn, the
// trusted class first; a full class is refused at once with a Retry-After.
func TestFairQueue(t *testing.T) {
	g := newGate(prometheus.NewGauge(prometheus.GaugeOpts{Name: "o"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "q"}))
	g.limit, g.maxQueue = 1, 4
	hold, err := g.acquire(context.Background(), [16]byte{}, classOther)
	if err != nil {
		t.Fatal(err)
	}
	ids := &identities{}
	order := make(chan string, 16)
	var releases sync.WaitGroup
	enqueue := func(name string, class int) {
		n := g.queuedNow()
		releases.Go(func() {
			release, err := g.acquire(context.Background(), ids.client(name[:1]).key, class)
			if err != nil {
				t.Error(err)
				return
			}
			order <- name
			release()
		})
		poll(t, func() bool { return g.queuedNow() == n+1 })
	}
	// The flooding id asks first and most; the trusted one last.
	for _, name := range []string{"a1", "a2", "a3", "b1"} {
		enqueue(name, classOther)
	}
	if _, err := g.acquire(context.Background(), ids.client("c").key, classOther); !refusedFor(err, ReasonQueueFull) {
		t.Errorf("a fifth request in a class of four: %v, want queue_full", err)
	} else if r := err.(*RefusedError).RetryAfter; r < time.Second {
		t.Errorf("Retry-After %s, want at least a second", r)
	}
	enqueue("t1", classTrusted)
	hold()
	releases.Wait()
	close(order)
	var got []string
	for name := range order {
		got = append(got, name)
	}
	if want := []string{"t1", "a1", "b1", "a2", "a3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("served %v, want %v", got, want)
	}
}

func (g *gate) queuedNow() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.queued()
}

func refusedFor(err error, reason string) bool {
	var r *RefusedError
	return errors.As(err, &r) && r.Reason == reason
}

// TestFloodCannotHoldAKnownClientBack: while unknown ids fill the queue,
// a client whose credentials the IdP accepted before goes first.
func TestFloodCannotHoldAKnownClientBack(t *testing.T) {
	g := newGuarded(t, guardOptions{limit: 1, queue: 64})
	if _, _, err := g.token(context.Background(), "app1", "s3cret"); err != nil {
		t.Fatal(err)
	}
	g.cache.store.purge(func(Key) bool { return true }) // its token gone, its credentials known
	g.idp.SetBehavior(testidp.Behavior{Latency: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() { _, _, _ = g.token(ctx, fmt.Sprintf("stranger%d", i), "x") })
	}
	poll(t, func() bool { return g.cache.gate(g.ep).queuedNow() >= 60 })
	start := time.Now()
	if _, _, err := g.token(context.Background(), "app1", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("the known client waited %s behind 60 strangers, want one turn (about 400 ms)", waited)
	}
	cancel()
	wg.Wait()
	g.quiet(t)
}

// TestFailureBudgetCannotBeTurnedAgainstAClient: the failure budget never
// refuses credentials the IdP accepted, also after their token is gone;
// case variants of an id share its budget; ids sprayed at the endpoint
// neither evict its record nor make the IdP reject more than the
// endpoint-wide cap; a purge of the client gives it a fresh budget.
func TestFailureBudgetCannotBeTurnedAgainstAClient(t *testing.T) {
	g := newGuarded(t, guardOptions{rejections: 5, endpointRejections: 20, caseInsensitive: true})
	g.idp.SetBehavior(testidp.Behavior{Lifetime: time.Minute})
	g.idp.AddClient("victim", testidp.Client{Secret: "right"})
	if _, _, err := g.token(context.Background(), "victim", "right"); err != nil {
		t.Fatal(err)
	}
	g.clock.Add(2 * time.Minute) // the token expired: only the memory of its acceptance is left
	for i, spelling := range []string{"victim", "Victim", "VICTIM", "vIcTiM", "victiM", "VICtim"} {
		for j := range 3 {
			_, _, err := g.token(context.Background(), spelling, fmt.Sprintf("guess-%d-%d", i, j))
			if err == nil {
				t.Fatal("a wrong secret was accepted")
			}
		}
	}
	if n := g.idp.Attempts("victim"); n != 6 { // the first acceptance and 5 rejections
		t.Errorf("the IdP heard %d requests for the victim, want 1 + 5 whatever the case", n)
	}
	if _, src, err := g.token(context.Background(), "victim", "right"); err != nil || src != FromEndpoint {
		t.Errorf("the victim's accepted secret during the attack: %v %v, want a new token", src, err)
	}

	// A spray of other ids: the endpoint hears at most the cap (the
	// victim's 5 rejections took 5 of its 20), refused ones are told when
	// to come back, and the victim's record stays.
	before := g.idp.Requests()
	for i := range 5000 {
		_, _, err := g.token(context.Background(), fmt.Sprintf("spray-%d", i), "x")
		if i >= 15 && !refusedFor(err, ReasonEndpointBudget) {
			t.Fatalf("spray %d: %v, want endpoint_budget", i, err)
		}
	}
	if n := g.idp.Requests() - before; n != 15 {
		t.Errorf("the spray made %d token requests, want the 15 left of the cap", n)
	}
	if _, _, err := g.token(context.Background(), "Victim", "one-more"); !refusedFor(err, ReasonFailureBudget) {
		t.Errorf("the victim after the spray: %v, want still over its budget", err)
	}
	if n := len(g.cache.gate(g.ep).budget.records); n > 25 {
		t.Errorf("%d budget records after the spray, want at most the cap's and the victim's", n)
	}
	// The price: a client never accepted before waits for the window.
	if _, _, err := g.token(context.Background(), "app1", "s3cret"); !refusedFor(err, ReasonEndpointBudget) {
		t.Errorf("a never-accepted client during the spray: %v, want endpoint_budget", err)
	}

	// The operator purges the victim, in any case: a fresh budget, and
	// its rotated secret is heard at once.
	g.idp.AddClient("victim", testidp.Client{Secret: "rotated"})
	if _, _, err := g.token(context.Background(), "victim", "rotated"); !refusedFor(err, ReasonFailureBudget) {
		t.Fatalf("the rotated secret before the purge: %v", err)
	}
	if _, err := g.cache.Purge(context.Background(), PurgeRequest{ClientID: "VICTIM"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.token(context.Background(), "victim", "rotated"); err != nil {
		t.Errorf("the rotated secret after the purge: %v", err)
	}
	// Once the window passes, the endpoint hears unknown ids again.
	g.clock.Add(2 * time.Minute)
	if _, _, err := g.token(context.Background(), "app1", "s3cret"); err != nil {
		t.Errorf("a new client after the window: %v", err)
	}
}

// TestAcceptedCredentialsAreSharedThroughRedis: a replica that never saw a
// client — just started, or another one — knows its credentials were
// accepted from Redis, and does not refuse them during an attack.
func TestAcceptedCredentialsAreSharedThroughRedis(t *testing.T) {
	single := redistest.Single(t)
	sharedFor := func() *Shared {
		s, err := newTestShared(t, single.Addr, "guard:")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := newGuarded(t, guardOptions{rejections: 2, shared: sharedFor()})
	a.idp.AddClient("victim", testidp.Client{Secret: "right"})
	if _, _, err := a.token(context.Background(), "victim", "right"); err != nil {
		t.Fatal(err)
	}
	// A replica started after the token expired.
	b := newGuardedAt(t, a.idp, guardOptions{rejections: 2, shared: sharedFor()}, &clock{now: time.Now()})
	creds := idp.Credentials{ID: "victim", Secret: secret.New("right")}
	if err := b.ep.Shared.Delete(context.Background(), b.ep.Key(creds)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, _, _ = b.token(context.Background(), "victim", fmt.Sprint("guess-", i))
	}
	if _, _, err := b.token(context.Background(), "victim", "another"); !refusedFor(err, ReasonFailureBudget) {
		t.Fatalf("the attack at the new replica: %v, want the budget spent", err)
	}
	if _, src, err := b.token(context.Background(), "victim", "right"); err != nil || src != FromEndpoint {
		t.Errorf("the accepted secret at a replica that never saw it: %v %v", src, err)
	}
	// A rejection forgets the acceptance everywhere.
	a.idp.AddClient("victim", testidp.Client{Secret: "rotated"})
	b.cache.store.purge(func(Key) bool { return true })
	if err := b.ep.Shared.Delete(context.Background(), b.ep.Key(creds)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.token(context.Background(), "victim", "right"); err == nil {
		t.Fatal("a revoked secret was accepted")
	}
	if b.ep.Shared.Accepted(context.Background(), b.ep.Key(creds)) {
		t.Error("Redis still says the revoked secret was accepted")
	}
}

// TestColdStartIsNotASpray: many clients the endpoint never accepted (a
// replica's first minute without Redis) all get their tokens: requests
// waiting for a place do not count against the endpoint-wide cap, only
// those sent.
func TestColdStartIsNotASpray(t *testing.T) {
	g := newGuarded(t, guardOptions{limit: 4, rejections: 5, endpointRejections: 6})
	g.idp.SetBehavior(testidp.Behavior{Latency: 20 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, _, err := g.token(context.Background(), fmt.Sprintf("app%d", i), "s3cret"); err != nil {
				t.Errorf("app%d at a cold start: %v", i, err)
			}
		})
	}
	wg.Wait()
	if p := g.idp.PeakConcurrency(); p > 4 {
		t.Errorf("%d requests at once, want at most 4", p)
	}
}

// TestPurgeResetsBudgetsOnEveryReplica: an operator's purge of a client at
// one replica gives the client a fresh budget at every replica of the
// Redis tier, whatever the case it is named in.
func TestPurgeResetsBudgetsOnEveryReplica(t *testing.T) {
	single := redistest.Single(t)
	replica := func(s *testidp.Server) *guarded {
		r, err := NewRedis(RedisOptions{Mode: RedisSingle, Endpoints: []string{single.Addr}, Timeout: time.Second}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		var g *guarded
		sh, err := NewShared(SharedOptions{Redis: r, Prefix: "purge:", EncryptionKey: testEncryptionKey,
			OnPurge: func(p PurgeSignal) { g.cache.Forget(p) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sh.Close() })
		if s == nil {
			g = newGuarded(t, guardOptions{rejections: 3, shared: sh})
		} else {
			g = newGuardedAt(t, s, guardOptions{rejections: 3, shared: sh}, &clock{now: time.Now()})
		}
		return g
	}
	a := replica(nil)
	b := replica(a.idp)
	rc := redis.NewClient(&redis.Options{Addr: single.Addr})
	defer rc.Close()
	poll(t, func() bool {
		n, _ := rc.PubSubNumSub(context.Background(), "purge:purge").Result()
		return n["purge:purge"] == 2
	})
	a.idp.AddClient("victim", testidp.Client{Secret: "rotated"})
	for i := range 3 {
		_, _, _ = b.token(context.Background(), "victim", fmt.Sprint("guess-", i))
	}
	if _, _, err := b.token(context.Background(), "victim", "rotated"); !refusedFor(err, ReasonFailureBudget) {
		t.Fatalf("the rotated secret during the lock-out: %v", err)
	}
	if _, err := a.cache.Purge(context.Background(), PurgeRequest{ClientID: "VICTIM", Tiers: []*Shared{a.ep.Shared}}); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool {
		_, _, err := b.token(context.Background(), "victim", "rotated")
		return err == nil
	})
}

// TestAcceptedSetIsBounded: the accepted credentials remembered stay under
// maxAccepted however many are accepted, the recently accepted stay, and
// a rejection forgets one.
func TestAcceptedSetIsBounded(t *testing.T) {
	s := newAcceptedSet()
	start := time.Now()
	fp := func(i int) [16]byte {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], uint64(i)*0x9e3779b97f4a7c15) // spread over the shards
		binary.BigEndian.PutUint64(b[8:], uint64(i))
		return b
	}
	const n = 3 * maxAccepted
	for i := range n {
		s.add(fp(i), start.Add(time.Duration(i)*time.Millisecond))
	}
	if got := s.len(); got > maxAccepted || got < maxAccepted*9/10 {
		t.Errorf("%d remembered after %d acceptances, want at most, and about, %d", got, n, maxAccepted)
	}
	recent := 0
	for i := n - 1000; i < n; i++ {
		if s.has(fp(i)) {
			recent++
		}
	}
	if recent < 990 {
		t.Errorf("%d of the 1,000 most recent acceptances remembered", recent)
	}
	s.forget(fp(n - 1))
	if s.has(fp(n - 1)) {
		t.Error("a forgotten credential is still accepted")
	}
}
