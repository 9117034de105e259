package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
)

// clock is a settable time source shared by the cache and the test IdP.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(since time.Time, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = since.Add(d)
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	clock *clock
	idp   *testidp.Server
	cache *Cache
	ep    *Endpoint
}

func newFixture(t *testing.T, idpClock func() time.Time, maxEntries int) *fixture {
	t.Helper()
	clk := &clock{now: time.Now().Truncate(time.Second)}
	if idpClock == nil {
		idpClock = clk.Now
	}
	s, err := testidp.New(testidp.Options{Now: idpClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for i := range 100 {
		s.AddClient(fmt.Sprintf("app%d", i), testidp.Client{Secret: "s3cret"})
	}
	c, err := idp.NewClient(idp.Options{URL: s.TokenURL, MaxRetries: 0, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		clock: clk, idp: s,
		cache: New(Options{MaxEntries: maxEntries, Now: clk.Now}),
		ep:    NewEndpoint(EndpointOptions{Client: c, DefaultTTL: 5 * time.Minute}),
	}
}

func creds(i int) idp.Credentials {
	return idp.Credentials{ID: fmt.Sprintf("app%d", i), Secret: secret.New("s3cret")}
}

func (f *fixture) token(i int) (*Token, Source, error) {
	c := creds(i)
	return f.cache.Token(context.Background(), f.ep, f.ep.Key(c), c)
}

func (f *fixture) get(t *testing.T, i int) (*Token, bool) {
	t.Helper()
	tok, src, err := f.token(i)
	if err != nil {
		t.Fatal(err)
	}
	return tok, src.Hit()
}

func TestLifetime(t *testing.T) {
	tests := []struct {
		name       string
		behavior   testidp.Behavior
		idpSkew    time.Duration // the IdP's clock minus ours
		wantExpiry time.Duration // from now
		wantClaims bool
	}{
		{"expires_in", testidp.Behavior{Lifetime: 100 * time.Second}, 0, 100 * time.Second, true},
		{"JWT exp without expires_in", testidp.Behavior{Lifetime: 200 * time.Second, Answer: testidp.AnswerNoExpiresIn}, 0, 200 * time.Second, true},
		{"JWT exp earlier than expires_in", testidp.Behavior{Lifetime: 100 * time.Second}, -40 * time.Second, 60 * time.Second, true},
		{"default TTL", testidp.Behavior{Answer: testidp.AnswerOpaqueNoLifetime}, 0, 5 * time.Minute, false},
		{"expires_in as a string", testidp.Behavior{Lifetime: 100 * time.Second, Answer: testidp.AnswerStringExpiresIn}, 0, 100 * time.Second, true},
		{"expires_in as a float", testidp.Behavior{Lifetime: 100 * time.Second, Answer: testidp.AnswerFloatExpiresIn}, 0, 100 * time.Second, true},
		{"expires_in 1e30: the JWT's exp", testidp.Behavior{Lifetime: 100 * time.Second, Answer: testidp.AnswerHugeExpiresIn}, 0, 100 * time.Second, true},
		{"negative expires_in: the JWT's exp", testidp.Behavior{Lifetime: 100 * time.Second, Answer: testidp.AnswerNegativeExpiresIn}, 0, 100 * time.Second, true},
		{"a form-encoded answer", testidp.Behavior{Answer: testidp.AnswerForm}, 0, time.Minute, false},
		{"an exp in the year 3000: a year", testidp.Behavior{Answer: testidp.AnswerFarFutureExp}, 0, idp.MaxLifetime, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f *fixture
			f = newFixture(t, func() time.Time { return f.clock.Now().Add(tt.idpSkew) }, 100)
			f.idp.SetBehavior(tt.behavior)
			start := f.clock.Now()
			tok, hit := f.get(t, 0)
			if hit {
				t.Fatal("first lookup was a hit")
			}
			if got := tok.Expiry().Sub(start); got != tt.wantExpiry {
				t.Errorf("expiry in %v, want %v", got, tt.wantExpiry)
			}
			if (tok.Claims() != nil) != tt.wantClaims {
				t.Errorf("claims decode: %v, want %v", tok.Claims() != nil, tt.wantClaims)
			}
		})
	}
}

// TestServingWindows walks a 100-second token through its life: served
// until 80s, served and refreshed in the background from 80s.
func TestServingWindows(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second})
	start := f.clock.Now()
	first, _ := f.get(t, 0)

	f.clock.Set(start, 79*time.Second)
	if tok, hit := f.get(t, 0); !hit || tok != first || first.nextRefresh.Load() != 0 {
		t.Fatalf("at 79s: hit %v, same %v, refresh started %v", hit, tok == first, first.nextRefresh.Load() != 0)
	}
	f.clock.Set(start, 80*time.Second)
	if tok, hit := f.get(t, 0); !hit || tok != first {
		t.Fatalf("at 80s the current token must be served while it refreshes: hit %v, same %v", hit, tok == first)
	}
	poll(t, func() bool {
		tok, hit := f.get(t, 0)
		return hit && tok != first && tok.Fetched().Equal(start.Add(80*time.Second))
	})
	if n := f.idp.Requests(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestRefreshAheadOncePerToken(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second})
	start := f.clock.Now()
	first, _ := f.get(t, 0)
	f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second, Latency: 100 * time.Millisecond})
	f.clock.Set(start, 85*time.Second)
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if tok, hit := f.get(t, 0); !hit || tok == nil {
				t.Error("a hit during refresh waited or missed")
			}
		})
	}
	wg.Wait()
	poll(t, func() bool { tok, _ := f.get(t, 0); return tok != first })
	if n := f.idp.Requests(); n != 2 {
		t.Errorf("%d token requests for 200 hits in the refresh window, want 2", n)
	}
}

