package authz

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/hostname"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/tokencache"
	"github.com/extauthz/extauthz/pkg/urlpath"
)

// trustYAML is the configuration of the trust-boundaries issue: the
// gateway's own token under /public/, application mode with claims under
// /admin/ and everywhere else.
const trustYAML = `
secrets: {dir: "{{secrets}}"}
routes:
  - {pathPrefix: "/public/", policy: partner}
  - {pathPrefix: "/admin/", policy: strict}
defaultPolicy: strict
policies:
  partner:
    url: {{url}}
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    forwardHeaders: {X-Client: client_id}
  strict:
    url: {{url}}
    claims: Equals(` + "`grp`, `admin`" + `)
`

// Who a request ends up with under trustYAML, without credentials.
const (
	gotPartner = "partner" // 200 with the gateway's token
	gotStrict  = "strict"  // 401: strict wants the caller's credentials
	gotInvalid = "invalid" // 400 invalid_request: the path is ambiguous
)

// hostilePaths are paths an attacker uses to reach /admin/ with the
// partner's token, or to make routes and upstreams disagree, and what each
// must get.
var hostilePaths = []struct{ path, want string }{
	{"/public/users", gotPartner},
	{"/public/users?next=/../admin", gotPartner},
	{"/public/users#/../../admin", gotPartner},
	{"/public/./users", gotPartner},
	{"//public//users", gotPartner},
	{"/%70ublic/users", gotPartner},
	{"/public/a/../users", gotPartner},
	{"/public/.../admin", gotPartner},
	{"/admin/users", gotStrict},
	{"/public", gotStrict},
	{"/PUBLIC/users", gotStrict},
	{"/public/../admin/users", gotStrict},
	{"/public/users/../../admin/users", gotStrict},
	{"/public/;x/../../admin", gotStrict},
	{"/public;x/../admin/users", gotStrict},
	{"/public/%2e%2e/admin/users", gotInvalid},
	{"/public/%2E%2E/admin/users", gotInvalid},
	{"/public/.%2e/admin/users", gotInvalid},
	{"/public/%2e./admin/users", gotInvalid},
	{"/public/%2e/admin/users", gotInvalid},
	{"/public/..%2fadmin/users", gotInvalid},
	{"/public/..%2Fadmin/users", gotInvalid},
	{"/public/%2e%2e%2fadmin/users", gotInvalid},
	{"/public/..;/admin/users", gotInvalid},
	{"/public/..;jsessionid=x/admin/users", gotInvalid},
	{"/public/.;/admin/users", gotInvalid},
	{"/public//../admin/users", gotInvalid},
	{"/public/x//../../admin/users", gotInvalid},
	{`/public/..\admin\users`, gotInvalid},
	{"/public/..%5cadmin/users", gotInvalid},
	{"/public/..%5Cadmin/users", gotInvalid},
	{"/public/%252e%252e/admin/users", gotInvalid},
	{"/public/..%3b/admin/users", gotInvalid},
	{"/public/%3f/../../admin", gotInvalid},
	{"/public/%23/../../admin", gotInvalid},
	{"/public/%00/../../admin", gotInvalid},
	{"/public/x%0d%0aX-Injected:%201", gotInvalid},
	{"/public/x%zz", gotInvalid},
	{"/public/../../admin/users", gotInvalid},
	{"/../public/users", gotInvalid},
	{"/public/" + strings.Repeat("a", urlpath.MaxBytes), gotInvalid},
}

// wantOf reads what a check answered in the terms of hostilePaths.
func wantOf(status int, errCode, client string) string {
	switch {
	case status == 200 && client == "gw-client":
		return gotPartner
	case status == 401 && errCode == "invalid_request":
		return gotStrict
	case status == 400 && errCode == "invalid_request":
		return gotInvalid
	}
	return fmt.Sprintf("%d %s", status, errCode)
}

