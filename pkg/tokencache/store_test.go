package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/secret"
)

// jwtLike is a token whose payload decodes to claims: {"sub":"app"}.
const jwtLike = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhcHAifQ.c2ln"

// topologies starts every Redis deployment the Redis tier supports and
// returns options for each. Starting them takes about six seconds.
func topologies(t *testing.T) map[string]RedisOptions {
	t.Helper()
	single := redistest.Single(t)
	acl := redistest.ACL(t)
	tlsServer, tlsFiles := redistest.TLSServer(t)
	cluster := redistest.StartCluster(t)
	sentinels := redistest.StartSentinels(t)
	return map[string]RedisOptions{
		"single":   {Mode: RedisSingle, Endpoints: []string{single.Addr}},
		"acl":      {Mode: RedisSingle, Endpoints: []string{acl.Addr}, Username: redistest.ACLUser, Password: secret.New(redistest.ACLPassword)},
		"tls":      {Mode: RedisSingle, Endpoints: []string{tlsServer.Addr}, TLS: tlsFiles.ClientConfig(t)},
		"cluster":  {Mode: RedisCluster, Endpoints: cluster.Addrs()},
		"sentinel": {Mode: RedisSentinel, Endpoints: sentinels.Addrs(), MasterSet: redistest.MasterSet},
	}
}