// TestServeUntilExpiryWhileFailing keeps serving a token while the
// endpoint fails, but never after the token's own expiry.
func TestServeUntilExpiryWhileFailing(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second})
	start := f.clock.Now()
	first, _ := f.get(t, 0)
	f.idp.SetBehavior(testidp.Behavior{FailStatus: 503})

	for _, at := range []time.Duration{85 * time.Second, 91 * time.Second, 97 * time.Second, 99*time.Second + 999*time.Millisecond} {
		f.clock.Set(start, at)
		tok, src, err := f.token(0)
		if err != nil || tok != first || !src.Hit() {
			t.Fatalf("at %v with the endpoint down: %v, %v; want the old token", at, src, err)
		}
	}
	f.clock.Set(start, 100*time.Second)
	if tok, _, err := f.token(0); tok != nil || err == nil {
		t.Fatal("a token was served at its expiry")
	}
	var ie *idp.Error
	if _, _, err := f.token(0); !errors.As(err, &ie) || ie.Kind != idp.KindUnavailable {
		t.Errorf("after expiry: %v, want the endpoint's error", err)
	}
}

func TestNegativeCaching(t *testing.T) {
	f := newFixture(t, nil, 100)
	wrong := idp.Credentials{ID: "app0", Secret: secret.New("wrong")}
	key := f.ep.Key(wrong)
	for range 1000 {
		_, _, err := f.cache.Token(context.Background(), f.ep, key, wrong)
		var ie *idp.Error
		if !errors.As(err, &ie) || ie.Kind != idp.KindRejected {
			t.Fatalf("wrong secret: %v", err)
		}
	}
	if n := f.idp.Requests(); n != 1 {
		t.Errorf("1000 checks with a wrong secret made %d token requests, want 1", n)
	}
	f.clock.Add(DefaultNegativeTTL)
	_, _, _ = f.cache.Token(context.Background(), f.ep, key, wrong)
	if n := f.idp.Requests(); n != 2 {
		t.Errorf("after the negative TTL: %d token requests, want 2", n)
	}

	// A failure of the endpoint, then its recovery: the failure is
	// remembered, and the first success forgets it.
	f.idp.SetBehavior(testidp.Behavior{FailStatus: 503})
	if _, _, err := f.token(1); err == nil {
		t.Fatal("no error from a failing endpoint")
	}
	f.idp.SetBehavior(testidp.Behavior{})
	if _, _, err := f.token(1); err == nil {
		t.Error("the failure was not remembered")
	}
	f.clock.Add(DefaultNegativeTTL)
	if _, _, err := f.token(1); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if err := f.cache.negative.get(f.ep.Key(creds(1)), f.clock.Now()); err != nil {
		t.Errorf("a success did not forget the failure: %v", err)
	}
}

