package authz

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/builder"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// fixture is a Server wired to a real test IdP and a real token cache.
type fixture struct {
	t       *testing.T
	idp     *testidp.Server
	srv     *Server
	cfg     *config.Config
	yaml    string // cfg's source, with the IdP's addresses in it
	logs    *observer.ObservedLogs
	cache   *tokencache.Cache
	builder *builder.Builder
}

const policiesYAML = `
secrets: {dir: "{{secrets}}"}
routes:
  - {host: "api.example.com", pathPrefix: "/reports", policy: reports}
  - {host: "*.internal.example.com", policy: gateway}
  - {header: {X-Tenant: acme}, policy: orders}
policies:
  orders:
    url: {{url}}
    audience: https://api.example.com
    forwardHeaders: {X-Group: grp, X-Exp: exp, X-Areas: areas, X-User: user, X-Missing: nope, X-Evil: evil}
    claims: Equals(` + "`grp`, `admin`" + `)
    usernameClaim: sub
  reports:
    url: {{url}}
    scopes: [reports.read]
  gateway:
    url: {{url}}
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    forwardHeaders: {X-Client: client_id}
  custom-header:
    url: {{url}}
    tokenHeader: X-Access-Token
    tokenPrefix: ""
  wrong-gateway:
    url: {{url}}
    clientID: gw-client
    clientSecret: not-the-secret
  post:
    url: {{url}}
    authMethod: client_secret_post
`

// newFixture starts a test IdP and a Server for policiesYAML and extra.
func newFixture(t *testing.T, extra string) *fixture {
	t.Helper()
	return newFixtureFrom(t, policiesYAML+extra, tokencache.Options{})
}

// newFixtureFrom starts a test IdP and a Server for the configuration
// yaml, in which {{url}}, {{jwks}} and {{issuer}} stand for the IdP's and
// {{secrets}} for a secrets directory holding gw/secret, with a token cache
// of opts (MaxEntries 1000 and the fixture's logger when not set).
func newFixtureFrom(t *testing.T, yaml string, opts tokencache.Options) *fixture {
	t.Helper()
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("orders-app", testidp.Client{Secret: "s3cret", Claims: map[string]any{
		"grp": "admin", "areas": []any{"office", "home"}, "user": map[string]any{"name": "Jo", "id": 7}, "evil": "a\r\nX-Injected: 1",
	}})
	idp.AddClient("viewer-app", testidp.Client{Secret: "v1ewer", Claims: map[string]any{"grp": "viewer"}})
	idp.AddClient("reports-app", testidp.Client{Secret: "r3ports", Scopes: []string{"reports.read"}})
	idp.AddClient("gw-client", testidp.Client{Secret: "gw-s3cret"})
	idp.AddClient("id:with/odd+chars", testidp.Client{Secret: "p@ss:w+rd&=%"})

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "gw"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gw", "secret"), []byte("gw-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml = strings.NewReplacer("{{url}}", idp.TokenURL, "{{jwks}}", idp.JWKSURL, "{{issuer}}", idp.Issuer, "{{secrets}}", dir).Replace(yaml)
	cfg, err := config.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	if opts.MaxEntries == 0 {
		opts.MaxEntries = 1000
	}
	if opts.Logger == nil {
		opts.Logger = log
	}
	cache := tokencache.New(opts)
	t.Cleanup(func() { _ = cache.Close() })
	srv, b := serve(t, cfg, cache, Options{Tokens: cache, Logger: log})
	return &fixture{t: t, idp: idp, srv: srv, cfg: cfg, yaml: yaml, logs: logs, cache: cache, builder: b}
}

