package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

const dpopYAML = `
policies:
  bound:
    url: {{url}}
    clientID: gw-client
    clientSecret: gw-s3cret
    dpop: {algorithm: ES256}
    forwardHeaders: {X-Client: client_id}
`

// forward sends what an allow asks for to the resource server, as Envoy
// does: the original request with the answer's headers set.
func forward(t *testing.T, rs *httptest.Server, method, path string, headers map[string]string) (int, string) {
	t.Helper()
	code, body, err := testidp.Forward(method, rs.URL+path, headers)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// TestDPoPEndToEnd: tokens bound to the policy's key, and a proof per
// request that a resource server checks as RFC 9449 asks; every hostile
// presentation is refused there.
func TestDPoPEndToEnd(t *testing.T) {
	f := newFixtureFrom(t, dpopYAML, tokencache.Options{})
	rs := httptest.NewServer(testidp.NewResourceServer(f.idp))
	defer rs.Close()
	host := strings.TrimPrefix(rs.URL, "http://")
	check := func(method, path string) result {
		t.Helper()
		req := checkRequest("bound", host, path, nil)
		req.Attributes.Request.Http.Method = method
		req.Attributes.Request.Http.Scheme = "http"
		return read(t, f.check(req))
	}
	var first map[string]string
	for i, tt := range []struct{ method, path string }{{"GET", "/orders/1"}, {"GET", "/orders/1?x=1"}, {"POST", "/orders"}, {"DELETE", "/a/./b/../c"}} {
		r := check(tt.method, tt.path)
		if r.status != 200 || !strings.HasPrefix(r.headers["authorization"], "DPoP ey") || r.headers["dpop"] == "" {
			t.Fatalf("%s %s: %d %v", tt.method, tt.path, r.status, r.headers)
		}
		if i == 0 {
			first = r.headers
		} else if r.headers["dpop"] == first["dpop"] {
			t.Error("a proof was reused")
		}
		path, _, _ := strings.Cut(tt.path, "?")
		if tt.path == "/a/./b/../c" {
			path = "/a/c" // the resource server sees the path Envoy normalized
		}
		if code, why := forward(t, rs, tt.method, path, map[string]string{"Authorization": r.headers["authorization"], "DPoP": r.headers["dpop"]}); code != 200 {
			t.Errorf("%s %s: the resource server refused: %s", tt.method, tt.path, why)
		}
	}
	if n := f.idp.Requests(); n != 1 {
		t.Errorf("%d token requests, want 1: the token is cached, the proofs are not", n)
	}
	if req := f.idp.Log()[0]; req.DPoP == nil {
		t.Error("the token request carried no proof")
	}
	token := strings.TrimPrefix(first["authorization"], "DPoP ")
	fresh := check("GET", "/orders/1").headers
	for _, tt := range []struct {
		name    string
		method  string
		headers map[string]string
		why     string
	}{
		{"a replayed proof", "GET", map[string]string{"Authorization": first["authorization"], "DPoP": first["dpop"]}, "proof replayed"},
		{"the token as Bearer", "GET", map[string]string{"Authorization": "Bearer " + token, "DPoP": fresh["dpop"]}, "not a DPoP token"},
		{"the proof for another method", "PUT", map[string]string{"Authorization": fresh["authorization"], "DPoP": fresh["dpop"]}, "htm"},
		{"no proof", "GET", map[string]string{"Authorization": fresh["authorization"]}, "0 DPoP headers"},
	} {
		if code, why := forward(t, rs, tt.method, "/orders/1", tt.headers); code != 401 || !strings.Contains(why, tt.why) {
			t.Errorf("%s: %d %q, want 401 %q", tt.name, code, why, tt.why)
		}
	}
	// A proof whose ath is another token's, signed with the right key.
	other := check("GET", "/orders/1").headers
	if _, err := f.builder.Purge(t.Context(), "bound", ""); err != nil {
		t.Fatal(err)
	}
	renewed := check("GET", "/orders/1").headers
	if renewed["authorization"] == other["authorization"] {
		t.Fatal("the purge kept the token")
	}
	if code, why := forward(t, rs, "GET", "/orders/1", map[string]string{"Authorization": renewed["authorization"], "DPoP": other["dpop"]}); code != 401 || !strings.Contains(why, "ath") {
		t.Errorf("a proof for another token: %d %q", code, why)
	}

	// HTTP mode answers with the same two headers.
	for _, m := range httpModes(t, f.srv) {
		status, h, _ := rawHTTP(t, m.addr, "/policy/bound", map[string]string{
			"X-Forwarded-Host": host, "X-Forwarded-Uri": "/orders/2", "X-Forwarded-Method": "PATCH", "X-Forwarded-Proto": "http",
		})
		if status != 200 {
			t.Fatalf("HTTP mode (%s): %d", m.name, status)
		}
		if code, why := forward(t, rs, "PATCH", "/orders/2", map[string]string{"Authorization": h.Get("Authorization"), "DPoP": h.Get("DPoP")}); code != 200 {
			t.Errorf("HTTP mode (%s): the resource server refused: %s", m.name, why)
		}
	}
}

// TestDPoPRefusals: an IdP that ignores the binding, or demands a nonce
// every time, gives no token to forward.
func TestDPoPRefusals(t *testing.T) {
	for _, tt := range []struct {
		name     string
		behavior testidp.Behavior
	}{
		{"the IdP ignores the proof", testidp.Behavior{IgnoreDPoP: true}},
		{"a nonce demanded twice", testidp.Behavior{DPoPNonceAlways: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureFrom(t, dpopYAML, tokencache.Options{})
			f.idp.SetBehavior(tt.behavior)
			r := read(t, f.check(&authv3.CheckRequest{Attributes: checkRequest("bound", "api.example.com", "/", nil).Attributes}))
			if r.status != 502 || r.body["error"] != "invalid_token_response" {
				t.Errorf("got %d %v, want 502 invalid_token_response", r.status, r.body)
			}
		})
	}
	// A method or host no proof can name is refused, not signed.
	f := newFixtureFrom(t, dpopYAML, tokencache.Options{})
	for _, tt := range []struct{ method, host string }{{"GET /x", "api.example.com"}, {"", "api.example.com"}, {strings.Repeat("G", 33), "api.example.com"}, {"GET", "bad host"}} {
		req := checkRequest("bound", tt.host, "/", nil)
		req.Attributes.Request.Http.Method = tt.method
		if r := read(t, f.check(req)); r.status != 400 || r.body["error"] != "invalid_request" {
			t.Errorf("method %q, host %q: %d %v, want 400 invalid_request", tt.method, tt.host, r.status, r.body)
		}
	}
	for _, m := range httpModes(t, f.srv) {
		if status, _, _ := rawHTTP(t, m.addr, "/policy/bound", map[string]string{"X-Forwarded-Method": "G\tET"}); status != 400 {
			t.Errorf("HTTP mode (%s), a method with a tab: %d, want 400", m.name, status)
		}
	}

	f = newFixtureFrom(t, dpopYAML, tokencache.Options{})
	f.idp.SetBehavior(testidp.Behavior{DPoPNonce: "n-42"})
	if r := read(t, f.check(checkRequest("bound", "api.example.com", "/", nil))); r.status != 200 {
		t.Errorf("a nonce asked for once: %d %v", r.status, r.body)
	}
}

// TestDPoPSharedThroughRedis: replicas that hold the same configured key
// share one bound token through Redis, and each signs its own proofs for it.
func TestDPoPSharedThroughRedis(t *testing.T) {
	single := redistest.Single(t)
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("gw-client", testidp.Client{Secret: "gw-s3cret"})
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := strings.ReplaceAll(testpki.PKCS8PEM(t, k), "\n", "\n        ")
	yaml := fmt.Sprintf(`
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: [%s]}
policies:
  bound:
    url: %s
    clientID: gw-client
    clientSecret: gw-s3cret
    dpop:
      key: |
        %s
`, single.Addr, idp.TokenURL, keyPEM)
	rs := httptest.NewServer(testidp.NewResourceServer(idp))
	defer rs.Close()
	host := strings.TrimPrefix(rs.URL, "http://")
	for i := range 2 {
		cfg, err := config.Parse([]byte(yaml), "") // each replica reads the key itself
		if err != nil {
			t.Fatal(err)
		}
		cache := tokencache.New(tokencache.Options{MaxEntries: 100, Logger: zap.NewNop()})
		t.Cleanup(func() { cache.Close() })
		srv, _ := serve(t, cfg, cache, Options{Tokens: cache, Logger: zap.NewNop()})
		req := checkRequest("bound", host, "/shared", nil)
		req.Attributes.Request.Http.Scheme = "http"
		resp, err := srv.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		r := read(t, resp)
		if r.status != 200 {
			t.Fatalf("replica %d: %d %v", i, r.status, r.body)
		}
		if code, why := forward(t, rs, "GET", "/shared", map[string]string{"Authorization": r.headers["authorization"], "DPoP": r.headers["dpop"]}); code != 200 {
			t.Errorf("replica %d: the resource server refused: %s", i, why)
		}
	}
	if n := idp.Requests(); n != 1 {
		t.Errorf("%d token requests, want 1: the second replica reads the bound token from Redis", n)
	}
}
