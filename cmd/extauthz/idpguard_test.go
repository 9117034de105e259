package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// The IdP guard tests attack the built binary as issue 19 describes: a test
// IdP counts the requests it works on at once and the attempts per client
// id, and each test asserts what a caller, the IdP and an operator see.

// guardServer is the first lines of every configuration of these tests:
// check listener on gRPC only, the admin API over TCP with a token.
const guardServer = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0", admin: {token: ` + testAdminToken + `}}
`

// guard is a running binary, its IdP, and clients of its check and admin
// APIs, each over one connection.
type guard struct {
	t     *testing.T
	proc  *harness.Process
	idp   *testidp.Server
	authz authv3.AuthorizationClient
	admin adminv1.AdminClient
}

// startGuard runs the binary with yaml (%[1]s is idp's token URL) against
// idp, with the volumes given as a directory under the configuration's →
// key → value.
func startGuard(t *testing.T, idp *testidp.Server, yaml string, mounts map[string]map[string]string) *guard {
	t.Helper()
	proc, _ := startAt(t, idp, yaml, mounts)
	dial := func(addr string, opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	return &guard{
		t: t, proc: proc, idp: idp,
		authz: authv3.NewAuthorizationClient(dial(proc.GRPCAddress)),
		admin: adminv1.NewAdminClient(dial(proc.AdminAddress, grpc.WithPerRPCCredentials(adminBearer{}))),
	}
}

// newGuardIdP starts a test IdP that lives as long as the test.
func newGuardIdP(t *testing.T, o testidp.Options) *testidp.Server {
	t.Helper()
	idp, err := testidp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	return idp
}

// answer is what a caller sees of a Check.
type answer struct {
	status     int    // 200 for an allow, else the denial's HTTP status
	code       string // "ok" for an allow, else the error of the denial's body
	retryAfter string // the denial's Retry-After
	cache      string // the token_cache dynamic metadata: hit or miss
}

func (a answer) String() string {
	s := fmt.Sprintf("%d %s", a.status, a.code)
	if a.retryAfter != "" {
		s += " retry-after=" + a.retryAfter
	}
	if a.cache != "" {
		s += " token_cache=" + a.cache
	}
	return s
}

// refused reports a denial that tells the caller when to come back.
func (a answer) refused(status int, code string) bool {
	n, err := strconv.Atoi(a.retryAfter)
	return a.status == status && a.code == code && err == nil && n >= 1
}

// check asks about GET /orders of policy as Envoy does, with id and secret
// as Basic credentials (none when id is empty, for gateway mode), within ctx.
func (g *guard) check(ctx context.Context, policy, id, secret string) (answer, error) {
	headers := map[string]string{}
	if id != "" {
		headers["authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
	}
	resp, err := g.authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": policy},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "api.example.com", Path: "/orders", Headers: headers,
		}},
	}})
	if err != nil {
		return answer{}, err
	}
	a := answer{cache: resp.GetDynamicMetadata().GetFields()["token_cache"].GetStringValue()}
	if resp.GetOkResponse() != nil {
		a.status, a.code = 200, "ok"
		return a, nil
	}
	d := resp.GetDeniedResponse()
	a.status = int(d.GetStatus().GetCode())
	var body struct{ Error string }
	_ = json.Unmarshal([]byte(d.GetBody()), &body)
	a.code = body.Error
	for _, h := range d.GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), "retry-after") {
			a.retryAfter = h.GetHeader().GetValue()
		}
	}
	return a, nil
}

// mustCheck is check within 10 s, failing the test on a gRPC error.
func (g *guard) mustCheck(policy, id, secret string) answer {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := g.check(ctx, policy, id, secret)
	if err != nil {
		g.t.Fatalf("Check for %q: %v\n%s", id, err, g.proc.Logs())
	}
	return a
}

// purge drops the tokens of one client of policy, as an operator does.
func (g *guard) purge(policy, id string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.admin.PurgeTokens(ctx, &adminv1.PurgeTokensRequest{Policy: policy, ClientId: id}); err != nil {
		g.t.Fatalf("PurgeTokens %s %s: %v", policy, id, err)
	}
}

// gauges sums the series of a metric family on /metrics, 0 when absent.
func (g *guard) gauges(family string) float64 {
	g.t.Helper()
	sum := 0.0
	for _, line := range strings.Split(scrape(g.t, g.proc.AdminAddress), "\n") {
		if !strings.HasPrefix(line, family+"{") && !strings.HasPrefix(line, family+" ") {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			g.t.Fatalf("%s: %v", line, err)
		}
		sum += f
	}
	return sum
}

// refusals returns extauthz_idp_requests_refused_total of policy for reason.
func (g *guard) refusals(policy, reason string) int {
	g.t.Helper()
	return int(metric(g.t, g.proc.AdminAddress, fmt.Sprintf(`extauthz_idp_requests_refused_total{policy=%q,reason=%q}`, policy, reason)))
}

// waitQuiet polls until nothing more can reach the IdP: it answers no
// request, the binary has none open or queued, and the IdP's count has
// stayed put for a second (a binary without the gauges may still send).
func (g *guard) waitQuiet(within time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(within)
	last, since := g.idp.Requests(), time.Now()
	for {
		n := g.idp.Requests()
		if n != last {
			last, since = n, time.Now()
		}
		busy := g.idp.Inflight() > 0 || g.gauges("extauthz_idp_open_requests") > 0 || g.gauges("extauthz_idp_queued_requests") > 0
		if busy {
			since = time.Now()
		} else if time.Since(since) >= time.Second {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("the IdP still works after %v: %d requests, %d in flight", within, n, g.idp.Inflight())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// randomText returns n random URL-safe characters.
func randomText(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// attack sends one wrong secret for id per Check, n times in turn, and
// returns the answers.
func (g *guard) attack(policy, id string, n int) []answer {
	g.t.Helper()
	out := make([]answer, n)
	for i := range out {
		out[i] = g.mustCheck(policy, id, "wrong-"+randomText(12))
	}
	return out
}

// tally counts answers by their String.
func tally(as []answer) map[string]int {
	m := map[string]int{}
	for _, a := range as {
		m[a.String()]++
	}
	return m
}

// lockedOut asserts that every answer is an invalid_client and that
// those after the first allowed ones name a Retry-After.
func lockedOut(t *testing.T, what string, as []answer, allowed int) {
	t.Helper()
	for i, a := range as {
		switch {
		case a.status != 401 || a.code != "invalid_client":
			t.Errorf("%s: wrong secret %d: %v, want 401 invalid_client", what, i+1, a)
		case i >= allowed && !a.refused(401, "invalid_client"):
			t.Errorf("%s: wrong secret %d: %v, want 401 invalid_client with Retry-After", what, i+1, a)
		}
	}
}

// hangUpAfter is the context of a caller that hangs up after d, cancelling
// its stream as Envoy does when its own client goes away: unlike a
// deadline (grpc-timeout), the binary learns of it only as it happens.
func hangUpAfter(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	hangUp := time.AfterFunc(d, cancel)
	return ctx, func() { hangUp.Stop(); cancel() }
}

// callerContext is the context of the nth caller of a flood, which gives
// up after d: even callers by a deadline the binary sees, odd ones by
// hanging up.
func callerContext(n int, d time.Duration) (context.Context, context.CancelFunc) {
	if n%2 == 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return hangUpAfter(d)
}

// guardBulkhead is a policy whose endpoint carries at most 8 requests.
const guardBulkhead = guardServer + `
policies:
  app:
    url: %[1]s
    clientConfig: {maxConcurrentRequests: 8}
