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
	c, err := idp.NewClient(idp.Options{URL: s.TokenURL, MaxRetries: 0})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		clock: clk, idp: s,
		cache: New(Options{MaxEntries: maxEntries, Now: clk.Now}),
		ep:    NewEndpoint(c, 5*time.Minute, nil),
	}
}

func creds(i int) idp.Credentials {
	return idp.Credentials{ID: fmt.Sprintf("app%d", i), Secret: secret.New("s3cret")}
}

func (f *fixture) get(t *testing.T, i int) (*Token, bool) {
	t.Helper()
	c := creds(i)
	tok, src, err := f.cache.Token(context.Background(), f.ep, f.ep.Key(c), c)
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
		wantServe  time.Duration // how long the token is served
		wantClaims bool
	}{
		{"expires_in", testidp.Behavior{Lifetime: 100 * time.Second}, 0, 100 * time.Second, 90 * time.Second, true},
		{"skew at most 30s", testidp.Behavior{Lifetime: time.Hour}, 0, time.Hour, time.Hour - 30*time.Second, true},
		{"JWT exp without expires_in", testidp.Behavior{Lifetime: 200 * time.Second, Answer: testidp.AnswerNoExpiresIn}, 0, 200 * time.Second, 180 * time.Second, true},
		{"JWT exp earlier than expires_in", testidp.Behavior{Lifetime: 100 * time.Second}, -40 * time.Second, 60 * time.Second, 54 * time.Second, true},
		{"default TTL", testidp.Behavior{Answer: testidp.AnswerOpaqueNoLifetime}, 0, 5 * time.Minute, 5*time.Minute - 30*time.Second, false},
		{"expires_in as a string", testidp.Behavior{Lifetime: 100 * time.Second, Answer: testidp.AnswerStringExpiresIn}, 0, 100 * time.Second, 90 * time.Second, true},
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
			if got := tok.Expiry.Sub(start); got != tt.wantExpiry {
				t.Errorf("expiry in %v, want %v", got, tt.wantExpiry)
			}
			if (tok.Claims != nil) != tt.wantClaims {
				t.Errorf("claims decoded: %v, want %v", tok.Claims != nil, tt.wantClaims)
			}
			f.clock.Add(tt.wantServe - time.Second)
			if again, hit := f.get(t, 0); !hit || again != tok {
				t.Errorf("a second before the end of serving: hit %v, same token %v", hit, again == tok)
			}
			f.clock.Add(time.Second)
			if again, hit := f.get(t, 0); hit || again == tok {
				t.Errorf("at the end of serving: hit %v, same token %v", hit, again == tok)
			}
			if n := f.idp.Requests(); n != 2 {
				t.Errorf("%d token requests, want 2", n)
			}
		})
	}
}

func TestAlreadyExpired(t *testing.T) {
	var f *fixture
	f = newFixture(t, func() time.Time { return f.clock.Now().Add(-2 * time.Hour) }, 100)
	f.idp.SetBehavior(testidp.Behavior{Answer: testidp.AnswerNoExpiresIn})
	c := creds(0)
	if _, _, err := f.cache.Token(context.Background(), f.ep, f.ep.Key(c), c); !errors.Is(err, ErrExpired) {
		t.Errorf("error %v, want ErrExpired", err)
	}
}

func TestFailuresAreNotCached(t *testing.T) {
	f := newFixture(t, nil, 100)
	f.idp.SetBehavior(testidp.Behavior{FailStatus: 503, FailFirst: 1})
	c := creds(0)
	if _, _, err := f.cache.Token(context.Background(), f.ep, f.ep.Key(c), c); err == nil {
		t.Fatal("no error from a failing endpoint")
	}
	if _, hit := f.get(t, 0); hit {
		t.Error("a failure was cached as a token")
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
	e1, e2 := NewEndpoint(c1, time.Minute, nil), NewEndpoint(c2, time.Minute, nil)
	k := e1.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")})
	for _, other := range []Key{
		e1.Key(idp.Credentials{ID: "a", Secret: secret.New("bc")}),
		e1.Key(idp.Credentials{ID: "ab", Secret: secret.New("d")}),
		e1.Key(idp.Credentials{ID: "ac", Secret: secret.New("c")}),
		e2.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")}),
	} {
		if other == k {
			t.Error("different requests share a key")
		}
	}
	if e1.Key(idp.Credentials{ID: "ab", Secret: secret.New("c")}) != k {
		t.Error("the key is not stable")
	}
}

func TestMemo(t *testing.T) {
	f := newFixture(t, nil, 10)
	tok, _ := f.get(t, 0)
	type owner struct{ int }
	a, b := &owner{1}, &owner{2}
	builds := 0
	build := func(v string) func() any { return func() any { builds++; return v } }
	if tok.Memo(a, build("a")) != "a" || tok.Memo(a, build("x")) != "a" || tok.Memo(b, build("b")) != "b" || builds != 2 {
		t.Errorf("memo built %d times", builds)
	}
}