// TestSharedContract runs one contract against the Redis tier in every
// topology.
func TestSharedContract(t *testing.T) {
	for name, o := range topologies(t) {
		o.Timeout = time.Second // generous: the contract is about behaviour, not speed
		t.Run(name, func(t *testing.T) {
			testContract(t, func(t *testing.T, prefix string, key []byte) *Shared {
				r, err := NewRedis(o, zap.NewNop(), metrics.Nop())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				s, err := newShared(r, prefix, key)
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}

func testKey(s string) Key { return Key{id: sha256.Sum256([]byte(s)), client: clientHash(s)} }

func newTestToken(value string, lifetime time.Duration) *Token {
	now := time.Now().Truncate(time.Millisecond)
	return &Token{AccessToken: secret.New(value), fetched: now.UnixNano(), expiry: now.Add(lifetime).UnixNano()}
}

func TestMain(m *testing.M) {
	redis.SetLogger(RedisLogger(zap.NewNop()))
	os.Exit(m.Run())
}

// testEncryptionKey is the Redis tier's key in tests.
var testEncryptionKey = []byte("0123456789abcdef0123456789abcdef")

func testContract(t *testing.T, newStore func(t *testing.T, prefix string, key []byte) *Shared) {
	ctx := context.Background()
	prefix := "test:" + strings.ReplaceAll(t.Name(), "/", ":") + ":"
	s := newStore(t, prefix, testEncryptionKey)

	t.Run("miss", func(t *testing.T) {
		if tok, err := s.Get(ctx, testKey("missing")); tok != nil || err != nil {
			t.Errorf("Get = %v, %v; want nil, nil", tok, err)
		}
	})
	t.Run("set and get", func(t *testing.T) {
		want := newTestToken(jwtLike, time.Hour)
		if err := s.Set(ctx, testKey("a"), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, testKey("a"))
		if err != nil || got == nil {
			t.Fatalf("Get = %v, %v", got, err)
		}
		if got.AccessToken.Reveal() != jwtLike || got.Type() != "Bearer" || got.expiry != want.expiry || got.fetched != want.fetched {
			t.Errorf("got %+v, want %+v", got, want)
		}
		if got.Claims() == nil {
			t.Error("the stored JWT does not decode")
		}
	})
	t.Run("overwrite", func(t *testing.T) {
		_ = s.Set(ctx, testKey("b"), newTestToken("first", time.Hour))
		_ = s.Set(ctx, testKey("b"), newTestToken("second", time.Hour))
		if got, _ := s.Get(ctx, testKey("b")); got == nil || got.AccessToken.Reveal() != "second" {
			t.Errorf("got %v after an overwrite", got)
		}
	})
	t.Run("gone at expiry", func(t *testing.T) {
		tok := newTestToken("short", time.Hour)
		tok.fetched = time.Now().Add(-time.Hour).Truncate(time.Millisecond).UnixNano()
		tok.expiry = time.Now().Add(200 * time.Millisecond).Truncate(time.Millisecond).UnixNano()
		_ = s.Set(ctx, testKey("c"), tok)
		if got, err := s.Get(ctx, testKey("c")); got == nil || err != nil {
			t.Fatalf("a token 200ms from expiry is not returned: %v, %v", got, err)
		}
		poll(t, func() bool {
			got, err := s.Get(ctx, testKey("c"))
			return got == nil && err == nil
		})
	})
	t.Run("lock", func(t *testing.T) {
		unlock, err := s.Lock(ctx, testKey("d"), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, testKey("d"), time.Minute); !errors.Is(err, ErrLocked) {
			t.Errorf("second Lock: %v, want ErrLocked", err)
		}
		unlock()
		again, err := s.Lock(ctx, testKey("d"), time.Minute)
		if err != nil {
			t.Fatalf("Lock after unlock: %v", err)
		}
		again()
	})
	t.Run("lock expires", func(t *testing.T) {
		if _, err := s.Lock(ctx, testKey("e"), 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		poll(t, func() bool {
			unlock, err := s.Lock(ctx, testKey("e"), time.Minute)
			if err == nil {
				unlock()
			}
			return err == nil
		})
	})
	t.Run("prefixes keep tiers apart", func(t *testing.T) {
		other := newStore(t, prefix+"other:", testEncryptionKey)
		_ = s.Set(ctx, testKey("f"), newTestToken("mine", time.Hour))
		if got, _ := other.Get(ctx, testKey("f")); got != nil {
			t.Error("a tier read another prefix's value")
		}
	})
	t.Run("encryption", func(t *testing.T) {
		key2 := append([]byte(nil), testEncryptionKey...)
		key2[0] ^= 1
		other := newStore(t, prefix, key2)
		_ = s.Set(ctx, testKey("g"), newTestToken(jwtLike, time.Hour))
		if got, err := other.Get(ctx, testKey("g")); got != nil || err != nil {
			t.Errorf("another key read the value: %v, %v", got, err)
		}
		sh := s
		raw := rawGet(t, sh, testKey("g"))
		if strings.Contains(raw, jwtLike) || strings.Contains(raw, "eyJ") || raw[0] != formatSealed {
			t.Errorf("sealed value shows the token: %q", raw)
		}
		// A value sealed for one key does not open under another key name,
		// nor with a byte changed.
		if err := sh.redis.client.Set(ctx, sh.valueKey(testKey("h")), raw, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, testKey("h")); got != nil {
			t.Error("a value moved to another key was accepted")
		}
		changed := []byte(raw)
		changed[len(changed)-1] ^= 1
		if err := sh.redis.client.Set(ctx, sh.valueKey(testKey("g")), changed, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, testKey("g")); got != nil {
			t.Error("a changed value was accepted")
		}
		// Key names hold no hash a guessed client id or secret could be
		// checked against: an HMAC under a key derived from the encryption key.
		k := testKey("g")
		name, lock := sh.valueKey(k), sh.lockKey(k)
		for _, part := range []string{hex.EncodeToString(k.id[:]), hex.EncodeToString(k.client[:]), hex.EncodeToString(k.endpoint[:])} {
			if strings.Contains(name, part) || strings.Contains(lock, part) {
				t.Errorf("key names %q and %q show the hash %s", name, lock, part)
			}
		}
		if name == other.valueKey(k) {
			t.Errorf("key name %q is the same under another encryption key", name)
		}
	})
	t.Run("a purged value written back is refused", func(t *testing.T) {
		sh := s
		k := testKey("replay")
		_ = s.Set(ctx, k, newTestToken(jwtLike, time.Hour))
		saved := rawGet(t, sh, k)
		n, err := sh.purge(ctx, purgeSelector{Client: hex.EncodeToString(k.client[:])})
		if err != nil || n != 1 {
			t.Fatalf("purge: %d, %v", n, err)
		}
		if err := sh.redis.client.Set(ctx, sh.valueKey(k), saved, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, k); got != nil || err != nil {
			t.Errorf("the value from before the purge: %v, %v; want a miss", got, err)
		}
		// Another replica, which never saw the purge, learns of it from Redis.
		fresh := newStore(t, prefix, testEncryptionKey)
		if got, err := fresh.Get(ctx, k); got != nil || err != nil {
			t.Errorf("another replica read the value from before the purge: %v, %v", got, err)
		}
		// A value written after the purge reads back.
		_ = s.Set(ctx, k, newTestToken(jwtLike, time.Hour))
		if got, _ := fresh.Get(ctx, k); got == nil {
			t.Error("a value written after the purge is not read")
		}
	})
	t.Run("a replica learns of a purge from its announcement, else from the counter", func(t *testing.T) {
		k := testKey("announced")
		b := newStore(t, prefix, testEncryptionKey)
		clock := time.Now()
		b.redis.now = func() time.Time { return clock } // frozen: no recheck of the counter
		b.sub = b.subscribe(func(PurgeSignal) {}, zap.NewNop())
		t.Cleanup(func() { b.Close() })
		replay := func() string {
			_ = s.Set(ctx, k, newTestToken(jwtLike, time.Hour))
			if got, err := b.Get(ctx, k); got == nil || err != nil {
				t.Fatalf("before the purge: %v, %v", got, err)
			}
			saved := rawGet(t, s, k)
			if _, err := s.purge(ctx, purgeSelector{}); err != nil {
				t.Fatal(err)
			}
			if err := s.redis.client.Set(ctx, s.valueKey(k), saved, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			return saved
		}
		replay()
		poll(t, func() bool { return b.generation.Load() == s.generation.Load() })
		if got, err := b.Get(ctx, k); got != nil || err != nil {
			t.Errorf("after an announced purge: %v, %v; want a miss", got, err)
		}
		// The announcement is lost (pub/sub delivers at most once): the
		// replica reads the counter again within generationRecheck.
		b.Close()
		b.sub = nil
		replay()
		clock = clock.Add(generationRecheck)
		if got, err := b.Get(ctx, k); got != nil || err != nil {
			t.Errorf("after an unannounced purge and generationRecheck: %v, %v; want a miss", got, err)
		}
		if b.generation.Load() != s.generation.Load() {
			t.Errorf("generation %d, want %d", b.generation.Load(), s.generation.Load())
		}
	})
	t.Run("a stored expiry past the token's exp is clamped", func(t *testing.T) {
		tok := newTestToken(jwtExpiring(time.Now().Add(time.Minute)), time.Hour)
		_ = s.Set(ctx, testKey("late"), tok)
		got, _ := s.Get(ctx, testKey("late"))
		if got == nil || got.Expiry().After(time.Now().Add(time.Minute+time.Second)) {
			t.Errorf("expiry %v, want the JWT's exp, a minute away", got)
		}
	})
	t.Run("unreadable values are misses", func(t *testing.T) {
		sh := s
		for i, v := range []string{"", "\x09garbage", "\x01short", "\x02an-older-format", "\x03short"} {
			k := testKey("bad" + string(rune('0'+i)))
			if err := sh.redis.client.Set(ctx, sh.valueKey(k), v, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, k); got != nil || err != nil {
				t.Errorf("value %q: %v, %v; want a miss", v, got, err)
			}
			if err := s.Set(ctx, k, newTestToken("fresh", time.Hour)); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.Get(ctx, k); got == nil || got.AccessToken.Reveal() != "fresh" {
				t.Errorf("value %q was not overwritten", v)
			}
		}
	})
	t.Run("Redis TTL is the token's remaining lifetime", func(t *testing.T) {
		sh := s
		_ = s.Set(ctx, testKey("i"), newTestToken("ttl", 90*time.Second))
		ttl, err := sh.redis.client.PTTL(ctx, sh.valueKey(testKey("i"))).Result()
		if err != nil || ttl <= 80*time.Second || ttl > 90*time.Second {
			t.Errorf("PTTL = %v, %v; want just under 90s", ttl, err)
		}
	})
}

// jwtExpiring is an unsigned JWT whose exp is at.
func jwtExpiring(at time.Time) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"app","exp":%d}`, at.Unix())))
	return "eyJhbGciOiJub25lIn0." + payload + ".c2ln"
}

func rawGet(t *testing.T, s *Shared, k Key) string {
	t.Helper()
	v, err := s.redis.client.Get(context.Background(), s.valueKey(k)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return v
}

// poll waits for cond, failing the test after ten seconds.
func poll(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRedisTokensAreVerified puts a forged token into Redis under the key a
// verifying endpoint uses: the cache must refuse it and fetch a real one.
func TestRedisTokensAreVerified(t *testing.T) {
	server := redistest.Single(t)
	s, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddClient("app", testidp.Client{Secret: "s3cret"})
	client, err := idp.NewClient(idp.Options{URL: s.TokenURL})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := idp.NewVerifier(idp.VerifierOptions{JWKSURL: s.JWKSURL})
	if err != nil {
		t.Fatal(err)
	}
	defer verifier.Close()
	cache := New(Options{MaxEntries: 10})
	defer cache.Close()
	shared, err := newTestShared(t, server.Addr, "verify:")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndpoint(EndpointOptions{Client: client, Shared: shared, Verifier: verifier})
	creds := idp.Credentials{ID: "app", Secret: secret.New("s3cret")}
	key := e.Key(creds)
	forged := newTestToken(jwtLike, time.Hour) // an unsigned JWT
	if err := shared.Set(context.Background(), key, forged); err != nil {
		t.Fatal(err)
	}
	tok, src, err := cache.Token(context.Background(), e, key, creds)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken.Reveal() == jwtLike || src != FromEndpoint || s.Requests() != 1 {
		t.Errorf("got the forged token: %v from %v, %d token requests", tok.AccessToken.Reveal() == jwtLike, src, s.Requests())
	}
	if again, _ := shared.Get(context.Background(), key); again == nil || again.AccessToken.Reveal() == jwtLike {
		t.Error("the forged value was not overwritten")
	}
}

// TestAbandonedLock leaves the fleet-wide lock held by a replica that never
// writes its token: another replica must fetch the token itself rather
// than fail its callers until the lock expires.
func TestAbandonedLock(t *testing.T) {
	server := redistest.Single(t)
	s, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddClient("app", testidp.Client{Secret: "s3cret"})
	client, err := idp.NewClient(idp.Options{URL: s.TokenURL, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cache := New(Options{MaxEntries: 10})
	defer cache.Close()
	shared, err := newTestShared(t, server.Addr, "abandoned:")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndpoint(EndpointOptions{Client: client, Shared: shared})
	creds := idp.Credentials{ID: "app", Secret: secret.New("s3cret")}
	key := e.Key(creds)
	if _, err := shared.Lock(context.Background(), key, time.Minute); err != nil { // held for a minute, never released
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, src, err := cache.Token(ctx, e, key, creds)
	if err != nil || tok == nil || src != FromEndpoint {
		t.Fatalf("behind an abandoned lock: %v, %v", src, err)
	}
}

// TestRedisTokenOfAnotherClient stores, under one client's key, a token
// whose JWT names another client (as a replica with the encryption key, or
// a mix-up, could): the cache must refuse it and fetch the client's own.
func TestRedisTokenOfAnotherClient(t *testing.T) {
	server := redistest.Single(t)
	s, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddClient("viewer", testidp.Client{Secret: "s3cret"})
	client, err := idp.NewClient(idp.Options{URL: s.TokenURL})
	if err != nil {
		t.Fatal(err)
	}
	cache := New(Options{MaxEntries: 10})
	defer cache.Close()
	shared, err := newTestShared(t, server.Addr, "swap:")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEndpoint(EndpointOptions{Client: client, Shared: shared})
	creds := idp.Credentials{ID: "viewer", Secret: secret.New("s3cret")}
	key := e.Key(creds)
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"client_id":"admin-app","grp":"admin"}`))
	swapped := newTestToken("eyJhbGciOiJub25lIn0."+payload+".c2ln", time.Hour)
	if err := shared.Set(context.Background(), key, swapped); err != nil {
		t.Fatal(err)
	}
	tok, src, err := cache.Token(context.Background(), e, key, creds)
	if err != nil {
		t.Fatal(err)
	}
	if client, _ := tok.Claims().Client(); client != "viewer" || src != FromEndpoint {
		t.Errorf("got a token for %q from %v, want the viewer's own from the endpoint", client, src)
	}
}

// newTestShared is a Redis tier on a single server, closed with the test.
func newTestShared(t *testing.T, addr, prefix string) (*Shared, error) {
	t.Helper()
	r, err := NewRedis(RedisOptions{Mode: RedisSingle, Endpoints: []string{addr}, Timeout: time.Second}, zap.NewNop(), metrics.Nop())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { r.Close() })
	return newShared(r, prefix, testEncryptionKey)
}

// TestRedisCallsEndAtTheTimeout: a Redis that stops answering on an open
// connection costs a read no more than the timeout, with or without a
// deadline of the caller's, and marks Redis down.
func TestRedisCallsEndAtTheTimeout(t *testing.T) {
	server := redistest.Single(t)
	const timeout = 100 * time.Millisecond
	r, err := NewRedis(RedisOptions{Mode: RedisSingle, Endpoints: []string{server.Addr}, Timeout: timeout}, zap.NewNop(), metrics.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	s, err := newShared(r, "timeout:", testEncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := testKey("frozen")
	if err := s.Set(ctx, k, newTestToken(jwtLike, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, k); got == nil || err != nil {
		t.Fatalf("Get before the freeze: %v, %v", got, err)
	}
	server.Freeze()
	late, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, c := range []context.Context{ctx, late} {
		start := time.Now()
		got, err := s.Get(c, k)
		// Generous against a busy machine, yet far from the minute a
		// deadline taken from the caller would wait.
		if took := time.Since(start); got != nil || err == nil || took > 20*timeout {
			t.Errorf("Get from a frozen Redis: %v, %v after %v; want an error within the timeout", got, err, took)
		}
		r.down.Store(false) // try again rather than skip
	}
	if r.Failures() < 2 {
		t.Errorf("failures %d, want 2", r.Failures())
	}
}

// TestRedisLookupAllocations: a Redis-tier hit allocates at most ten
// times — go-redis's own six (its command, arguments, reply and the
// health check of the pooled connection), the call's context and key
// name, the plaintext, the Token — so that a change that adds to the
// path fails here, not in a profile.
func TestRedisLookupAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own: make test runs this test without it")
	}
	server := redistest.Single(t)
	r, err := NewRedis(RedisOptions{Mode: RedisSingle, Endpoints: []string{server.Addr}, Timeout: time.Second}, zap.NewNop(), metrics.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	s, err := newShared(r, "allocs:", testEncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := Key{id: sha256.Sum256([]byte("allocs")), client: clientHash("orders-app")}
	payload := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"client_id":"orders-app","exp":%d,"scope":"read write"}`, time.Now().Add(time.Hour).Unix())))
	if err := s.Set(ctx, k, newTestToken("eyJhbGciOiJub25lIn0."+payload+".c2ln", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() {
		if got, err := s.Get(ctx, k); got == nil || err != nil {
			t.Fatalf("Get: %v, %v", got, err)
		}
	}); n > 10 {
		t.Errorf("a Redis-tier hit allocates %v times, want at most 10", n)
	}
}