// serve starts a Server with o and puts cfg, built over cache, into
// service, as extauthz serve does.
func serve(t testing.TB, cfg *config.Config, cache *tokencache.Cache, o Options) (*Server, *builder.Builder) {
	t.Helper()
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	b := builder.New(builder.Deps{Serve: srv.Update, Cache: cache, Logger: o.Logger, Metrics: o.Metrics, Tracer: o.Tracer, RetryBackoff: time.Millisecond})
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return srv, b
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// checkRequest builds a CheckRequest as Envoy sends it.
func checkRequest(policy, host, path string, headers map[string]string) *authv3.CheckRequest {
	ext := map[string]string{}
	if policy != "" {
		ext["policy"] = policy
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: ext,
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: host, Path: path, Headers: headers,
		}},
	}}
}

func (f *fixture) check(req *authv3.CheckRequest) *authv3.CheckResponse {
	f.t.Helper()
	resp, err := f.srv.Check(context.Background(), req)
	if err != nil {
		f.t.Fatalf("Check: %v", err)
	}
	return resp
}

// result is what a user of a CheckResponse looks at.
type result struct {
	grpc    codes.Code
	status  int               // HTTP status of a denial; 200 for allow
	headers map[string]string // set on the upstream request (allow) or the reply (deny)
	removed []string
	body    map[string]string
	meta    map[string]string
}

func read(t testing.TB, resp *authv3.CheckResponse) result {
	t.Helper()
	r := result{grpc: codes.Code(resp.GetStatus().GetCode()), headers: map[string]string{}, meta: map[string]string{}}
	var opts []*corev3.HeaderValueOption
	if ok := resp.GetOkResponse(); ok != nil {
		r.status = 200
		opts = ok.GetHeaders()
		r.removed = ok.GetHeadersToRemove()
	} else if d := resp.GetDeniedResponse(); d != nil {
		r.status = int(d.GetStatus().GetCode())
		opts = d.GetHeaders()
		if err := json.Unmarshal([]byte(d.GetBody()), &r.body); err != nil {
			t.Fatalf("denial body %q: %v", d.GetBody(), err)
		}
	}
	for _, o := range opts {
		//lint:ignore SA1019 the deprecated append must be set for old Envoys.
		appendValue := o.GetAppend()
		if appendValue == nil || appendValue.GetValue() || o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s does not replace: append %v, append_action %v", o.GetHeader().GetKey(), appendValue, o.GetAppendAction())
		}
		r.headers[strings.ToLower(o.GetHeader().GetKey())] = o.GetHeader().GetValue()
	}
	for k, v := range resp.GetDynamicMetadata().GetFields() {
		r.meta[k] = v.GetStringValue()
	}
	return r
}

