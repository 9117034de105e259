package builder_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

func TestMain(m *testing.M) {
	redis.SetLogger(tokencache.RedisLogger(zap.NewNop()))
	os.Exit(m.Run())
}

// soakYAML changes with each reload: the forwarded header's name (%[3]d),
// the claims expression (%[4]d), and now and then the Redis timeout
// (%[5]d), which takes a new pool and tier.
const soakYAML = `
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["%[2]s"], timeoutMillis: %[5]d}
policies:
  app:
    url: %[1]s
    forwardHeaders: {X-Group-%[3]d: grp}
    claims: Equals(` + "`grp`, `admin`" + `) || Equals(` + "`reload`, `%[4]d`" + `)
  gateway:
    url: %[1]s
    clientID: gw
    clientSecret: gw-s3cret
`

const soakClients = 16

func soakGateway() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": "gateway"},
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/"}},
	}}
}

func soakRequest(i int) *authv3.CheckRequest {
	auth := "Basic " + base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "client-%d:s3cret", i))
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": "app"},
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/", Headers: map[string]string{"authorization": auth}}},
	}}
}

// TestReloadSoak reloads the configuration hundreds of times under load:
// no check fails, no token is fetched again, goroutines and the heap stay
// flat once replaced parts are closed, hits cost what they cost before,
// and the last configuration is the one in force.
func TestReloadSoak(t *testing.T) {
	single := redistest.Single(t)
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("gw", testidp.Client{Secret: "gw-s3cret"})
	for i := range soakClients {
		idp.AddClient(fmt.Sprintf("client-%d", i), testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin"}})
	}
	load := func(n, timeout int) *config.Config {
		cfg, err := config.Parse(fmt.Appendf(nil, soakYAML, idp.TokenURL, single.Addr, n, n, timeout), "")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	srv, b := newBuilder(t, 50*time.Millisecond)
	if err := b.Apply(load(0, 1000)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(i int) (*authv3.CheckResponse, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return srv.Check(cctx, soakRequest(i))
	}
	for i := range soakClients { // every client's token, once
		if resp, err := check(i); err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("warm-up: %v %v", resp, err)
		}
	}
	fetched := idp.Requests()
	steady := func() (goroutines int, heap uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, retiring := b.Parts(); retiring > 0; _, retiring = b.Parts() {
			if time.Now().After(deadline) {
				t.Fatalf("%d replaced parts still open", retiring)
			}
			time.Sleep(10 * time.Millisecond)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapAlloc
	}
	hitLatency := func() time.Duration {
		var samples []time.Duration
		for i := range 2000 {
			start := time.Now()
			if _, err := check(i % soakClients); err != nil {
				t.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
		slices.Sort(samples)
		return samples[len(samples)/2]
	}
	goroutinesBefore, heapBefore := steady()
	latencyBefore := hitLatency()

	var failed, checks atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := check(i % soakClients)
				checks.Add(1)
				if err != nil || resp.GetOkResponse() == nil {
					failed.Add(1)
				}
			}
		})
	}
	const reloads = 300
	last := 0
	for n := 1; n <= reloads; n++ {
		if n%50 == 25 { // an invalid configuration between valid ones is refused
			if _, err := config.Parse([]byte("policies: {app: {url: 'ftp://nowhere'}}"), ""); err == nil {
				t.Fatal("an invalid configuration loaded")
			}
			continue
		}
		timeout := 1000
		if n%40 == 0 { // a Redis setting: a new pool and tier, the same tokens
			timeout = 1000 + n
		}
		if err := b.Apply(load(n, timeout)); err != nil {
			t.Fatalf("reload %d: %v", n, err)
		}
		last = n
	}
	close(stop)
	wg.Wait()

	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d checks failed during %d reloads", n, checks.Load(), reloads)
	}
	if n := idp.Requests(); n != fetched {
		t.Errorf("reloads that changed no token setting fetched %d tokens again", n-fetched)
	}
	goroutinesAfter, heapAfter := steady()
	if goroutinesAfter > goroutinesBefore+5 {
		t.Errorf("goroutines grew from %d to %d", goroutinesBefore, goroutinesAfter)
	}
	if heapAfter > heapBefore*3/2+2<<20 {
		t.Errorf("the heap grew from %d to %d bytes", heapBefore, heapAfter)
	}
	if latencyAfter := hitLatency(); latencyAfter > 2*latencyBefore+5*time.Microsecond {
		t.Errorf("a hit took %v before the reloads and %v after", latencyBefore, latencyAfter)
	}
	resp, err := check(0)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("x-group-%d", last)
	found := false
	for _, h := range resp.GetOkResponse().GetHeaders() {
		found = found || strings.EqualFold(h.GetHeader().GetKey(), want)
	}
	if !found {
		t.Errorf("the answer's headers %v lack %s of the last configuration", resp.GetOkResponse().GetHeaders(), want)
	}
	t.Logf("%d checks over %d reloads; goroutines %d → %d, heap %d → %d KiB, hit %v → %v",
		checks.Load(), reloads, goroutinesBefore, goroutinesAfter, heapBefore>>10, heapAfter>>10, latencyBefore, hitLatency())
}