func TestHostilePathsGRPC(t *testing.T) {
	f := newFixtureFrom(t, trustYAML, tokencache.Options{})
	for _, tt := range hostilePaths {
		t.Run(tt.path, func(t *testing.T) {
			r := read(t, f.check(checkRequest("", "api.example.com", tt.path, nil)))
			if got := wantOf(r.status, r.body["error"], r.headers["x-client"]); got != tt.want {
				t.Errorf("got %s (%d %v), want %s", got, r.status, r.body, tt.want)
			}
			if tt.want == gotInvalid && r.grpc != codes.InvalidArgument {
				t.Errorf("gRPC code %v, want InvalidArgument", r.grpc)
			}
		})
	}
}

// TestHostilePathsHTTP sends each path as the proxies do: as the check's
// own path (Envoy http_service, Istio envoyExtAuthzHttp), as X-Original-URI
// (nginx auth_request) and as X-Forwarded-Uri (Traefik forwardAuth, Caddy
// forward_auth). Requests are written byte for byte, as a proxy passes them.
func TestHostilePathsHTTP(t *testing.T) {
	f := newFixtureFrom(t, trustYAML, tokencache.Options{})
	modes := httpModes(t, f.srv)
	for _, m := range modes {
		for _, tt := range hostilePaths {
			for _, via := range []string{"path", "X-Original-URI", "X-Forwarded-Uri"} {
				t.Run(m.name+" "+via+" "+tt.path, func(t *testing.T) {
					target, headers := tt.path, map[string]string{}
					if via != "path" {
						target, headers[via] = "/check", tt.path
					}
					status, h, body := rawHTTP(t, m.addr, target, headers)
					// The HTTP server itself refuses some request lines (a
					// malformed escape) with a plain 400; nothing reaches a
					// policy either.
					if got := wantOf(status, body["error"], h.Get("X-Client")); got != tt.want && !(status == 400 && tt.want == gotInvalid && via == "path") {
						t.Errorf("got %s (%d %v), want %s", got, status, body, tt.want)
					}
				})
			}
		}
	}
}

// rawHTTP sends GET target with headers over a new connection, written as
// it is, and reads the answer.
func rawHTTP(t *testing.T, addr, target string, headers map[string]string) (int, http.Header, map[string]string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n", target)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body map[string]string
	_ = json.Unmarshal(data, &body)
	return resp.StatusCode, resp.Header, body
}

// TestHTTPModePolicySelection: callers never choose their policy. A header
// names one only when the configuration says which, the path's policy
// cannot be reached or left through dot segments, and two original paths
// must agree.
func TestHTTPModePolicySelection(t *testing.T) {
	plain := newFixtureFrom(t, trustYAML, tokencache.Options{})
	withHeader := newFixtureFrom(t, trustYAML+"server: {http: {policyHeader: X-Extauthz-Policy}}\n", tokencache.Options{})
	noPath := newFixtureFrom(t, trustYAML+"server: {http: {policyFromPath: false}}\n", tokencache.Options{})
	tests := []struct {
		name    string
		f       *fixture
		target  string
		headers map[string]string
		multi   [][2]string // headers sent more than once
		want    string
	}{
		{name: "a caller's policy header is ignored", f: plain, target: "/check",
			headers: map[string]string{"X-Extauthz-Policy": "partner", "X-Original-URI": "/admin/users"}, want: gotStrict},
		{name: "and so without any route", f: plain, target: "/",
			headers: map[string]string{"X-Extauthz-Policy": "partner"}, want: gotStrict},
		{name: "the configured header names the policy", f: withHeader, target: "/check",
			headers: map[string]string{"X-Extauthz-Policy": "partner", "X-Original-URI": "/admin/users"}, want: gotPartner},
		{name: "the configured header, twice", f: withHeader, target: "/check",
			multi: [][2]string{{"X-Extauthz-Policy", "partner"}, {"X-Extauthz-Policy", "strict"}}, want: gotInvalid},
		{name: "the path wins over the header", f: withHeader, target: "/policy/strict",
			headers: map[string]string{"X-Extauthz-Policy": "partner"}, want: gotStrict},
		{name: "the path names the policy", f: plain, target: "/policy/partner/orders/1", want: gotPartner},
		{name: "the path's policy with the original path after it", f: plain, target: "/policy/partner/../partner/x", want: gotPartner},
		{name: "dot segments out of the path's policy", f: plain, target: "/policy/partner/../../admin/users", want: gotInvalid},
		{name: "dot segments into a policy", f: plain, target: "/admin/../policy/partner/x", want: gotInvalid},
		{name: "dot segments from one policy to another", f: plain, target: "/policy/strict/../partner/x", want: gotInvalid},
		{name: "an encoded policy name", f: plain, target: "/policy/%70artner/x", want: gotInvalid},
		{name: "an empty policy name", f: plain, target: "/policy//partner", want: gotInvalid},
		{name: "original paths that agree", f: plain, target: "/check",
			headers: map[string]string{"X-Original-URI": "/public/x", "X-Forwarded-Uri": "/public/./x?y"}, want: gotPartner},
		{name: "original paths that disagree", f: plain, target: "/check",
			headers: map[string]string{"X-Original-URI": "/admin/users", "X-Forwarded-Uri": "/public/x"}, want: gotInvalid},
		{name: "policyFromPath off: the path is a path", f: noPath, target: "/policy/partner/x", want: gotStrict},
		{name: "policyFromPath off: the path routes", f: noPath, target: "/public/x", want: gotPartner},
		{name: "an original path given twice", f: plain, target: "/check",
			multi: [][2]string{{"X-Forwarded-Uri", "/admin/users"}, {"X-Forwarded-Uri", "/public/x"}}, want: gotInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := tt.headers
			if headers == nil {
				headers = map[string]string{}
			}
			target := tt.target
			for i, h := range tt.multi {
				// rawHTTP takes a map: the second value rides in a header
				// line of its own, written into the first's value.
				if i == 0 {
					headers[h[0]] = h[1]
				} else {
					headers[h[0]] += "\r\n" + h[0] + ": " + h[1]
				}
			}
			for _, m := range httpModes(t, tt.f.srv) {
				status, h, body := rawHTTP(t, m.addr, target, headers)
				if got := wantOf(status, body["error"], h.Get("X-Client")); got != tt.want {
					t.Errorf("%s: got %s (%d %v), want %s", m.name, got, status, body, tt.want)
				}
			}
		})
	}
}

