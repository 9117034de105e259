package tokencache

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/secret"
)

// BenchmarkTierGet compares a hit in the in-process tier with a hit in the
// Redis tier alone (a loopback round trip and decoding), plain and sealed.
func BenchmarkTierGet(b *testing.B) {
	ctx := context.Background()
	key := testKey("bench")
	tok := newTestToken(jwtLike, time.Hour)

	b.Run("memory", func(b *testing.B) {
		s := newMemoryTier(1000)
		now := time.Now()
		s.put(key, tok, now)
		b.ReportAllocs()
		for b.Loop() {
			if t := s.get(key, now); t == nil {
				b.Fatal("miss")
			}
		}
	})
	server := redistest.Single(b)
	for _, bc := range []struct {
		name string
		key  []byte
	}{{"redis", make([]byte, 32)}} {
		b.Run(bc.name, func(b *testing.B) {
			r, err := NewRedis(RedisOptions{Mode: RedisSingle, Endpoints: []string{server.Addr}, Timeout: time.Second}, zap.NewNop(), metrics.Nop())
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			s, err := newShared(r, "bench:", bc.key)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Set(ctx, key, tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if t, err := s.Get(ctx, key); t == nil || err != nil {
					b.Fatal("miss", err)
				}
			}
		})
	}
}

// BenchmarkCacheHit is Cache.Token served by the in-process tier.
func BenchmarkCacheHit(b *testing.B) {
	c, e, key, creds := cachedHit(b, EndpointOptions{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, src, _ := c.Token(ctx, e, key, creds); src != FromMemory {
			b.Fatal("not a memory hit")
		}
	}
}

// BenchmarkCacheHitWhileTheGateIsBusy is a cache hit while the endpoint's
// gate — its queue and failure budgets — is locked the whole time, as by a
// flood of token requests: a hit takes none of their locks (it would never
// finish), and costs what BenchmarkCacheHit does.
func BenchmarkCacheHitWhileTheGateIsBusy(b *testing.B) {
	c, e, key, creds := cachedHit(b, EndpointOptions{MaxRejections: 5, RejectionWindow: time.Minute})
	ctx := context.Background()
	g := c.gate(e)
	g.mu.Lock()
	defer g.mu.Unlock()
	c.mu.Lock() // the gates' map too
	defer c.mu.Unlock()
	c.flights.mu.Lock()
	defer c.flights.mu.Unlock()
	b.ReportAllocs()
	for b.Loop() {
		if _, src, _ := c.Token(ctx, e, key, creds); src != FromMemory {
			b.Fatal("not a memory hit")
		}
	}
}

// cachedHit returns a cache holding a token for a client of a test IdP at
// an endpoint of o (its client and default TTL set here), ready for hits.
func cachedHit(b *testing.B, o EndpointOptions) (*Cache, *Endpoint, Key, idp.Credentials) {
	b.Helper()
	s, err := testidp.New(testidp.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	s.AddClient("app", testidp.Client{Secret: "s3cret"})
	o.Client, err = idp.NewClient(idp.Options{URL: s.TokenURL})
	if err != nil {
		b.Fatal(err)
	}
	o.DefaultTTL = time.Minute
	c := New(Options{MaxEntries: 1000})
	b.Cleanup(func() { c.Close() })
	e := NewEndpoint(o)
	creds := idp.Credentials{ID: "app", Secret: secret.New("s3cret")}
	key := e.Key(creds)
	if _, _, err := c.Token(context.Background(), e, key, creds); err != nil {
		b.Fatal(err)
	}
	return c, e, key, creds
}