func TestAllowApplicationMode(t *testing.T) {
	f := newFixture(t, "")
	resp := f.check(checkRequest("orders", "api.example.com", "/orders", map[string]string{
		"authorization": basic("orders-app", "s3cret"), "x-group": "spoofed",
	}))
	r := read(t, resp)
	if r.grpc != codes.OK || r.status != 200 {
		t.Fatalf("got %v %d %v, want OK", r.grpc, r.status, r.body)
	}
	token, ok := strings.CutPrefix(r.headers["authorization"], "Bearer ")
	if !ok || strings.Count(token, ".") != 2 {
		t.Fatalf("authorization = %q, want a Bearer JWT", r.headers["authorization"])
	}
	want := map[string]string{
		"x-group": "admin", "x-areas": "office,home", "x-user": `{"id":7,"name":"Jo"}`, "x-missing": "", "x-evil": "",
	}
	for k, v := range want {
		if got, ok := r.headers[k]; !ok || got != v {
			t.Errorf("header %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if exp := r.headers["x-exp"]; len(exp) != 10 || strings.ContainsAny(exp, ".e") {
		t.Errorf("x-exp = %q, want plain integer seconds", exp)
	}
	wantMeta := map[string]string{"policy": "orders", "client_id": "orders-app", "clientusername": "orders-app", "token_cache": "miss"}
	for k, v := range wantMeta {
		if r.meta[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, r.meta[k], v)
		}
	}
	if len(r.removed) != 0 {
		t.Errorf("headers_to_remove = %v, want none: the token replaces Authorization", r.removed)
	}

	// The second check is served from the cache, with the same token.
	r2 := read(t, f.check(checkRequest("orders", "api.example.com", "/orders", map[string]string{"authorization": basic("orders-app", "s3cret")})))
	if r2.meta["token_cache"] != "hit" || r2.headers["authorization"] != r.headers["authorization"] {
		t.Errorf("second check: token_cache %q, same token %v", r2.meta["token_cache"], r2.headers["authorization"] == r.headers["authorization"])
	}
	if n := f.idp.Requests(); n != 1 {
		t.Errorf("IdP saw %d requests, want 1", n)
	}
	got := f.idp.Log()[0]
	if got.AuthMethod != "client_secret_basic" || got.Form.Get("audience") != "https://api.example.com" || got.Form.Get("grant_type") != "client_credentials" {
		t.Errorf("token request: %+v", got)
	}
}

func TestDecisions(t *testing.T) {
	tests := []struct {
		name       string
		behavior   testidp.Behavior
		give       *authv3.CheckRequest
		wantStatus int
		wantError  string            // "error" in the denial body
		wantHeader map[string]string // on the upstream request or the reply
		wantMeta   map[string]string
	}{
		{
			name:       "no policy at all",
			give:       checkRequest("", "other.example.com", "/", nil),
			wantStatus: 403, wantError: "no_policy",
			wantHeader: map[string]string{"content-type": "application/json"},
			wantMeta:   map[string]string{"error": "no_policy"},
		},
		{
			name:       "context extension names an unknown policy",
			give:       checkRequest("nope", "api.example.com", "/reports", nil),
			wantStatus: 403, wantError: "no_policy",
		},
		{
			name:       "application mode without credentials",
			give:       checkRequest("orders", "api.example.com", "/", nil),
			wantStatus: 401, wantError: "invalid_request",
			wantHeader: map[string]string{"www-authenticate": `Basic realm="orders"`, "content-type": "application/json"},
			wantMeta:   map[string]string{"policy": "orders", "error": "invalid_request"},
		},
		{
			name:       "bearer instead of basic",
			give:       checkRequest("orders", "h", "/", map[string]string{"authorization": "Bearer abc"}),
			wantStatus: 401, wantError: "invalid_request",
			wantHeader: map[string]string{"www-authenticate": `Basic realm="orders"`},
		},
		{
			name:       "malformed base64",
			give:       checkRequest("orders", "h", "/", map[string]string{"authorization": "Basic !!!"}),
			wantStatus: 401, wantError: "invalid_request",
		},
		{
			name:       "wrong secret",
			give:       checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "wrong")}),
			wantStatus: 401, wantError: "invalid_client",
			wantHeader: map[string]string{"www-authenticate": `Basic realm="orders"`},
			wantMeta:   map[string]string{"client_id": "orders-app", "policy": "orders"},
		},
		{
			name:       "claims expression false",
			give:       checkRequest("orders", "h", "/", map[string]string{"authorization": basic("viewer-app", "v1ewer")}),
			wantStatus: 403, wantError: "insufficient_claims",
		},
		{
			name:       "gateway mode needs no caller credentials",
			give:       checkRequest("gateway", "h", "/", nil),
			wantStatus: 200,
			wantHeader: map[string]string{"x-client": "gw-client"},
			wantMeta:   map[string]string{"client_id": "gw-client", "policy": "gateway"},
		},
		{
			name:       "gateway mode with rejected credentials",
			give:       checkRequest("wrong-gateway", "h", "/", nil),
			wantStatus: 502, wantError: "upstream_credentials_rejected",
		},
		{
			name:       "client_secret_post and form-urlencoded credentials",
			give:       checkRequest("post", "h", "/", map[string]string{"authorization": basic("id%3Awith%2Fodd%2Bchars", "p%40ss%3Aw%2Brd%26%3D%25")}),
			wantStatus: 200,
			wantMeta:   map[string]string{"client_id": "id:with/odd+chars"},
		},
		{
			name:       "scopes are sent",
			give:       checkRequest("reports", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}),
			behavior:   testidp.Behavior{},
			wantStatus: 200, // orders-app may ask for any scope
		},
		{
			name: "invalid_scope from the endpoint",
			give: checkRequest("reports", "h", "/", map[string]string{"authorization": basic("viewer-app", "v1ewer")}),
			behavior: testidp.Behavior{
				FailStatus: 400, FailCode: "invalid_scope",
			},
			wantStatus: 403, wantError: "access_denied",
		},
		{
			name:       "endpoint down",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{FailStatus: 503},
			wantStatus: 503, wantError: "temporarily_unavailable",
		},
		{
			name:       "endpoint rate limits with Retry-After",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{FailStatus: 429, RetryAfter: "120"},
			wantStatus: 503, wantError: "temporarily_unavailable",
			wantHeader: map[string]string{"retry-after": "120"},
		},
		{
			name:       "endpoint recovers within the retries",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{FailStatus: 502, FailFirst: 2},
			wantStatus: 200,
		},
		{
			name:       "opaque token where claims are needed",
			give:       checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}),
			behavior:   testidp.Behavior{Answer: testidp.AnswerOpaque},
			wantStatus: 502, wantError: "invalid_token_response",
		},
		{
			name:       "opaque token where no claims are needed",
			give:       checkRequest("post", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}),
			behavior:   testidp.Behavior{Answer: testidp.AnswerOpaque},
			wantStatus: 200,
		},
		{
			name:       "answer without access_token",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{Answer: testidp.AnswerNoAccessToken},
			wantStatus: 502, wantError: "invalid_token_response",
		},
		{
			name:       "answer that is not JSON",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{Answer: testidp.AnswerBadJSON},
			wantStatus: 502, wantError: "invalid_token_response",
		},
		{
			name:       "answer over 1 MiB",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{Answer: testidp.AnswerHuge},
			wantStatus: 502, wantError: "invalid_token_response",
		},
		{
			name:       "token_type that is not Bearer",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{Answer: testidp.AnswerMACTokenType},
			wantStatus: 502, wantError: "invalid_token_response",
		},
		{
			name:       "error body with status 200",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{Answer: testidp.AnswerErrorIn200},
			wantStatus: 502, wantError: "invalid_token_response",
		},
		{
			name:       "no token_type, expires_in as a string",
			give:       checkRequest("gateway", "h", "/", nil),
			behavior:   testidp.Behavior{Answer: testidp.AnswerStringExpiresIn},
			wantStatus: 200,
		},
		{
			name:       "custom token header removes the caller's credentials",
			give:       checkRequest("custom-header", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}),
			wantStatus: 200,
		},
		{
			name:       "route by host and path prefix",
			give:       checkRequest("", "API.example.com:443", "/reports/2024", map[string]string{"authorization": basic("reports-app", "r3ports")}),
			wantStatus: 200,
			wantMeta:   map[string]string{"policy": "reports"},
		},
		{
			name:       "route by host suffix",
			give:       checkRequest("", "billing.internal.example.com", "/", nil),
			wantStatus: 200,
			wantMeta:   map[string]string{"policy": "gateway"},
		},
		{
			name:       "route by header",
			give:       checkRequest("", "h", "/", map[string]string{"x-tenant": "acme"}),
			wantStatus: 401, wantError: "invalid_request",
			wantMeta: map[string]string{"policy": "orders"},
		},
		{
			name: "headers from header_map, any case",
			give: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				ContextExtensions: map[string]string{"policy": "orders"},
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
					HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
						{Key: "Authorization", RawValue: []byte(basic("orders-app", "s3cret"))},
					}},
				}},
			}},
			wantStatus: 200,
		},
		{
			name:       "mixed-case header names from hand-written requests",
			give:       checkRequest("orders", "h", "/", map[string]string{"Authorization": basic("orders-app", "s3cret")}),
			wantStatus: 200,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "defaultPolicy: \n")
			f.idp.SetBehavior(tt.behavior)
			r := read(t, f.check(tt.give))
			if r.status != tt.wantStatus || r.body["error"] != tt.wantError {
				t.Fatalf("got %d %v, want %d %q", r.status, r.body, tt.wantStatus, tt.wantError)
			}
			wantGRPC := map[int]codes.Code{200: codes.OK, 401: codes.Unauthenticated, 403: codes.PermissionDenied, 502: codes.Unavailable, 503: codes.Unavailable}[tt.wantStatus]
			if r.grpc != wantGRPC {
				t.Errorf("gRPC code %v, want %v", r.grpc, wantGRPC)
			}
			if tt.wantError != "" && (r.body["error_description"] == "" || len(r.body) != 2) {
				t.Errorf("body %v, want error and error_description only", r.body)
			}
			for k, v := range tt.wantHeader {
				if r.headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, r.headers[k], v)
				}
			}
			for k, v := range tt.wantMeta {
				if r.meta[k] != v {
					t.Errorf("metadata %s = %q, want %q", k, r.meta[k], v)
				}
			}
			if r.status == 200 {
				return
			}
			if _, ok := r.headers["www-authenticate"]; ok != (r.status == 401) {
				t.Errorf("WWW-Authenticate present %v on a %d", ok, r.status)
			}
		})
	}
}

