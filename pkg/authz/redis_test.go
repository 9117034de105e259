package authz

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/builder"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

func TestMain(m *testing.M) {
	redis.SetLogger(tokencache.RedisLogger(zap.NewNop()))
	os.Exit(m.Run())
}

// replicas are extauthz servers that share a Redis tier, each with its own
// in-process tier, as replicas of one deployment are.
type replicas struct {
	idp      *testidp.Server
	servers  []*Server
	builders []*builder.Builder
	logs     []*observer.ObservedLogs
}

const replicaYAML = `
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis:
%s
policies:
  app:
    url: %s
    forwardHeaders: {X-Group: grp}
    claims: Equals(` + "`grp`, `admin`" + `)
  exchange:
    url: %[2]s
    grant: token_exchange
    clientID: client-0
    clientSecret: s3cret
`

func startReplicas(t *testing.T, n int, redisYAML string, clients int) *replicas {
	t.Helper()
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	for i := range clients {
		idp.AddClient(fmt.Sprintf("client-%d", i), testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin"}})
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(replicaYAML, redisYAML, idp.TokenURL)), "")
	if err != nil {
		t.Fatal(err)
	}
	r := &replicas{idp: idp}
	for range n {
		core, logs := observer.New(zap.InfoLevel)
		cache := tokencache.New(tokencache.Options{MaxEntries: 10_000, Logger: zap.New(core)})
		t.Cleanup(func() { cache.Close() })
		srv, b := serve(t, cfg, cache, Options{Tokens: cache, Logger: zap.New(core)})
		r.builders = append(r.builders, b)
		r.servers = append(r.servers, srv)
		r.logs = append(r.logs, logs)
	}
	return r
}

func clientCheck(i int) *authv3.CheckRequest {
	return checkRequest("app", "h", "/", map[string]string{"authorization": basic(fmt.Sprintf("client-%d", i), "s3cret")})
}

// checkTimeout is the deadline of every Check in these tests. Tests of a
// slow Redis shorten it to Envoy's default, 200 ms.
var checkTimeout = 5 * time.Second

// allowed runs a Check and reports whether it was allowed.
func allowed(srv *Server, req *authv3.CheckRequest) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	resp, err := srv.Check(ctx, req)
	if err != nil {
		return false, err.Error()
	}
	if resp.GetOkResponse() == nil {
		return false, resp.GetDeniedResponse().GetBody()
	}
	return true, resp.GetDynamicMetadata().GetFields()["token_cache"].GetStringValue()
}