`

// TestIdPGuardSlowIdP: 200 callers with distinct client ids arrive over
// 2 s and each hangs up 2 s later, against an IdP that takes 1.5 s whether
// or not the binary still waits: the IdP never works on more than
// maxConcurrentRequests (8) at once, tail included, and every request that
// was sent caches its token, also when its caller had gone, so that the
// next Check of that client is a hit without a request. The callers hang
// up rather than send a deadline: the binary cannot plan for a hang-up
// (TestIdPGuardHangUpFlood has both).
func TestIdPGuardSlowIdP(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{FastSigning: true, AnyClient: &testidp.Client{Secret: "s3cret"}})
	idp.SetBehavior(testidp.Behavior{Latency: 1500 * time.Millisecond, IgnoreHangUp: true})
	g := startGuard(t, idp, guardBulkhead, nil)

	const callers, bound = 200, 8
	results := make([]string, callers)
	var wg sync.WaitGroup
	arrive := time.NewTicker(10 * time.Millisecond)
	defer arrive.Stop()
	for i := range callers {
		<-arrive.C
		wg.Go(func() {
			ctx, cancel := hangUpAfter(2 * time.Second)
			defer cancel()
			a, err := g.check(ctx, "app", fmt.Sprintf("slow-%03d", i), "s3cret")
			if err != nil {
				results[i] = "gRPC " + status.Code(err).String()
				return
			}
			results[i] = a.String()
		})
	}
	wg.Wait()
	g.waitQuiet(30 * time.Second)

	counts := map[string]int{}
	for _, r := range results {
		counts[r]++
	}
	peak := idp.PeakConcurrency()
	t.Logf("IdP peak concurrency %d against the bound %d; %d token requests; callers saw %v", peak, bound, idp.Requests(), counts)
	if peak > bound {
		t.Errorf("the IdP worked on %d requests at once, over the bound of %d", peak, bound)
	}
	if counts["200 ok token_cache=miss"] == 0 {
		t.Errorf("no caller got a token: %v\n%s", counts, g.proc.Logs())
	}

	// Every request that was sent cached its token, whoever waited for it.
	sent := map[string]bool{}
	for _, r := range idp.Log() {
		sent[r.ClientID] = true
	}
	if len(sent) == 0 {
		t.Fatal("no request reached the IdP")
	}
	gone := 0
	for i, r := range results {
		if id := fmt.Sprintf("slow-%03d", i); sent[id] && !strings.HasPrefix(r, "200") {
			gone++
		}
	}
	before := idp.Requests()
	hits := 0
	for id := range sent {
		a := g.mustCheck("app", id, "s3cret")
		if a.status == 200 && a.cache == "hit" {
			hits++
		} else {
			t.Errorf("%s, whose request was sent: %v, want a cache hit", id, a)
		}
	}
	if n := idp.Requests() - before; n != 0 {
		t.Errorf("the repeated Checks sent %d token requests, want none", n)
	}
	t.Logf("%d client ids were sent to the IdP, %d of them after their caller had gone; %d of %d repeated Checks were cache hits", len(sent), gone, hits, len(sent))
	if gone == 0 {
		t.Error("no request was sent for a caller that had gone: the tail was not exercised")
	}
}

// TestIdPGuardHangUpFlood: 400 Checks with random unknown client ids that
// give up after 0.1 s (half by a deadline, half by hanging up) against an
// IdP that takes 1.5 s, hang-up or not. The IdP hears at most the 8
// requests the bulkhead let through before they gave up; the rest leaves
// the queue unsent (counted as abandoned) or is refused at once by the full
// queue; and a legitimate client that arrives next is served within
// seconds.
func TestIdPGuardHangUpFlood(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{FastSigning: true})
	idp.AddClient("legit-app", testidp.Client{Secret: "legit-s3cret"})
	idp.SetBehavior(testidp.Behavior{Latency: 1500 * time.Millisecond, IgnoreHangUp: true})
	g := startGuard(t, idp, guardBulkhead, nil)

	const flood, bound = 400, 8
	var mu sync.Mutex
	gaveUp, answers := 0, []answer{}
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			ctx, cancel := callerContext(i, 100*time.Millisecond)
			defer cancel()
			a, err := g.check(ctx, "app", "flood-"+randomText(16), randomText(16))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				gaveUp++
			} else {
				answers = append(answers, a)
			}
		})
	}
	wg.Wait() // the attacker is done

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	legit, err := g.check(ctx, "app", "legit-app", "legit-s3cret")
	wait := time.Since(start)
	t.Logf("after the flood, the legitimate client waited %v for %v (err %v)", wait.Round(10*time.Millisecond), legit, err)
	if err != nil || legit.status != 200 || wait > 5*time.Second {
		t.Errorf("the legitimate client: %v %v after %v, want 200 within 5 s", legit, err, wait)
	}

	g.waitQuiet(30 * time.Second)
	fromFlood := int(idp.Requests()) - idp.Attempts("legit-app")
	abandoned, full := g.refusals("app", "abandoned"), g.refusals("app", "queue_full")
	// Flood Checks that reached the token cache before their caller gave
	// up: every client id is new, so each is one miss (and the legitimate
	// client's one more).
	reached := int(metric(t, g.proc.AdminAddress, `extauthz_cache_lookups_total{result="miss",tier="memory"}`)) - 1
	t.Logf("the IdP received %d requests from the flood of %d (bound %d); of the %d that reached the cache, %d were abandoned unsent and %d refused for a full queue; callers: %d gave up, the others saw %v",
		fromFlood, flood, bound, reached, abandoned, full, gaveUp, tally(answers))
	if fromFlood > bound {
		t.Errorf("the IdP received %d requests from callers who gave up after 0.1 s, want at most %d", fromFlood, bound)
	}
	// A caller answered within its 0.1 s was refused at once and told
	// when to come back, or its own deadline had passed at the server.
	refused := 0
	for _, a := range answers {
		switch {
		case a.refused(503, "temporarily_unavailable"):
			refused++
		case a.status != 503 || a.code != "temporarily_unavailable":
			t.Errorf("a flood Check: %v, want 503 temporarily_unavailable", a)
		}
	}
	if refused > full {
		t.Errorf("%d callers saw 503 with Retry-After, the metric counts %d refusals for a full queue", refused, full)
	}
	// Whatever was queued left the queue unsent.
	if fromFlood+full+abandoned != reached || abandoned == 0 {
		t.Errorf("sent %d + refused %d + abandoned %d = %d, want the %d flood Checks that reached the cache", fromFlood, full, abandoned, fromFlood+full+abandoned, reached)
	}
}

// TestIdPGuardHangUpFloodHTTP is TestIdPGuardHangUpFlood in HTTP mode,
// served by fasthttp, which, unlike net/http, does not watch a connection
// while its request is served: 200 callers with random unknown client ids
// close their connections after 0.1 s. The binary learns of each hang-up
// while the check waits, so the IdP hears at most the 8 requests the
// bulkhead let through, and the queued rest leaves unsent.
func TestIdPGuardHangUpFloodHTTP(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{FastSigning: true})
	idp.SetBehavior(testidp.Behavior{Latency: 1500 * time.Millisecond, IgnoreHangUp: true})
	g := startGuard(t, idp, strings.Replace(guardBulkhead, `httpAddress: ""`, `httpAddress: "127.0.0.1:0"`, 1), nil)

	const flood, bound = 200, 8
	var gaveUp atomic.Int32
	var wg sync.WaitGroup
	for range flood {
		wg.Go(func() {
			ctx, cancel := hangUpAfter(100 * time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.proc.HTTPAddress+"/policy/app", nil)
			req.SetBasicAuth("flood-"+randomText(16), randomText(16))
			// A connection of its own, closed when the caller hangs up.
			resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				gaveUp.Add(1)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()

	g.waitQuiet(30 * time.Second)
	abandoned, full := g.refusals("app", "abandoned"), g.refusals("app", "queue_full")
	reached := int(metric(t, g.proc.AdminAddress, `extauthz_cache_lookups_total{result="miss",tier="memory"}`))
	t.Logf("the IdP received %d requests from the flood of %d (bound %d); of the %d that reached the cache, %d were abandoned unsent and %d refused for a full queue; %d callers hung up",
		idp.Requests(), flood, bound, reached, abandoned, full, gaveUp.Load())
	if n := int(idp.Requests()); n > bound {
		t.Errorf("the IdP received %d requests from callers who hung up after 0.1 s, want at most %d", n, bound)
	}
	if int(idp.Requests())+full+abandoned != reached || abandoned == 0 {
		t.Errorf("sent %d + refused %d + abandoned %d, want the %d Checks that reached the cache, some abandoned", idp.Requests(), full, abandoned, reached)
	}
}

// guardRedis is a policy with a Redis tier; REDIS is the server's address.
const guardRedis = guardServer + `
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["REDIS"], timeoutMillis: 1000}
policies:
  app:
    url: %[1]s
    failureBudget: {maxRejections: 5, window: 1m}