func TestCustomTokenHeader(t *testing.T) {
	f := newFixture(t, "")
	r := read(t, f.check(checkRequest("custom-header", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")})))
	if r.status != 200 {
		t.Fatalf("status %d %v", r.status, r.body)
	}
	if tok := r.headers["x-access-token"]; strings.Count(tok, ".") != 2 || strings.HasPrefix(tok, "Bearer") {
		t.Errorf("x-access-token = %q, want the bare JWT", tok)
	}
	if len(r.removed) != 1 || r.removed[0] != "authorization" {
		t.Errorf("headers_to_remove = %v, want the caller's authorization", r.removed)
	}
}

func TestScopesReachTheEndpoint(t *testing.T) {
	f := newFixture(t, "")
	r := read(t, f.check(checkRequest("reports", "h", "/", map[string]string{"authorization": basic("reports-app", "r3ports")})))
	if r.status != 200 {
		t.Fatalf("status %d %v", r.status, r.body)
	}
	if got := f.idp.Log()[0].Form.Get("scope"); got != "reports.read" {
		t.Errorf("scope = %q", got)
	}
}

func TestMalformedCheckRequest(t *testing.T) {
	f := newFixture(t, "")
	for _, req := range []*authv3.CheckRequest{nil, {}, {Attributes: &authv3.AttributeContext{}}} {
		_, err := f.srv.Check(context.Background(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Check(%v) error %v, want InvalidArgument", req, err)
		}
	}
}

func TestConcurrentColdChecksMakeOneRequest(t *testing.T) {
	f := newFixture(t, "")
	f.idp.SetBehavior(testidp.Behavior{Latency: 50 * time.Millisecond})
	const n = 1000
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			resp, err := f.srv.Check(context.Background(), checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}))
			if err != nil {
				t.Error(err)
				return
			}
			if resp.GetOkResponse() == nil {
				codes <- int(resp.GetDeniedResponse().GetStatus().GetCode())
				return
			}
			codes <- 200
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a check got %d", c)
		}
	}
	if got := f.idp.Requests(); got != 1 {
		t.Errorf("%d concurrent cold checks made %d token requests, want 1", n, got)
	}
}