// TestPolicyHeaderMeansNothingToGRPC: gRPC mode selects by context
// extensions and routes only, whatever headers the caller sends.
func TestPolicyHeaderMeansNothingToGRPC(t *testing.T) {
	f := newFixtureFrom(t, trustYAML+"server: {http: {policyHeader: X-Extauthz-Policy}}\n", tokencache.Options{})
	r := read(t, f.check(checkRequest("", "api.example.com", "/admin/users", map[string]string{"x-extauthz-policy": "partner"})))
	if got := wantOf(r.status, r.body["error"], r.headers["x-client"]); got != gotStrict {
		t.Errorf("got %s (%d %v), want strict", got, r.status, r.body)
	}
}

// manualClock is a clock a test moves.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestFailureBudget floods one client id with distinct wrong secrets: the
// IdP hears five of them, the client's own secret keeps working even with
// its token gone, other client ids are not affected, a purge of the client
// gives it a fresh budget, and a minute later the id is heard again.
func TestFailureBudget(t *testing.T) {
	clk := &manualClock{t: time.Now()}
	m := metrics.New(prometheus.NewRegistry())
	f := newFixtureFrom(t, trustYAML, tokencache.Options{Now: clk.Now, Metrics: m})
	f.idp.AddClient("other-app", testidp.Client{Secret: "0ther", Claims: map[string]any{"grp": "admin"}})
	check := func(id, secret string) result {
		t.Helper()
		return read(t, f.check(checkRequest("", "api.example.com", "/admin/users", map[string]string{"authorization": basic(id, secret)})))
	}
	if r := check("orders-app", "s3cret"); r.status != 200 {
		t.Fatalf("the legitimate client: %d %v", r.status, r.body)
	}
	// Its token goes (as after a restart, or once it expired): the IdP
	// accepted its secret all the same.
	if _, err := f.builder.Purge(context.Background(), "strict", "orders-app"); err != nil {
		t.Fatal(err)
	}

	const flood = 128
	before := f.idp.Requests()
	var wg sync.WaitGroup
	results := make(chan result, flood)
	for i := range flood {
		wg.Go(func() { results <- check("orders-app", fmt.Sprintf("guess-%d", i)) })
	}
	wg.Wait()
	close(results)
	refused := 0
	for r := range results {
		if r.status != 401 || r.body["error"] != "invalid_client" || r.headers["www-authenticate"] != `Basic realm="strict"` {
			t.Errorf("a wrong secret got %d %v %v", r.status, r.body, r.headers)
		}
		if r.headers["retry-after"] != "" {
			refused++
			if s, _ := strconv.Atoi(r.headers["retry-after"]); s < 1 || s > 60 {
				t.Errorf("Retry-After %q, want up to a minute", r.headers["retry-after"])
			}
		}
	}
	if n := f.idp.Requests() - before; n != 5 {
		t.Errorf("%d distinct wrong secrets made %d token requests, want 5", flood, n)
	}
	if refused != flood-5 {
		t.Errorf("%d refused locally, want %d", refused, flood-5)
	}
	if got := testutil.ToFloat64(m.IdPRefusals.WithLabelValues("strict", tokencache.ReasonFailureBudget)); got != flood-5 {
		t.Errorf("refusals metric %v, want %d", got, flood-5)
	}

	// During the lock-out: a secret the IdP accepted works though its
	// token is gone, and once cached is served; other ids are heard.
	if r := check("orders-app", "s3cret"); r.status != 200 || r.meta["token_cache"] != "miss" {
		t.Errorf("the legitimate client, its token gone: %d %v %q", r.status, r.body, r.meta["token_cache"])
	}
	if r := check("orders-app", "s3cret"); r.status != 200 || r.meta["token_cache"] != "hit" {
		t.Errorf("the legitimate client during the flood: %d %v %q", r.status, r.body, r.meta["token_cache"])
	}
	if r := check("other-app", "0ther"); r.status != 200 {
		t.Errorf("another client id during the flood: %d %v", r.status, r.body)
	}
	// A secret the IdP never accepted (here: just rotated) waits for the window.
	f.idp.AddClient("orders-app", testidp.Client{Secret: "n3w", Claims: map[string]any{"grp": "admin"}})
	before = f.idp.Requests()
	if r := check("orders-app", "n3w"); r.status != 401 || r.headers["retry-after"] == "" {
		t.Errorf("an unknown secret during the lock-out: %d %v %v", r.status, r.body, r.headers)
	}
	if n := f.idp.Requests() - before; n != 0 {
		t.Errorf("the refused secret made %d token requests", n)
	}
	clk.Add(61 * time.Second)
	if r := check("orders-app", "n3w"); r.status != 200 {
		t.Errorf("the new secret after the window: %d %v", r.status, r.body)
	}

	// Locked out again; the operator purges the client: a fresh budget.
	for i := range 5 {
		check("orders-app", fmt.Sprintf("again-%d", i))
	}
	f.idp.AddClient("orders-app", testidp.Client{Secret: "n3wer", Claims: map[string]any{"grp": "admin"}})
	if r := check("orders-app", "n3wer"); r.status != 401 || r.headers["retry-after"] == "" {
		t.Errorf("a rotated secret during the second lock-out: %d %v %v", r.status, r.body, r.headers)
	}
	if _, err := f.builder.Purge(context.Background(), "strict", "orders-app"); err != nil {
		t.Fatal(err)
	}
	if r := check("orders-app", "n3wer"); r.status != 200 {
		t.Errorf("the rotated secret after the operator's purge: %d %v", r.status, r.body)
	}
}