`

// TestIdPGuardRestartWithRedis: a client the IdP accepted is remembered in
// Redis, so that after its token expired, on a restarted replica and on one
// that never saw it, 20 wrong secrets for its id reach the IdP at most 5
// times each and lock the id out, yet its right secret is still served.
func TestIdPGuardRestartWithRedis(t *testing.T) {
	rs := redistest.Single(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	yaml := strings.Replace(guardRedis, "REDIS", rs.Addr, 1)
	idp := newGuardIdP(t, testidp.Options{})
	const victim, right = "victim-app", "victim-s3cret"
	idp.AddClient(victim, testidp.Client{Secret: right})
	idp.SetBehavior(testidp.Behavior{Lifetime: 2 * time.Second})

	other := startGuard(t, idp, yaml, nil) // runs throughout and never sees the victim before the attack
	first := startGuard(t, idp, yaml, nil)
	if a := first.mustCheck("app", victim, right); a.status != 200 {
		t.Fatalf("the victim before the attack: %v", a)
	}
	accepted := redisKeys(t, rdb, "extauthz:accepted:*")
	if len(accepted) != 1 {
		t.Errorf("Redis holds %d accepted records, want 1: %v", len(accepted), accepted)
	} else if ttl := rdb.TTL(context.Background(), accepted[0]).Val(); ttl < 29*24*time.Hour {
		t.Errorf("the accepted record lives %v, want about 30 days", ttl)
	}
	if err := first.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := startGuard(t, idp, yaml, nil)
	waitTokensExpired(t, rdb)

	for _, r := range []struct {
		name string
		g    *guard
	}{{"the restarted replica", restarted}, {"the replica that never saw the victim", other}} {
		before := idp.Attempts(victim)
		wrong := r.g.attack("app", victim, 20)
		reached := idp.Attempts(victim) - before
		t.Logf("%s: 20 wrong secrets, %d reached the IdP; %v", r.name, reached, tally(wrong))
		if reached > 5 {
			t.Errorf("%s: %d wrong secrets reached the IdP, want at most 5", r.name, reached)
		}
		lockedOut(t, r.name, wrong, 5)
	}

	for i, r := range []struct {
		name string
		g    *guard
	}{{"the restarted replica", restarted}, {"the replica that never saw the victim", other}} {
		if i > 0 {
			waitTokensExpired(t, rdb) // the token the first one fetched would serve the second from Redis
		}
		before := idp.Attempts(victim)
		a := r.g.mustCheck("app", victim, right)
		t.Logf("%s, during the lockout: the victim's right secret %v, %d request to the IdP", r.name, a, idp.Attempts(victim)-before)
		if a.status != 200 || a.cache != "miss" || idp.Attempts(victim)-before != 1 {
			t.Errorf("%s: the victim's right secret during the lockout: %v after %d requests, want 200 from the IdP", r.name, a, idp.Attempts(victim)-before)
		}
	}
}

// redisKeys returns the keys of rdb matching pattern.
func redisKeys(t *testing.T, rdb *redis.Client, pattern string) []string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// waitTokensExpired polls until Redis holds no token: value keys are
// <prefix><endpoint>:<client>:<key>.
func waitTokensExpired(t *testing.T, rdb *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tokens := 0
		for _, k := range redisKeys(t, rdb, "extauthz:*") {
			if strings.Count(strings.TrimPrefix(k, "extauthz:"), ":") == 2 {
				tokens++
			}
		}
		if tokens == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis still holds %d tokens", tokens)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// guardBudget is a policy with the default failure budget spelled out.
const guardBudget = guardServer + `
policies:
  app:
    url: %[1]s
    failureBudget: {maxRejections: 5, window: 1m}