// TestPurgeForgetsFailures: after an operator's purge the next request asks
// the endpoint again, for the purged client only.
func TestPurgeForgetsFailures(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{FailStatus: 503})
	for i := range 2 {
		if _, _, err := f.token(i); err == nil {
			t.Fatal("no error from a failing endpoint")
		}
	}
	f.idp.SetBehavior(testidp.Behavior{})
	if _, err := f.cache.Purge(context.Background(), PurgeRequest{ClientID: "app0"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.token(0); err != nil {
		t.Errorf("the purged client: %v, want a token", err)
	}
	if _, _, err := f.token(1); err == nil {
		t.Error("another client's failure was forgotten too")
	}
}

func TestNegativeCachingHonoursRetryAfter(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{FailStatus: 429, RetryAfter: "60"})
	if _, _, err := f.token(0); err == nil {
		t.Fatal("no error")
	}
	f.idp.SetBehavior(testidp.Behavior{})
	f.clock.Add(59 * time.Second)
	if _, _, err := f.token(0); err == nil {
		t.Error("retried before Retry-After")
	}
	f.clock.Add(time.Second)
	if _, _, err := f.token(0); err != nil {
		t.Errorf("after Retry-After: %v", err)
	}
	if n := f.idp.Requests(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestAlreadyExpired(t *testing.T) {
	var f *fixture
	f = newFixture(t, func() time.Time { return f.clock.Now().Add(-2 * time.Hour) }, 100)
	f.idp.SetBehavior(testidp.Behavior{Answer: testidp.AnswerNoExpiresIn})
	if _, _, err := f.token(0); !errors.Is(err, ErrExpired) {
		t.Errorf("error %v, want ErrExpired", err)
	}
}

func TestBoundedSize(t *testing.T) {
	f := newFixture(t, nil, 16)
	first, _ := f.get(t, 0)
	for i := 1; i < 100; i++ {
		f.clock.Add(2 * time.Second) // so that recency differs
		f.get(t, i)
		f.get(t, 0) // keep app0 recently used
	}
	if n := f.cache.Len(); n > 16 {
		t.Errorf("%d entries, want at most 16", n)
	}
	// The most recently used token survives eviction.
	if tok, hit := f.get(t, 0); !hit || tok != first {
		t.Error("the most recently used token was evicted")
	}
}

func TestKey(t *testing.T) {
	c1, err := idp.NewClient(idp.Options{URL: "https://x/t", Audience: "a"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := idp.NewClient(idp.Options{URL: "https://x/t", Audience: "b"})
	if err != nil {
		t.Fatal(err)
	}
	e1, e2 := NewEndpoint(EndpointOptions{Client: c1}), NewEndpoint(EndpointOptions{Client: c2})
	verified := NewEndpoint(EndpointOptions{Client: c1, Verifier: fakeVerifier("jwks")})
	k := e1.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")})
	for _, other := range []Key{
		e1.Key(idp.Credentials{ID: "a", Secret: secret.New("bc")}),
		e1.Key(idp.Credentials{ID: "ab", Secret: secret.New("d")}),
		e1.Key(idp.Credentials{ID: "ac", Secret: secret.New("c")}),
		e2.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")}),
		verified.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")}),
	} {
		if other == k {
			t.Error("different requests share a key")
		}
	}
	if e1.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")}) != k {
		t.Error("the key is not stable")
	}
}

type fakeVerifier string

func (f fakeVerifier) Verify(context.Context, string) error { return nil }
func (f fakeVerifier) Identity() string                     { return string(f) }

// TestKeep: a value kept with a token is built once and served while it
// fits; one that no longer fits (a reload changed the answer's shape) is
// built again and replaces it.
func TestKeep(t *testing.T) {
	f := newFixture(t, nil, 10)
	tok, _ := f.get(t, 0)
	builds := 0
	keep := func(want string) string {
		return tok.Keep(func(v any) bool { return v.(string) == want }, func() any { builds++; return want }).(string)
	}
	for range 2 {
		if keep("a") != "a" || builds != 1 {
			t.Errorf("built %d times for one shape, want 1", builds)
		}
	}
	for range 2 {
		if keep("b") != "b" || builds != 2 {
			t.Errorf("built %d times after the shape changed, want 2", builds)
		}
	}
	if keep("a") != "a" || builds != 3 {
		t.Errorf("the replaced value served again: built %d times, want 3", builds)
	}
}

// TestFarFutureExpIsCached: a JWT exp past the year 2262 (where UnixNano
// overflows) is taken for a year, and the token is cached.
func TestFarFutureExpIsCached(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{Answer: testidp.AnswerFarFutureExp})
	for range 5 {
		f.get(t, 0)
	}
	if n := f.idp.Requests(); n != 1 {
		t.Errorf("5 lookups made %d token requests, want 1", n)
	}
}

// TestRevokedSecretDropsTheToken: once the endpoint rejects a client's
// secret, its cached token is no longer served, whether a background
// refresh or a Check's own fetch learns it.
func TestRevokedSecretDropsTheToken(t *testing.T) {
	for _, tt := range []struct {
		name string
		at   time.Duration // when the revocation is learnt
	}{
		{"by a background refresh", 85 * time.Second},
		{"by a Check's own fetch", 95 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil, 100)
			f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second})
			start := f.clock.Now()
			f.get(t, 0)
			f.idp.AddClient("app0", testidp.Client{Secret: "rotated"}) // the old secret is revoked
			f.clock.Set(start, tt.at)
			deadline := time.Now().Add(10 * time.Second)
			for {
				tok, _, err := f.token(0)
				var ie *idp.Error
				if err != nil {
					if tok != nil || !errors.As(err, &ie) || ie.Kind != idp.KindRejected {
						t.Fatalf("after the revocation: %v, %v; want the rejection", tok, err)
					}
					break
				}
				if tt.at >= 90*time.Second || time.Now().After(deadline) {
					t.Fatal("the token was served after the endpoint revoked the secret")
				}
				time.Sleep(time.Millisecond) // the background refresh runs
			}
			if _, _, err := f.token(0); err == nil {
				t.Error("a later lookup was served")
			}
		})
	}
}