// TestBulkhead floods the token endpoint with distinct client ids: no more
// requests than the bound are under way at once, and the rest are answered
// 503 at their caller's deadline without reaching the IdP.
func TestBulkhead(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	yaml := strings.ReplaceAll(trustYAML, "    url: {{url}}\n", "    url: {{url}}\n    clientConfig: {maxConcurrentRequests: 2}\n")
	f := newFixtureFrom(t, yaml, tokencache.Options{Metrics: m})
	f.idp.SetBehavior(testidp.Behavior{Latency: 400 * time.Millisecond})
	const flood = 20
	var wg sync.WaitGroup
	statuses := make(chan result, flood)
	for i := range flood {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			resp, err := f.srv.Check(ctx, checkRequest("", "api.example.com", "/admin/x", map[string]string{"authorization": basic(fmt.Sprintf("client-%d", i), "s")}))
			if err != nil {
				t.Error(err)
				return
			}
			statuses <- read(t, resp)
		})
	}
	wg.Wait()
	close(statuses)
	for r := range statuses {
		if r.status != 503 || r.body["error"] != "temporarily_unavailable" {
			t.Errorf("a flooded check got %d %v, want 503 temporarily_unavailable", r.status, r.body)
		}
	}
	// The two requests that got a slot finish; nothing else follows them.
	waitFor(t, func() bool {
		return testutil.ToFloat64(m.IdPRefusals.WithLabelValues("strict", tokencache.ReasonAbandoned)) == flood-2
	})
	waitFor(t, func() bool { return f.idp.Requests() == 2 })
	if p := f.idp.PeakConcurrency(); p != 2 {
		t.Errorf("the IdP answered %d requests at once, want 2", p)
	}
}