`

// TestIdPGuardPurge: a client id locked out by wrong secrets stays locked
// out when its secret is rotated at the IdP — the new secret was never
// accepted — until an operator purges the client, which gives it a fresh
// budget.
func TestIdPGuardPurge(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{})
	const id = "rotating-app"
	idp.AddClient(id, testidp.Client{Secret: "old-s3cret"})
	g := startGuard(t, idp, guardBudget, nil)

	wrong := g.attack("app", id, 6)
	lockedOut(t, "the attack", wrong, 5)
	if n := idp.Attempts(id); n != 5 {
		t.Errorf("%d wrong secrets reached the IdP, want 5", n)
	}

	idp.AddClient(id, testidp.Client{Secret: "new-s3cret"}) // rotated during the attack
	before := idp.Attempts(id)
	rotated := g.mustCheck("app", id, "new-s3cret")
	t.Logf("the rotated secret during the lockout: %v, %d requests to the IdP", rotated, idp.Attempts(id)-before)
	if !rotated.refused(401, "invalid_client") || idp.Attempts(id) != before {
		t.Errorf("the rotated secret during the lockout: %v after %d requests, want 401 with Retry-After and none", rotated, idp.Attempts(id)-before)
	}

	g.purge("app", id)
	after := g.mustCheck("app", id, "new-s3cret")
	t.Logf("the rotated secret after PurgeTokens: %v, %d requests to the IdP", after, idp.Attempts(id)-before)
	if after.status != 200 || idp.Attempts(id) != before+1 {
		t.Errorf("the rotated secret after PurgeTokens: %v after %d requests, want 200 from the IdP", after, idp.Attempts(id)-before)
	}
}

// TestIdPGuardCaseVariants: against an IdP that matches client ids without
// case, 12 spellings of one id with 5 wrong secrets each reach the IdP 5
// times in all, and the real client, accepted before the attack, is still
// served when its token must be fetched again.
func TestIdPGuardCaseVariants(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{CaseInsensitiveIDs: true})
	const id, right = "Victim-App", "victim-s3cret"
	idp.AddClient(id, testidp.Client{Secret: right})
	g := startGuard(t, idp, guardBudget, nil)
	if a := g.mustCheck("app", id, right); a.status != 200 {
		t.Fatalf("the real client before the attack: %v", a)
	}
	g.purge("app", id) // its next Check asks the IdP

	before := idp.Attempts(id)
	var wrong []answer
	spellings := map[string]bool{}
	for mask := range 12 {
		spelling := []rune(id)
		for i, bit := 0, 0; i < len(spelling); i++ {
			if r := spelling[i]; r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' {
				if mask&(1<<bit) != 0 {
					spelling[i] = r ^ 0x20
				}
				bit++
			}
		}
		spellings[string(spelling)] = true
		wrong = append(wrong, g.attack("app", string(spelling), 5)...)
	}
	reached := idp.Attempts(id) - before
	t.Logf("%d spellings × 5 wrong secrets: %d reached the IdP; %v", len(spellings), reached, tally(wrong))
	if len(spellings) != 12 {
		t.Fatalf("%d spellings, want 12", len(spellings))
	}
	if reached > 5 {
		t.Errorf("%d wrong secrets reached the IdP, want at most 5", reached)
	}
	lockedOut(t, "case variants", wrong, 5)

	before = idp.Attempts(id)
	a := g.mustCheck("app", id, right)
	t.Logf("the real client after the attack: %v, %d request to the IdP", a, idp.Attempts(id)-before)
	if a.status != 200 || idp.Attempts(id) != before+1 {
		t.Errorf("the real client after the attack: %v after %d requests, want 200 from the IdP", a, idp.Attempts(id)-before)
	}
}

// guardSpray is a policy with the endpoint-wide budget spelled out.
const guardSpray = guardServer + `
policies:
  app:
    url: %[1]s
    failureBudget: {maxRejections: 5, window: 1m, maxEndpointRejections: 50}