func TestCachedTokensOutliveAnOutage(t *testing.T) {
	f := newFixture(t, "")
	warm := checkRequest("gateway", "h", "/", nil)
	if r := read(t, f.check(warm)); r.status != 200 {
		t.Fatalf("warm-up: %d", r.status)
	}
	f.idp.SetBehavior(testidp.Behavior{FailStatus: 503})
	if r := read(t, f.check(warm)); r.status != 200 || r.meta["token_cache"] != "hit" {
		t.Errorf("cached client during the outage: %d, %q", r.status, r.meta["token_cache"])
	}
	cold := checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")})
	if r := read(t, f.check(cold)); r.status != 503 {
		t.Errorf("cold client during the outage: %d, want 503", r.status)
	}
}

func TestWrongSecretNeverReachesACachedToken(t *testing.T) {
	f := newFixture(t, "")
	good := checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")})
	if r := read(t, f.check(good)); r.status != 200 {
		t.Fatalf("warm-up: %d", r.status)
	}
	bad := checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret-but-wrong")})
	if r := read(t, f.check(bad)); r.status != 401 || r.body["error"] != "invalid_client" {
		t.Errorf("wrong secret after a cached right one: %d %v", r.status, r.body)
	}
	if n := f.idp.Requests(); n != 2 {
		t.Errorf("IdP saw %d requests, want 2: the wrong secret must be checked by the IdP", n)
	}
}