// TestCurrent is what lets a caller serve a token it kept without asking
// Token: true only while the memory tier still holds that very token and
// it is before its refresh, and false for good once the token left the
// tier, whatever the reason.
func TestCurrent(t *testing.T) {
	hit := func(f *fixture, i int) *Token {
		t.Helper()
		f.get(t, i)
		tok, src, err := f.token(i)
		if err != nil || src != FromMemory {
			t.Fatalf("second lookup of app%d: %v, %v", i, src, err)
		}
		return tok
	}
	t.Run("while it is held", func(t *testing.T) {
		f := newFixture(t, nil, 100)
		tok := hit(f, 0)
		for range 3 {
			if !f.cache.Current(tok) {
				t.Fatal("a token just served from memory is not current")
			}
		}
		if f.cache.Current(nil) {
			t.Error("no token is current")
		}
		f.cache.store.put(f.ep.Key(creds(0)), tok, f.clock.Now()) // put again, as it is
		if !f.cache.Current(tok) {
			t.Error("a token put again where it was is no longer current")
		}
	})
	t.Run("until its refresh is due", func(t *testing.T) {
		f := newFixture(t, nil, 100)
		f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second})
		start := f.clock.Now()
		tok := hit(f, 0)
		f.clock.Set(start, 79*time.Second)
		if !f.cache.Current(tok) {
			t.Fatal("not current before its refresh")
		}
		f.clock.Set(start, 80*time.Second)
		if f.cache.Current(tok) {
			t.Fatal("current once its refresh is due: Token must start it")
		}
		f.get(t, 0) // starts the refresh
		poll(t, func() bool { next, _ := f.get(t, 0); return next != tok })
		if f.cache.Current(tok) {
			t.Error("the refreshed token's predecessor is current")
		}
		f.clock.Set(start, 10*time.Second) // even with a clock that says otherwise
		if f.cache.Current(tok) {
			t.Error("a replaced token became current again")
		}
	})
	t.Run("purged", func(t *testing.T) {
		f := newFixture(t, nil, 100)
		tok, other := hit(f, 0), hit(f, 1)
		if _, err := f.cache.Purge(context.Background(), PurgeRequest{ClientID: "app0"}); err != nil {
			t.Fatal(err)
		}
		if f.cache.Current(tok) {
			t.Error("a purged token is current")
		}
		if !f.cache.Current(other) {
			t.Error("another client's token is no longer current")
		}
		if next, _ := f.get(t, 0); next == tok {
			t.Error("the purged token was served again")
		}
	})
	t.Run("revoked", func(t *testing.T) {
		f := newFixture(t, nil, 100)
		f.idp.SetBehavior(testidp.Behavior{Lifetime: 100 * time.Second})
		start := f.clock.Now()
		tok := hit(f, 0)
		f.idp.AddClient("app0", testidp.Client{Secret: "rotated"})
		f.clock.Set(start, 95*time.Second)
		if _, _, err := f.token(0); err == nil {
			t.Fatal("served after the secret was revoked")
		}
		f.clock.Set(start, 10*time.Second)
		if f.cache.Current(tok) {
			t.Error("a revoked token is current")
		}
	})
	t.Run("evicted", func(t *testing.T) {
		f := newFixture(t, nil, 4)
		tok := hit(f, 0)
		for i := 1; i < 40; i++ {
			f.clock.Add(2 * time.Second) // app0 is the least recently used
			f.get(t, i)
		}
		if f.cache.Current(tok) {
			t.Error("an evicted token is current: a purge could no longer reach it")
		}
	})
}