// panicTokens is a token source that panics: a fault no real part can be
// made to cause.
type panicTokens struct{ *tokencache.Cache }

func (panicTokens) Token(context.Context, *tokencache.Endpoint, tokencache.Key, idp.Credentials) (*tokencache.Token, tokencache.Source, error) {
	panic("token source failed")
}

// TestPanicIsDenied: a Check that panics is denied 500 and logged, over a
// real gRPC server with the interceptors serve wires, and in HTTP mode;
// both keep serving.
func TestPanicIsDenied(t *testing.T) {
	f := newFixtureFrom(t, trustYAML, tokencache.Options{})
	srv, _ := serve(t, f.cfg, f.cache, Options{Tokens: panicTokens{f.cache}, Logger: f.srv.log})
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(srv.UnaryInterceptor), grpc.ChainStreamInterceptor(srv.StreamInterceptor))
	authv3.RegisterAuthorizationServer(gs, srv)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for range 2 {
		resp, err := client.Check(context.Background(), checkRequest("", "api.example.com", "/public/x", nil))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		r := read(t, resp)
		if r.status != 500 || r.grpc != codes.Internal || r.body["error"] != "server_error" {
			t.Errorf("a panicking check: %d %v %v", r.status, r.grpc, r.body)
		}
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("the server stopped serving: %v", err)
	}
	if n := f.logs.FilterMessage("panic while answering; denied, and serving on").Len(); n != 2 {
		t.Errorf("%d panic log lines, want 2", n)
	}

	for _, m := range httpModes(t, srv) {
		for range 2 {
			status, _, body := rawHTTP(t, m.addr, "/policy/partner", nil)
			if status != 500 || body["error"] != "server_error" {
				t.Errorf("HTTP mode (%s), a panicking check: %d %v", m.name, status, body)
			}
		}
	}
}

// FuzzRouteSelection checks that a route is chosen only for a path whose
// normal form starts with its prefix, the first such route, in both modes.
func FuzzRouteSelection(f *testing.F) {
	for _, p := range hostilePaths {
		f.Add(p.path)
	}
	st := stateOf(f, `
routes:
  - {pathPrefix: "/public/", policy: partner}
  - {pathPrefix: "/admin/", policy: strict}
  - {pathPrefix: "/a/b", policy: ab}
defaultPolicy: strict
policies:
  partner: {url: "https://idp.invalid/token", clientID: gw, clientSecret: s}
  strict: {url: "https://idp.invalid/token"}
  ab: {url: "https://idp.invalid/token"}
`)
	want := func(norm string) *policy {
		for _, r := range st.routes {
			if strings.HasPrefix(norm, r.pathPrefix) {
				return r.policy
			}
		}
		return st.defaultPolicy
	}
	f.Fuzz(func(t *testing.T, raw string) {
		norm, err := urlpath.Normalize(raw)
		if err == nil {
			in := &grpcInput{attrs: &authv3.AttributeContext{}, req: &authv3.AttributeContext_HttpRequest{}, normPath: norm}
			if p, _ := st.selectPolicy(in); p != want(norm) {
				t.Fatalf("gRPC mode: %q (normal form %q) selected %v", raw, norm, p.name)
			}
		}
		// HTTP mode, as the check's own path and as X-Forwarded-Uri.
		for _, r := range []*http.Request{
			{RequestURI: raw, Header: http.Header{}},
			{RequestURI: "/check", Header: http.Header{"X-Forwarded-Uri": {raw}}},
		} {
			if !strings.HasPrefix(r.RequestURI, "/") {
				continue
			}
			in := &httpInput{r: r}
			if in.parse(true, "") != nil {
				continue
			}
			p, err := st.selectPolicy(in)
			if in.policy != "" {
				if !strings.HasPrefix(raw, policyPathPrefix+in.policy) ||
					!strings.HasPrefix(in.normPath, policyPathPrefix+in.policy) {
					t.Fatalf("HTTP mode: %q named policy %q", raw, in.policy)
				}
				continue
			}
			if err == nil && p != want(in.normPath) {
				t.Fatalf("HTTP mode: %q (normal form %q) selected %v", raw, in.normPath, p.name)
			}
		}
	})
}