// TestCheckRespectsItsDeadline would hang if Check waited for an endpoint
// that never answers.
func TestCheckRespectsItsDeadline(t *testing.T) {
	f := newFixture(t, "")
	f.idp.SetBehavior(testidp.Behavior{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	resp, err := f.srv.Check(ctx, checkRequest("gateway", "h", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if r := read(t, resp); r.status != 503 || r.body["error"] != "temporarily_unavailable" {
		t.Errorf("got %d %v, want 503 temporarily_unavailable", r.status, r.body)
	}
}

func TestCancelledFirstCallerFailsNoOne(t *testing.T) {
	f := newFixture(t, "")
	f.idp.SetBehavior(testidp.Behavior{Latency: 200 * time.Millisecond})
	req := checkRequest("gateway", "h", "/", nil)

	first, cancel := context.WithCancel(context.Background())
	firstDone := make(chan *authv3.CheckResponse)
	go func() {
		resp, _ := f.srv.Check(first, req)
		firstDone <- resp
	}()
	waitFor(t, func() bool { return f.idp.Requests() == 1 })
	secondDone := make(chan *authv3.CheckResponse)
	go func() {
		resp, _ := f.srv.Check(context.Background(), req)
		secondDone <- resp
	}()
	cancel()
	if r := read(t, <-firstDone); r.status != 503 {
		t.Errorf("cancelled caller got %d, want 503", r.status)
	}
	if r := read(t, <-secondDone); r.status != 200 {
		t.Errorf("second caller got %d %v, want 200", r.status, r.body)
	}
	if n := f.idp.Requests(); n != 1 {
		t.Errorf("IdP saw %d requests, want 1", n)
	}
}

func TestLogsHoldNoSecret(t *testing.T) {
	f := newFixture(t, "")
	var tokens []string
	for _, h := range []string{basic("orders-app", "s3cret"), basic("orders-app", "wrong-s3cret"), basic("viewer-app", "v1ewer")} {
		r := read(t, f.check(checkRequest("orders", "h", "/", map[string]string{"authorization": h})))
		tokens = append(tokens, r.headers["authorization"])
	}
	read(t, f.check(checkRequest("gateway", "h", "/", nil)))
	read(t, f.check(checkRequest("wrong-gateway", "h", "/", nil)))
	if f.logs.Len() == 0 {
		t.Fatal("nothing was logged")
	}
	for _, e := range f.logs.All() {
		line, _ := json.Marshal(e.ContextMap())
		text := e.Message + string(line)
		for _, s := range append(tokens[:1], "s3cret", "v1ewer", "gw-s3cret", "not-the-secret", "b3JkZXJzLWFwcDpzM2NyZXQ") {
			if s != "" && strings.Contains(text, strings.TrimPrefix(s, "Bearer ")) {
				t.Errorf("log line holds a secret or token: %s", text)
			}
		}
	}
	denials := f.logs.FilterMessage("denied").All()
	if len(denials) != 3 {
		t.Errorf("%d denial lines, want 3", len(denials))
	}
	for _, d := range denials {
		if d.Level != zap.InfoLevel || d.ContextMap()["policy"] == nil || d.ContextMap()["code"] == nil {
			t.Errorf("denial line %v %v", d.Level, d.ContextMap())
		}
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
