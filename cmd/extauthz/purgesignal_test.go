package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
)

// TestPurgeSignalsCannotBeForged attacks two replicas of the built binary
// as anyone who can PUBLISH and SET on their Redis can: a forged purge
// announcement, a real one replayed, and a purged token written back. The
// forged and replayed announcements are refused, logged and counted and
// wipe no memory; the token written back is not served; a real purge still
// reaches the other replica at once.
func TestPurgeSignalsCannotBeForged(t *testing.T) {
	rs := redistest.Single(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	idp := newGuardIdP(t, testidp.Options{})
	const id, secret = "orders-app", "s3cret"
	idp.AddClient(id, testidp.Client{Secret: secret})
	yaml := strings.Replace(guardRedis, "REDIS", rs.Addr, 1)
	a := startGuard(t, idp, yaml, nil)
	b := startGuard(t, idp, yaml, nil)
	const channel = "extauthz:purge"
	waitUntil(t, "both replicas subscribed", func() bool { return rdb.PubSubNumSub(ctx, channel).Val()[channel] == 2 })
	spy := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { spy.Close() })
	if _, err := spy.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	memoryHits := func(g *guard) float64 {
		return metric(t, g.proc.AdminAddress, `extauthz_cache_lookups_total{result="hit",tier="memory"}`)
	}
	refused := func(g *guard, reason string) float64 {
		return metric(t, g.proc.AdminAddress, `extauthz_purge_signals_refused_total{reason="`+reason+`"}`)
	}
	// stillInMemory: the next Check at g is a memory hit, and the IdP is not asked.
	stillInMemory := func(what string) {
		t.Helper()
		for name, g := range map[string]*guard{"a": a, "b": b} {
			before, asked := memoryHits(g), idp.Requests()
			if r := g.mustCheck("app", id, secret); r.status != 200 || memoryHits(g) != before+1 || idp.Requests() != asked {
				t.Errorf("%s: replica %s answered %v, memory hits %v → %v, IdP asked %d times: its memory was wiped",
					what, name, r, before, memoryHits(g), idp.Requests()-asked)
			}
		}
	}
	for _, g := range []*guard{a, b, a, b} { // fetched by a, read from Redis by b, then in both memories
		if r := g.mustCheck("app", id, secret); r.status != 200 {
			t.Fatalf("warming up: %v", r)
		}
	}
	tokens := func() []string {
		var out []string
		for _, k := range redisKeys(t, rdb, "extauthz:*") {
			if strings.Count(strings.TrimPrefix(k, "extauthz:"), ":") == 2 {
				out = append(out, k)
			}
		}
		return out
	}
	keys := tokens()
	if len(keys) != 1 {
		t.Fatalf("Redis holds %d tokens, want 1", len(keys))
	}
	saved := rdb.Get(ctx, keys[0]).Val()

	// Forged: the announcement an attacker could write before, and a
	// forged counter.
	if err := rdb.Publish(ctx, channel, `{"generation":1000000}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "extauthz:purge-generation", "1000000", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*guard{a, b} {
		waitUntil(t, "the forged announcement counted", func() bool { return refused(g, "forged") >= 1 })
		if !g.proc.WaitLog("purge signal refused", 5*time.Second) {
			t.Errorf("no log line for the forged announcement:\n%s", g.proc.Logs())
		}
	}
	stillInMemory("after a forged announcement")

	// A real purge at a reaches b at once, and drops the token from Redis.
	a.purge("app", id)
	var captured *redis.Message
	for captured == nil || !strings.Contains(captured.Payload, `"tag"`) { // past the forged one
		var err error
		if captured, err = spy.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Written back, the purged token is not served by b (which knows of
	// the purge from the announcement): it asks the IdP.
	if err := rdb.Set(ctx, keys[0], saved, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	asked := idp.Requests()
	if r := b.mustCheck("app", id, secret); r.status != 200 || r.cache != "miss" || idp.Requests() != asked+1 {
		t.Errorf("the purged token written back: %v, IdP asked %d times; want a miss and a new token", r, idp.Requests()-asked)
	}
	if r := a.mustCheck("app", id, secret); r.status != 200 {
		t.Fatalf("a after the purge: %v", r)
	}

	// Replayed: the real announcement again.
	if err := rdb.Publish(ctx, channel, captured.Payload).Err(); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*guard{a, b} {
		waitUntil(t, "the replay counted", func() bool { return refused(g, "replayed") == 1 })
	}
	stillInMemory("after a replayed announcement")
}