`

// TestIdPGuardSpray: after a victim's id is locked out, 3,000 wrong
// secrets of distinct random ids cause at most 50 rejections at the IdP in
// all; the rest are answered 503 with Retry-After unsent; a client the IdP
// accepted before is served; and the victim's record survives the spray:
// its next wrong secret is still refused unsent.
func TestIdPGuardSpray(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{FastSigning: true})
	const victim, legit = "victim-app", "legit-app"
	idp.AddClient(victim, testidp.Client{Secret: "victim-s3cret"})
	idp.AddClient(legit, testidp.Client{Secret: "legit-s3cret"})
	g := startGuard(t, idp, guardSpray, nil)
	if a := g.mustCheck("app", legit, "legit-s3cret"); a.status != 200 {
		t.Fatalf("the legitimate client before the spray: %v", a)
	}
	g.purge("app", legit) // its next Check asks the IdP

	lockedOut(t, "the victim", g.attack("app", victim, 5), 5)
	if n := idp.Attempts(victim); n != 5 {
		t.Fatalf("the victim's wrong secrets reached the IdP %d times, want 5", n)
	}

	const spray, workers = 3000, 64
	before := idp.Requests()
	answers := make([]answer, spray)
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < spray; i = int(next.Add(1)) - 1 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				a, err := g.check(ctx, "app", "spray-"+randomText(16), randomText(16))
				cancel()
				if err != nil {
					a = answer{code: "gRPC " + err.Error()}
				}
				answers[i] = a
			}
		})
	}
	wg.Wait()
	reached := int(idp.Requests() - before)
	counts := tally(answers)
	t.Logf("%d wrong secrets of distinct ids in %v: %d reached the IdP (%d in all with the victim's); %v",
		spray, time.Since(start).Round(time.Millisecond), reached, reached+5, counts)
	if reached > 50 {
		t.Errorf("the spray caused %d rejections at the IdP, want at most 50", reached)
	}
	rejected, refused := 0, 0
	for _, a := range answers {
		switch {
		case a.status == 401 && a.code == "invalid_client" && a.retryAfter == "":
			rejected++
		case a.refused(503, "temporarily_unavailable"):
			refused++
		}
	}
	if rejected != reached || rejected+refused != spray {
		t.Errorf("%d rejected by the IdP and %d refused with 503 and Retry-After, want %d and the rest of %d: %v", rejected, refused, reached, spray, counts)
	}

	before = idp.Requests()
	if a := g.mustCheck("app", legit, "legit-s3cret"); a.status != 200 || idp.Requests() != before+1 {
		t.Errorf("the legitimate client after the spray: %v after %d requests, want 200 from the IdP", a, idp.Requests()-before)
	}
	before = idp.Requests()
	a := g.mustCheck("app", victim, "wrong-after-the-spray")
	t.Logf("the victim's next wrong secret after the spray: %v, %d requests to the IdP", a, idp.Requests()-before)
	if !a.refused(401, "invalid_client") || idp.Requests() != before {
		t.Errorf("the victim's next wrong secret after the spray: %v after %d requests, want 401 with Retry-After, unsent (its record kept)", a, idp.Requests()-before)
	}
}

// guardNonce is a gateway-mode policy with an HMAC client assertion and a
// DPoP key made at start.
const guardNonce = guardServer + `
secrets: {dir: secrets}
policies:
  partner:
    url: %[1]s
    authMethod: client_secret_jwt
    clientID: partner-gateway
    clientSecret: "urn:k8s:secret:partner-idp:clientSecret"
    dpop: {}
