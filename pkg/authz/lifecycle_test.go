package authz

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
)

// TestRefreshAheadUnderLoad runs 14 seconds of steady load over 6-second
// tokens from an IdP that takes half a second to answer (a JWT's exp has
// whole seconds, so a "6-second" token may live only 5: its last 20% leaves
// a refresh about a second). Refresh-ahead must keep
// every Check after the first off the IdP: 3 to 5 token requests in all,
// and no Check as slow as the IdP. With two replicas sharing Redis, one
// replica refreshes for both.
func TestRefreshAheadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("14 seconds of load")
	}
	const (
		lifetime = 6 * time.Second
		latency  = 500 * time.Millisecond
		duration = 14 * time.Second
	)
	for _, tc := range []struct {
		name     string
		replicas int
	}{{"one replica", 1}, {"two replicas sharing Redis", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r *replicas
			if tc.replicas == 1 {
				r = startReplicas(t, 1, "", 1)
			} else {
				r = startReplicas(t, 2, "    endpoints: ["+redistest.Single(t).Addr+"]\n    timeoutMillis: 1000", 1)
			}
			r.idp.SetBehavior(testidp.Behavior{Lifetime: lifetime, Latency: latency})

			// The first Check of each replica is cold.
			for _, srv := range r.servers {
				if ok, why := allowed(srv, clientCheck(0)); !ok {
					t.Fatal(why)
				}
			}
			start := time.Now()
			var (
				mu      sync.Mutex
				slowest time.Duration
				misses  int
				checks  int
			)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := 0; time.Since(start) < duration; i++ {
						srv := r.servers[(g+i)%len(r.servers)]
						began := time.Now()
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						resp, err := srv.Check(ctx, clientCheck(0))
						cancel()
						took := time.Since(began)
						mu.Lock()
						checks++
						slowest = max(slowest, took)
						if err != nil || resp.GetOkResponse() == nil || resp.GetDynamicMetadata().GetFields()["token_cache"].GetStringValue() != "hit" {
							misses++
							t.Logf("not a hit at %v after %v: %v %v", time.Since(start), took, err, resp.GetDynamicMetadata())
						}
						mu.Unlock()
						time.Sleep(5 * time.Millisecond) // steady load, not a busy loop
					}
				})
			}
			wg.Wait()
			n := r.idp.Requests()
			t.Logf("%d checks in %v: %d token requests, slowest check %v", checks, duration, n, slowest)
			if n < 3 || n > 5 {
				t.Errorf("%d token requests, want 3 to 5", n)
			}
			if misses > 0 {
				t.Errorf("%d checks were not served from the cache", misses)
			}
			if slowest >= latency {
				t.Errorf("the slowest check took %v, as long as the IdP", slowest)
			}
		})
	}
}