func TestTwoReplicasShareOneTokenRequest(t *testing.T) {
	single := redistest.Single(t)
	// The race detector can make the first dials of a cold pool slower than
	// the default 50 ms, and a Redis call that times out means fetching
	// without the fleet-wide lock: this test is about the lock, so it
	// gives Redis time.
	r := startReplicas(t, 2, "    endpoints: ["+single.Addr+"]\n    timeoutMillis: 2000", 1)
	r.idp.SetBehavior(testidp.Behavior{Latency: 100 * time.Millisecond})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 200 {
		wg.Go(func() {
			if ok, why := allowed(r.servers[i%2], clientCheck(0)); !ok {
				failed.Add(1)
				t.Log(why)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 200 checks failed", n)
	}
	if n := r.idp.Requests(); n != 1 {
		t.Errorf("a cold burst of 200 checks over 2 replicas made %d token requests, want 1", n)
		for _, logs := range r.logs {
			for _, e := range logs.All() {
				t.Log(e.Message, e.ContextMap())
			}
		}
	}
}

// load runs checks for new clients, each first on servers[0] (a cold fetch
// that goes through the Redis lock) and then on the others (reads from
// Redis). A third of the way through it starts event, and it goes on until
// both the clients and the event are done. It returns the number of clients
// checked and the failures.
func (r *replicas) load(t *testing.T, servers []*Server, clients int, event func()) (int, []string) {
	t.Helper()
	var failures []string
	eventDone := make(chan struct{})
	i := 0
	for ; ; i++ {
		if i == clients/3 {
			go func() {
				defer close(eventDone)
				event()
			}()
		}
		if i >= clients {
			select {
			case <-eventDone:
				t.Logf("%d clients checked on %d replicas, the event ran from client %d on", i, len(servers), clients/3)
				return i, failures
			default:
			}
		}
		for _, srv := range servers {
			if ok, why := allowed(srv, clientCheck(i)); !ok {
				failures = append(failures, fmt.Sprintf("client-%d: %s", i, why))
			}
		}
	}
}

func TestRedisKilledDuringLoad(t *testing.T) {
	single := redistest.Single(t)
	r := startReplicas(t, 2, "    endpoints: ["+single.Addr+"]", 20000)
	n, failures := r.load(t, r.servers, 300, single.Kill)
	if len(failures) > 0 {
		t.Errorf("%d of %d checks failed while Redis died: %v", len(failures), 2*n, failures[:min(3, len(failures))])
	}
	for i, logs := range r.logs {
		if got := logs.FilterMessageSnippet("redis unavailable").Len(); got != 1 {
			t.Errorf("replica %d logged Redis going down %d times, want once", i, got)
		}
	}
}

// TestSlowAndFlappingRedis blocks Redis (DEBUG SLEEP) and restarts it while
// Checks run with Envoy's default 200 ms deadline: none may fail, so every
// Redis call must give up in time.
func TestSlowAndFlappingRedis(t *testing.T) {
	port := redistest.FreePort(t)
	start := func() *redistest.Server {
		return redistest.Start(t, redistest.Options{Port: port, Config: []string{"enable-debug-command local"}})
	}
	server := start()
	r := startReplicas(t, 2, fmt.Sprintf("    endpoints: [127.0.0.1:%d]", port), 20000)
	old := checkTimeout
	checkTimeout = 200 * time.Millisecond
	t.Cleanup(func() { checkTimeout = old })

	n, failures := r.load(t, r.servers, 300, func() {
		client := redis.NewClient(&redis.Options{Addr: server.Addr})
		defer client.Close()
		for range 2 { // slow twice, then gone twice
			if err := client.Do(context.Background(), "DEBUG", "SLEEP", "0.7").Err(); err != nil {
				t.Errorf("DEBUG SLEEP: %v", err)
			}
		}
		for range 2 {
			server.Kill()
			server = start()
		}
	})
	if len(failures) > 0 {
		t.Errorf("%d of %d checks failed with a slow, then flapping Redis: %v", len(failures), 2*n, failures[:min(3, len(failures))])
	}
	for i, logs := range r.logs {
		if logs.FilterMessageSnippet("redis unavailable").Len() == 0 {
			t.Errorf("replica %d never saw Redis fail: the test did not test", i)
		}
	}
}

func TestRedisTierIsReadByTheOtherReplica(t *testing.T) {
	single := redistest.Single(t)
	r := startReplicas(t, 2, "    endpoints: ["+single.Addr+"]", 5)
	for i := range 5 {
		if ok, src := allowed(r.servers[0], clientCheck(i)); !ok || src != "miss" {
			t.Fatalf("first replica: %v %s", ok, src)
		}
		if ok, src := allowed(r.servers[1], clientCheck(i)); !ok || src != "hit" {
			t.Fatalf("second replica: %v %s, want a hit from Redis", ok, src)
		}
	}
	if n := r.idp.Requests(); n != 5 {
		t.Errorf("%d token requests for 5 clients on 2 replicas, want 5", n)
	}
}

func TestSentinelFailoverDuringLoad(t *testing.T) {
	s := redistest.StartSentinels(t)
	yaml := fmt.Sprintf("    endpoints: [%s]\n    sentinel: {masterSet: %s}", strings.Join(s.Addrs(), ", "), redistest.MasterSet)
	r := startReplicas(t, 2, yaml, 20000)
	n, failures := r.load(t, r.servers, 300, func() { s.Failover(t) })
	if len(failures) > 0 {
		t.Errorf("%d of %d checks failed during a Sentinel failover: %v", len(failures), 2*n, failures[:min(3, len(failures))])
	}
	// After the failover, new tokens are written to the new master.
	master := redis.NewClient(&redis.Options{Addr: s.MasterAddr(t)})
	defer master.Close()
	before, err := master.DBSize(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	next := n
	waitFor(t, func() bool {
		ok, _ := allowed(r.servers[0], clientCheck(next))
		next++
		now, _ := master.DBSize(context.Background()).Result()
		return ok && now > before
	})
}

func TestClusterReshardDuringLoad(t *testing.T) {
	cluster := redistest.StartCluster(t)
	// A generous timeout: this is about slots moving, not about a slow Redis
	// on a loaded machine.
	r := startReplicas(t, 3, fmt.Sprintf("    cluster: true\n    endpoints: [%s]\n    timeoutMillis: 1000", cluster.Nodes[0].Addr), 20000)
	n, failures := r.load(t, r.servers[:2], 300, func() { cluster.Reshard(t, 2000) })
	if len(failures) > 0 {
		t.Errorf("%d of %d checks failed while slots moved: %v", len(failures), 2*n, failures[:min(3, len(failures))])
	}
	// A replica that has seen none of these clients reads every token from
	// the cluster, wherever its slot now lives.
	requests := r.idp.Requests()
	for i := range n {
		if ok, src := allowed(r.servers[2], clientCheck(i)); !ok || src != "hit" {
			var seen []string
			for _, e := range r.logs[2].All() {
				seen = append(seen, fmt.Sprint(e.Message, e.ContextMap()))
			}
			t.Fatalf("client-%d on a fresh replica: %v %s; its log: %v", i, ok, src, seen)
		}
	}
	if got := r.idp.Requests(); got != requests {
		t.Errorf("a fresh replica made %d token requests, want none", got-requests)
	}
	// A purge finds the policy's tokens on every master.
	purged, err := r.builders[2].Purge(context.Background(), "app", "")
	if err != nil || purged.Redis != int64(n) {
		t.Errorf("purging a cluster: %+v, %v; want %d tokens from Redis", purged, err, n)
	}
}

func TestEncryptedValuesHideTokensAndClients(t *testing.T) {
	single := redistest.Single(t)
	cli := redistest.Binary(t, "redis-cli")
	r := startReplicas(t, 1, "    endpoints: ["+single.Addr+"]", 3)
	var tokens []string
	for i := range 3 {
		resp, err := r.servers[0].Check(context.Background(), clientCheck(i))
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("check: %v %v", resp, err)
		}
		tokens = append(tokens, strings.TrimPrefix(resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue(), "Bearer "))
	}
	port := fmt.Sprint(single.Port)
	keys, err := exec.Command(cli, "-p", port, "--scan", "--pattern", "extauthz:*").Output()
	if err != nil {
		t.Fatal(err)
	}
	// Three tokens, and three records that the IdP accepted their
	// credentials: names alone, HMAC tags.
	accepted := 0
	for _, key := range strings.Fields(string(keys)) {
		if strings.HasPrefix(key, "extauthz:accepted:") {
			accepted++
		}
	}
	if n := len(strings.Fields(string(keys))); n != 6 || accepted != 3 {
		t.Fatalf("%d keys in Redis, %d of accepted credentials, want 3 tokens and 3 accepted:\n%s", n, accepted, keys)
	}
	for _, key := range strings.Fields(string(keys)) {
		value, err := exec.Command(cli, "-p", port, "GET", key).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range append(tokens, "client-0", "client-1", "client-2", "s3cret", "eyJ") {
			if strings.Contains(key, secret) || strings.Contains(string(value), secret) {
				t.Errorf("%s shows %q", key, secret)
			}
		}
	}
}

func TestRedisDownAtStartThenBack(t *testing.T) {
	port := redistest.FreePort(t)
	r := startReplicas(t, 1, fmt.Sprintf("    endpoints: [127.0.0.1:%d]", port), 5000)
	for i := range 10 {
		if ok, why := allowed(r.servers[0], clientCheck(i)); !ok {
			t.Fatalf("check with Redis down: %s", why)
		}
	}
	srv := redistest.Start(t, redistest.Options{Port: port})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	i := 10
	waitFor(t, func() bool { // recovery needs no restart: a later cold check finds Redis again
		ok, _ := allowed(r.servers[0], clientCheck(i))
		i++
		n, _ := client.DBSize(context.Background()).Result()
		return ok && n > 0
	})
	if r.logs[0].FilterMessage("redis available again").Len() != 1 {
		t.Error("the recovery was not logged once")
	}
}

// TestPurgeAcrossReplicas purges a client's token on one replica: it goes
// from that replica's memory, from Redis, and from the other replica's
// memory through pub/sub.
func TestPurgeAcrossReplicas(t *testing.T) {
	single := redistest.Single(t)
	r := startReplicas(t, 2, "    endpoints: ["+single.Addr+"]", 2)
	for i := range 2 {
		for _, srv := range r.servers {
			if ok, why := allowed(srv, clientCheck(i)); !ok {
				t.Fatal(why)
			}
		}
	}
	before := tokenOf(t, r.servers[1], clientCheck(0))
	purged, err := r.builders[0].Purge(context.Background(), "app", "client-0")
	if err != nil || purged.Memory != 1 || purged.Redis != 1 {
		t.Fatalf("purge: %+v, %v; want 1 token from memory and 1 from Redis", purged, err)
	}
	// The other replica drops it on the pub/sub message: its next check
	// finds nothing in memory or Redis and fetches a new token.
	waitFor(t, func() bool { _, src := allowed(r.servers[1], clientCheck(0)); return src == "miss" })
	// The purging replica then reads that new token from Redis.
	if after := tokenOf(t, r.servers[0], clientCheck(0)); after == before {
		t.Error("the purging replica still serves the purged token")
	}
	for _, srv := range r.servers {
		if _, src := allowed(srv, clientCheck(1)); src != "hit" {
			t.Errorf("another client's token was purged: %s", src)
		}
	}
	if _, err := r.builders[0].Purge(context.Background(), "nope", ""); !errors.Is(err, builder.ErrUnknownPolicy) {
		t.Errorf("unknown policy: %v", err)
	}
	all, err := r.builders[1].Purge(context.Background(), "app", "")
	if err != nil || all.Memory != 2 || all.Redis != 2 {
		t.Errorf("purging the policy: %+v, %v; want both clients from memory and Redis", all, err)
	}
}

func tokenOf(t *testing.T, srv *Server, req *authv3.CheckRequest) string {
	t.Helper()
	resp, err := srv.Check(context.Background(), req)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("check: %v %v", resp, err)
	}
	return resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue()
}

// TestRedisValuesCannotBeForgedOrSwapped: anyone who can write to Redis
// copies an admin client's genuine value under a viewer's key, or writes a
// forged one; replicas that read them answer the viewer as a viewer.
func TestRedisValuesCannotBeForgedOrSwapped(t *testing.T) {
	single := redistest.Single(t)
	r := startReplicas(t, 3, "    endpoints: ["+single.Addr+"]", 1)
	r.idp.AddClient("viewer", testidp.Client{Secret: "v1ewer", Claims: map[string]any{"grp": "viewer"}})
	viewer := checkRequest("app", "h", "/", map[string]string{"authorization": basic("viewer", "v1ewer")})
	rc := redis.NewClient(&redis.Options{Addr: single.Addr})
	defer rc.Close()
	ctx := context.Background()
	values := func() map[string]bool {
		keys, err := rc.Keys(ctx, "extauthz:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, k := range keys {
			if !strings.Contains(k, "lock:") && !strings.HasSuffix(k, "generation") {
				out[k] = true
			}
		}
		return out
	}
	if ok, why := allowed(r.servers[0], clientCheck(0)); !ok {
		t.Fatal(why)
	}
	adminKey := ""
	for k := range values() {
		adminKey = k
	}
	if ok, _ := allowed(r.servers[0], viewer); ok {
		t.Fatal("the viewer was allowed")
	}
	viewerKey := ""
	for k := range values() {
		if k != adminKey {
			viewerKey = k
		}
	}
	if adminKey == "" || viewerKey == "" {
		t.Fatalf("keys in Redis: %v", values())
	}
	adminValue, err := rc.Get(ctx, adminKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte{1}, make([]byte, 17)...) // a plain value, as older versions wrote
	forged = append(forged, "Bearer"...)
	forged[17] = 6
	forged = append(forged, "eyJhbGciOiJub25lIn0.eyJncnAiOiJhZG1pbiJ9.c2ln"...)
	for i, value := range [][]byte{adminValue, forged} {
		if err := rc.Set(ctx, viewerKey, value, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		resp, err := r.servers[i+1].Check(ctx, viewer)
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, resp); got.status != 403 || got.body["error"] != "insufficient_claims" {
			t.Errorf("value %d under the viewer's key: %d %v, want 403 insufficient_claims", i, got.status, got.body)
		}
	}
}

// TestRevocationReachesRedis: when one replica learns that a client's
// secret was revoked, the token goes from Redis too, so that another
// replica does not serve it from there.
func TestRevocationReachesRedis(t *testing.T) {
	single := redistest.Single(t)
	r := startReplicas(t, 2, "    endpoints: ["+single.Addr+"]", 1)
	r.idp.SetBehavior(testidp.Behavior{Lifetime: 4 * time.Second})
	if ok, why := allowed(r.servers[0], clientCheck(0)); !ok {
		t.Fatal(why)
	}
	r.idp.AddClient("client-0", testidp.Client{Secret: "rotated"})
	// The first replica's refresh-ahead, in the token's last 20%, learns it.
	waitFor(t, func() bool { ok, _ := allowed(r.servers[0], clientCheck(0)); return !ok })
	resp, err := r.servers[1].Check(context.Background(), clientCheck(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, resp); got.status != 401 || got.body["error"] != "invalid_client" {
		t.Errorf("the other replica: %d %v, want 401 invalid_client", got.status, got.body)
	}
}

// TestExchangedTokensAreSharedThroughRedis: a caller's token is exchanged
// once for the whole fleet: the other replica reads the exchanged token
// from Redis (issued to the policy's client, stored under the caller's).
func TestExchangedTokensAreSharedThroughRedis(t *testing.T) {
	single := redistest.Single(t)
	r := startReplicas(t, 2, "    endpoints: ["+single.Addr+"]", 1)
	alice := r.idp.Subject("alice", nil, time.Now().Add(time.Hour), nil)
	req := checkRequest("exchange", "h", "/", map[string]string{"authorization": "Bearer " + alice})
	for i, srv := range r.servers {
		resp, err := srv.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		res := read(t, resp)
		want := map[int]string{0: "miss", 1: "hit"}[i]
		if res.status != 200 || res.meta["sub"] != "alice" || res.meta["token_cache"] != want {
			t.Errorf("replica %d: %d %v %v", i, res.status, res.body, res.meta)
		}
	}
	if n := r.idp.Exchanges("alice"); n != 1 {
		t.Errorf("alice's token was exchanged %d times by two replicas sharing Redis, want once", n)
	}
	for i, logs := range r.logs {
		if n := logs.FilterMessageSnippet("another client").Len(); n != 0 {
			t.Errorf("replica %d refused the exchanged token from Redis %d times", i, n)
		}
	}
}