// hostYAML routes api.example.com to application mode and everything else
// to the gateway's own token: a host that missed the route would get the
// gateway's token without credentials.
const hostYAML = `
secrets: {dir: "{{secrets}}"}
routes:
  - {host: "API.example.com", policy: strict}
  - {host: "*.bücher.example", policy: strict}
  - {host: "admin.example.com:8443", policy: strict}
  - {host: "pay.example.com:443", policy: strict}
defaultPolicy: partner
policies:
  partner:
    url: {{url}}
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    forwardHeaders: {X-Client: client_id}
  strict:
    url: {{url}}
`

var hostileHosts = []struct{ host, want string }{
	{"api.example.com", gotStrict},
	{"api.example.com.", gotStrict},
	{"API.Example.COM", gotStrict},
	{"api.example.com.:443", gotStrict},
	{"api.example.com:443", gotStrict},
	{"shop.bücher.example", gotStrict},
	{"shop.xn--bcher-kva.example", gotStrict},
	{"SHOP.BÜCHER.EXAMPLE.", gotStrict},
	{"admin.example.com:8443", gotStrict},
	{"admin.example.com.:8443", gotStrict},
	{"admin.example.com", gotPartner},
	{"admin.example.com:443", gotPartner},
	{"admin.example.com:08443", gotStrict},
	{"pay.example.com:443", gotStrict},
	{"pay.example.com:0443", gotStrict},
	{"PAY.example.com.:000443", gotStrict},
	{"pay.example.com:4430", gotPartner},
	{"pay.example.com:44300", gotPartner},
	{"pay.example.com:0", gotInvalid},
	{"pay.example.com:65979", gotInvalid},
	{"pay.example.com:0x1bb", gotInvalid},
	{"pay.example.com:443:443", gotInvalid},
	{"other.example.com", gotPartner},
	{"api.example.com..", gotInvalid},
	{"api.example.com, other.example.com", gotInvalid},
	{"api.example.com:https", gotInvalid},
	{"api example.com", gotInvalid},
}

func TestHostileHostsGRPC(t *testing.T) {
	f := newFixtureFrom(t, hostYAML, tokencache.Options{})
	for _, tt := range hostileHosts {
		t.Run(tt.host, func(t *testing.T) {
			r := read(t, f.check(checkRequest("", tt.host, "/", nil)))
			if got := wantOf(r.status, r.body["error"], r.headers["x-client"]); got != tt.want {
				t.Errorf("got %s (%d %v), want %s", got, r.status, r.body, tt.want)
			}
		})
	}
}