`

// TestIdPGuardNonceRetry: an IdP that authenticates the client, spending
// the client assertion's jti, before it asks for a DPoP nonce gets a new
// assertion on the retry, and the Check is allowed. Had the retry re-sent
// the first assertion, the IdP would have refused it as replayed.
func TestIdPGuardNonceRetry(t *testing.T) {
	idp := newGuardIdP(t, testidp.Options{})
	const secret = "partner-hmac-secret-of-32-bytes!"
	idp.AddClient("partner-gateway", testidp.Client{Secret: secret})
	idp.SetBehavior(testidp.Behavior{DPoPNonce: "n-1", AuthenticateFirst: true})
	g := startGuard(t, idp, guardNonce, map[string]map[string]string{"secrets/partner-idp": {"clientSecret": secret + "\n"}})

	a := g.mustCheck("partner", "", "")
	attempts, log := idp.Attempts("partner-gateway"), idp.Log()
	t.Logf("a nonce asked for after client authentication: %v after %d token requests", a, attempts)
	if a.status != 200 {
		t.Errorf("the Check: %v, want allowed\n%s", a, g.proc.Logs())
	}
	// The IdP logs the requests past its nonce check: the retry.
	if attempts != 2 || len(log) != 1 {
		t.Fatalf("%d token requests, %d past the nonce; want one refused for its nonce and the retry", attempts, len(log))
	}
	retry := log[0]
	if retry.AuthMethod != "client_secret_jwt" || retry.DPoP == nil || retry.DPoP.Nonce != "n-1" || !retry.Form.Has("client_assertion") {
		t.Errorf("the retry: %s, proof %+v, assertion %t; want client_secret_jwt with a proof carrying n-1", retry.AuthMethod, retry.DPoP, retry.Form.Has("client_assertion"))
	}
}
