package authz

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

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