// TestHostileHostsHTTP sends each host as X-Forwarded-Host, and as the
// check's own Host.
func TestHostileHostsHTTP(t *testing.T) {
	f := newFixtureFrom(t, hostYAML, tokencache.Options{})
	modes := httpModes(t, f.srv)
	for _, tt := range hostileHosts {
		t.Run(tt.host, func(t *testing.T) {
			for _, m := range modes {
				status, h, body := rawHTTP(t, m.addr, "/", map[string]string{"X-Forwarded-Host": tt.host})
				if got := wantOf(status, body["error"], h.Get("X-Client")); got != tt.want {
					t.Errorf("%s, X-Forwarded-Host: got %s (%d %v), want %s", m.name, got, status, body, tt.want)
				}
			}
			req := &http.Request{Method: "GET", RequestURI: "/", URL: &url.URL{Path: "/"}, Host: tt.host, Header: http.Header{}}
			rec := httptest.NewRecorder()
			f.srv.ServeHTTP(rec, req)
			var b map[string]string
			_ = json.Unmarshal(rec.Body.Bytes(), &b)
			if got := wantOf(rec.Code, b["error"], rec.Header().Get("X-Client")); got != tt.want {
				t.Errorf("Host: got %s (%d %v), want %s", got, rec.Code, b, tt.want)
			}
		})
	}
}

// stateOf is the decision state of a configuration, for fuzz targets that
// select policies without serving.
func stateOf(f *testing.F, yaml string) *state {
	f.Helper()
	cfg, err := config.Parse([]byte(yaml), "")
	if err != nil {
		f.Fatal(err)
	}
	cache := tokencache.New(tokencache.Options{MaxEntries: 10})
	srv, _ := serve(f, cfg, cache, Options{Tokens: cache})
	return srv.state.Load()
}

// FuzzHostSpellings checks that every spelling of a host and port selects
// what its normal form selects, so that no spelling misses a host route
// and falls to another policy: upper case, a trailing dot, leading zeros in
// the port, and the scheme's default port written out or left out. A host
// that cannot be read as one name is refused, never routed.
func FuzzHostSpellings(f *testing.F) {
	for _, h := range hostileHosts {
		f.Add(h.host, "https", uint8(1), true)
	}
	f.Add("pay.example.com", "https", uint8(0), false)
	f.Add("pay.example.com", "http", uint8(2), true)
	f.Add("[::1]", "http", uint8(3), false)
	st := stateOf(f, `
routes:
  - {host: "API.example.com", policy: strict}
  - {host: "*.bücher.example", policy: strict}
  - {host: "admin.example.com:8443", policy: strict}
  - {host: "pay.example.com:443", policy: pay}
  - {host: "[::1]:80", policy: pay}
  - {host: "10.0.0.1:8080", policy: pay}
defaultPolicy: partner
policies:
  partner: {url: "https://idp.invalid/token", clientID: gw, clientSecret: s}
  strict: {url: "https://idp.invalid/token"}
  pay: {url: "https://idp.invalid/token"}
`)
	selected := func(host, scheme string) string {
		in := &grpcInput{attrs: &authv3.AttributeContext{}, req: &authv3.AttributeContext_HttpRequest{Host: host, Scheme: scheme}, normPath: "/"}
		p, err := st.selectPolicy(in)
		switch {
		case errors.Is(err, errAmbiguousHost):
			return "refused"
		case err != nil:
			return err.Error()
		}
		return p.name
	}
	f.Fuzz(func(t *testing.T, raw, scheme string, zeros uint8, upper bool) {
		got := selected(raw, scheme)
		host, port, err := hostname.Normalize(raw)
		if err != nil {
			if got != "refused" {
				t.Fatalf("%q cannot be read as one name (%v) but selected %s", raw, err, got)
			}
			return
		}
		if host == "" {
			return
		}
		if port == "" {
			port = hostname.DefaultPort(scheme)
		}
		spellings := []string{host}
		if port != "" {
			spellings[0] += ":" + port
		}
		spelled := host
		if upper {
			spelled = strings.ToUpper(spelled)
			if !strings.HasPrefix(spelled, "[") {
				spelled += "."
			}
		}
		if port != "" {
			spelled += ":" + strings.Repeat("0", int(zeros%8)) + port
		}
		if port == hostname.DefaultPort(scheme) {
			spellings = append(spellings, strings.TrimSuffix(spelled, ":"+strings.Repeat("0", int(zeros%8))+port))
		}
		for _, s := range append(spellings, spelled) {
			if other := selected(s, scheme); other != got {
				t.Fatalf("%q over %q selected %s, but %q, the same host and port, selected %s", raw, scheme, got, s, other)
			}
		}
	})
}
