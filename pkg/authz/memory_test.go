package authz

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// maxLiveBytesPerClient is twice what this test measured when it was
// written (1,730 bytes of live heap per client, a 767-byte token among
// them): it fails loudly when a change doubles it. make bench measures
// resident memory, the figure users see.
const maxLiveBytesPerClient = 2 * 1730

// TestMemoryPerCachedClient caches 5,000 application-mode clients, each
// with a ~770-byte JWT, a claims expression, a forwarded claim and a
// username, and measures the live heap they hold.
func TestMemoryPerCachedClient(t *testing.T) {
	if testing.Short() {
		t.Skip("caches 5,000 clients")
	}
	idp, err := testidp.New(testidp.Options{FastSigning: true, NoLog: true, AnyClient: &testidp.Client{Secret: "s3cret",
		Claims: map[string]any{"grp": "admin", "scope": strings.Repeat("orders.read ", 30)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
store: {maxEntries: 100000}
policies:
  app:
    url: %s
    forwardHeaders: {X-Group: grp}
    claims: Equals(`+"`grp`, `admin`"+`)
    usernameClaim: sub
`, idp.TokenURL)), "")
	if err != nil {
		t.Fatal(err)
	}
	cache := tokencache.New(tokencache.Options{MaxEntries: 100000})
	defer cache.Close()
	srv, _ := serve(t, cfg, cache, Options{Tokens: cache, Logger: zap.NewNop()})
	check := func(i int) {
		req := checkRequest("app", "api.example.com", "/orders", map[string]string{"authorization": basic(fmt.Sprintf("client-%d", i), "s3cret")})
		if resp, err := srv.check(context.Background(), req); err != nil || resp == nil {
			t.Fatal(err)
		}
	}
	check(0) // what the process holds once: compiled policy, warmed paths
	const n = 5000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 1; i <= n; i++ {
		check(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perClient := int64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d bytes of live heap per cached client", perClient)
	if perClient > maxLiveBytesPerClient {
		t.Errorf("a cached client holds %d bytes of live heap, more than twice the %d it held when last measured", perClient, maxLiveBytesPerClient/2)
	}
	if cache.Len() != n+1 {
		t.Errorf("%d tokens cached, want %d", cache.Len(), n+1)
	}
}

// maxLiveBytesPerExchange bounds what a cached exchanged token holds
// beyond the token itself: the 2 KB (the caller's ~800-byte token,
// remembered with its key, is within it).
const maxLiveBytesPerExchange = 2048

// TestMemoryPerCachedExchange caches 2,000 token exchanges, each for a
// caller's ~800-byte token, with a claims expression, a forwarded claim and
// a username, and checks the live heap each holds beyond the exchanged
// token's own bytes; make bench reports the figure
// (BenchmarkMemoryPerCachedExchange).
func TestMemoryPerCachedExchange(t *testing.T) {
	if testing.Short() {
		t.Skip("caches 2,000 exchanges")
	}
	per, token, beyond, subject := exchangeMemory(t, 2000)
	t.Logf("%d bytes of live heap per cached exchange: the %d-byte exchanged token and %d beyond it (the caller's %d-byte token among them)",
		per, token, beyond, subject)
	if beyond > maxLiveBytesPerExchange {
		t.Errorf("a cached exchange holds %d bytes beyond its token, more than %d", beyond, maxLiveBytesPerExchange)
	}
}

// BenchmarkMemoryPerCachedExchange reports what TestMemoryPerCachedExchange
// checks, as B/exchange beyond the exchanged token.
func BenchmarkMemoryPerCachedExchange(b *testing.B) {
	var beyond int64
	for b.Loop() {
		_, _, beyond, _ = exchangeMemory(b, 2000)
	}
	b.ReportMetric(float64(beyond), "B/exchange")
}

// exchangeMemory caches n exchanges and returns the live heap per cached
// exchange, the exchanged token's bytes, the rest, and the caller's token's
// length.
func exchangeMemory(tb testing.TB, n int) (per, token, beyond int64, subject int) {
	tb.Helper()
	idp, err := testidp.New(testidp.Options{FastSigning: true, NoLog: true, AnyClient: &testidp.Client{Secret: "s3cret",
		Claims: map[string]any{"grp": "admin", "scope": strings.Repeat("orders.read ", 30)}}})
	if err != nil {
		tb.Fatal(err)
	}
	defer idp.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
store: {maxEntries: 100000}
policies:
  exchange:
    url: %s
    grant: token_exchange
    clientID: gateway
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp}
    claims: Equals(`+"`grp`, `admin`"+`)
    usernameClaim: sub
`, idp.TokenURL)), "")
	if err != nil {
		tb.Fatal(err)
	}
	cache := tokencache.New(tokencache.Options{MaxEntries: 100000})
	defer cache.Close()
	srv, _ := serve(tb, cfg, cache, Options{Tokens: cache, Logger: zap.NewNop()})
	subjects := make([]string, n+1)
	for i := range subjects {
		subjects[i] = idp.Subject(fmt.Sprintf("user-%06d", i), []string{"https://gateway.example.com"}, time.Now().Add(time.Hour),
			map[string]any{"scope": "openid profile orders.read orders.write", "azp": "web-frontend", "sid": strings.Repeat("s", 36)})
	}
	var tokenBytes int64
	check := func(i int) {
		req := checkRequest("exchange", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + subjects[i]})
		resp, err := srv.check(context.Background(), req)
		if err != nil || resp == nil {
			tb.Fatal(err)
		}
		r := read(tb, resp.(*authv3.CheckResponse))
		if r.status != 200 {
			tb.Fatalf("exchange %d: %d %v", i, r.status, r.body)
		}
		tokenBytes += int64(len(r.headers["authorization"]) - len("Bearer "))
	}
	check(0)
	tokenBytes = 0
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 1; i <= n; i++ {
		check(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per = int64(after.HeapAlloc-before.HeapAlloc) / int64(n)
	token = tokenBytes / int64(n)
	return per, token, per - token, len(subjects[1])
}
