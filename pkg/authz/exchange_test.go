package authz

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/oidcop"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/config"

	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

const exchangeYAML = `
secrets: {dir: "{{secrets}}"}
policies:
  orders-api:
    url: {{url}}
    grant: token_exchange
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    audience: https://orders.example.com
    resource: [https://orders.example.com/api, https://orders.example.com/admin]
    usernameClaim: sub
  checked:
    url: {{url}}
    grant: token_exchange
    subjectTokenType: jwt
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    subjectValidation: {jwksURL: "{{jwks}}", issuer: "{{issuer}}", audience: https://gateway.example.com}
  header:
    url: {{url}}
    grant: jwt_bearer
    subjectTokenHeader: X-User-Token
    tokenHeader: X-Upstream-Token
    tokenPrefix: ""
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
`

// sub reads a JWT's sub, unverified.
func sub(t *testing.T, token string) string {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimPrefix(token, "Bearer "), &c); err != nil {
		t.Fatal(err)
	}
	return c.Subject
}

// TestTokenExchange: a caller's bearer token is exchanged once per token
// for the upstream's, which replaces it; each caller gets a token for
// itself only; hostile or refused tokens get 401 invalid_token and are not
// asked about again.
func TestTokenExchange(t *testing.T) {
	f := newFixtureFrom(t, exchangeYAML, tokencache.Options{})
	check := func(policy string, headers map[string]string) result {
		t.Helper()
		return read(t, f.check(checkRequest(policy, "api.example.com", "/orders", headers)))
	}
	alice := f.idp.Subject("alice", []string{"https://gateway.example.com"}, time.Now().Add(time.Hour), nil)
	bob := f.idp.Subject("bob", []string{"https://gateway.example.com"}, time.Now().Add(time.Hour), nil)

	r := check("orders-api", map[string]string{"authorization": "Bearer " + alice})
	if r.status != 200 || sub(t, r.headers["authorization"]) != "alice" || strings.Contains(r.headers["authorization"], alice) {
		t.Fatalf("alice: %d %v %v", r.status, r.body, r.headers)
	}
	if r.meta["sub"] != "alice" || r.meta["clientusername"] != "alice" || r.meta["token_cache"] != "miss" {
		t.Errorf("alice's metadata: %v", r.meta)
	}
	if r := check("orders-api", map[string]string{"authorization": "bearer  " + alice}); r.status != 200 || r.meta["token_cache"] != "hit" {
		t.Errorf("alice again: %d %v", r.status, r.meta)
	}
	if n := f.idp.Exchanges("alice"); n != 1 {
		t.Errorf("alice's token was exchanged %d times, want once", n)
	}
	seen := f.idp.Log()[len(f.idp.Log())-1]
	if got := seen.Form["resource"]; !slices.Equal(got, []string{"https://orders.example.com/api", "https://orders.example.com/admin"}) ||
		seen.Form.Get("subject_token") != alice || seen.Form.Get("audience") != "https://orders.example.com" ||
		seen.Form.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
		t.Errorf("the exchange sent %v", seen.Form)
	}
	if r := check("orders-api", map[string]string{"authorization": "Bearer " + bob}); r.status != 200 || sub(t, r.headers["authorization"]) != "bob" {
		t.Errorf("bob got %d %v", r.status, r.headers)
	}

	// No token, another scheme, a token that is no b64token or too large.
	for name, h := range map[string]map[string]string{
		"no token":      {},
		"basic":         {"authorization": "Basic b3JkZXJzLWFwcDpzM2NyZXQ="},
		"empty bearer":  {"authorization": "Bearer "},
		"not b64token":  {"authorization": "Bearer a b"},
		"too large":     {"authorization": "Bearer " + strings.Repeat("a", 9000)},
		"quote":         {"authorization": `Bearer "x"`},
		"equals inside": {"authorization": "Bearer a=b"},
	} {
		r := check("orders-api", h)
		want, challenge := "invalid_token", `Bearer realm="orders-api", error="invalid_token"`
		if name == "no token" || name == "basic" || name == "empty bearer" {
			want, challenge = "invalid_request", `Bearer realm="orders-api"`
		}
		if r.status != 401 || r.body["error"] != want || r.headers["www-authenticate"] != challenge {
			t.Errorf("%s: %d %v %v, want 401 %s", name, r.status, r.body, r.headers, want)
		}
	}

	// Expired at the IdP: invalid_grant, remembered for the token.
	expired := f.idp.Subject("carol", nil, time.Now().Add(-time.Minute), nil)
	for range 3 {
		r := check("orders-api", map[string]string{"authorization": "Bearer " + expired})
		if r.status != 401 || r.body["error"] != "invalid_token" || !strings.Contains(r.headers["www-authenticate"], `error="invalid_token"`) {
			t.Errorf("an expired token: %d %v %v", r.status, r.body, r.headers)
		}
	}
	if n := f.idp.Exchanges("carol"); n != 1 {
		t.Errorf("the expired token was sent %d times, want once (then remembered)", n)
	}

	// Checked locally: a token for another audience, or of another
	// issuer, never reaches the IdP.
	foreignAud := f.idp.Subject("dave", []string{"https://elsewhere.example.com"}, time.Now().Add(time.Hour), nil)
	if r := check("checked", map[string]string{"authorization": "Bearer " + foreignAud}); r.status != 401 || r.body["error"] != "invalid_token" {
		t.Errorf("a token for another audience: %d %v", r.status, r.body)
	}
	if n := f.idp.Exchanges("dave"); n != 0 {
		t.Errorf("a locally refused token reached the IdP %d times", n)
	}
	if r := check("checked", map[string]string{"authorization": "Bearer not-a-jwt"}); r.status != 401 || r.body["error"] != "invalid_token" {
		t.Errorf("an opaque token where a JWT is due: %d %v", r.status, r.body)
	}
	if r := check("checked", map[string]string{"authorization": "Bearer " + alice}); r.status != 200 || sub(t, r.headers["authorization"]) != "alice" {
		t.Errorf("alice through the checked policy: %d %v", r.status, r.body)
	}

	// An operator purges one caller's exchanged tokens by its token's hash.
	if _, err := f.builder.Purge(t.Context(), "orders-api", tokencache.SubjectPrefix+tokencache.SubjectHash(secret.New(alice))); err != nil {
		t.Fatal(err)
	}
	if r := check("orders-api", map[string]string{"authorization": "Bearer " + alice}); r.status != 200 || r.meta["token_cache"] != "miss" {
		t.Errorf("alice after her purge: %d %v", r.status, r.meta)
	}
	if r := check("orders-api", map[string]string{"authorization": "Bearer " + bob}); r.status != 200 || r.meta["token_cache"] != "hit" {
		t.Errorf("bob after alice's purge: %d %v", r.status, r.meta)
	}

	// The caller's token in its own header, the upstream's in another: the
	// caller's never goes upstream.
	r = check("header", map[string]string{"x-user-token": alice})
	if r.status != 200 || sub(t, r.headers["x-upstream-token"]) != "alice" || !slices.Contains(r.removed, "x-user-token") {
		t.Errorf("jwt_bearer from X-User-Token: %d %v headers %v removed %v", r.status, r.body, r.headers, r.removed)
	}
	if seen := f.idp.Log()[len(f.idp.Log())-1]; seen.Form.Get("assertion") != alice || seen.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		t.Errorf("the JWT bearer grant sent %v", seen.Form)
	}
}

// TestExchangedTokenLivesNoLongerThanTheCallers: a token exchanged for a
// caller's that expires in a minute is not served after it, though the
// IdP gave it an hour.
func TestExchangedTokenLivesNoLongerThanTheCallers(t *testing.T) {
	f := newFixtureFrom(t, exchangeYAML, tokencache.Options{})
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	short := f.idp.Subject("erin", nil, exp, nil)
	p := f.srv.state.Load().policies["orders-api"]
	creds := p.creds
	creds.Subject = secret.New(short)
	tok, _, err := f.cache.Token(t.Context(), p.endpoint, p.endpoint.Key(creds), creds)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expiry().After(exp) {
		t.Errorf("the exchanged token expires at %v, after the caller's %v", tok.Expiry(), exp)
	}
}

// TestTokenExchangeWithZitadel runs the whole flow against an
// authorization server built from zitadel/oidc's OpenID provider: the
// caller's access token, checked locally against the OP's keys found by
// discovery, is exchanged once for a token for the upstream's audience,
// which replaces it; an expired one is refused locally and never sent.
func TestTokenExchangeWithZitadel(t *testing.T) {
	op, err := oidcop.New(oidcop.Options{ClientID: "gateway", ClientSecret: "gateway-s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	cfg, err := config.Parse([]byte(`
policies:
  orders:
    url: `+op.TokenURL+`
    grant: token_exchange
    clientID: gateway
    clientSecret: gateway-s3cret
    audience: orders-api
    scopes: [openid]
    subjectValidation: {issuer: "`+op.Issuer+`"}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	cache := tokencache.New(tokencache.Options{MaxEntries: 100})
	t.Cleanup(func() { _ = cache.Close() })
	srv, _ := serve(t, cfg, cache, Options{Tokens: cache, Logger: zap.NewNop()})
	check := func(token string) result {
		t.Helper()
		resp, err := srv.Check(t.Context(), checkRequest("orders", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + token}))
		if err != nil {
			t.Fatal(err)
		}
		return read(t, resp)
	}
	alice, err := op.Subject("alice", []string{"gateway"}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"miss", "hit"} {
		r := check(alice)
		if r.status != 200 || r.meta["token_cache"] != want || r.meta["sub"] != "alice" || strings.Contains(r.headers["authorization"], alice) {
			t.Fatalf("check %d: %d %v %v %v", i, r.status, r.body, r.meta, r.headers)
		}
		var c jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimPrefix(r.headers["authorization"], "Bearer "), &c); err != nil {
			t.Fatal(err)
		}
		if c.Subject != "alice" || !slices.Contains(c.Audience, "orders-api") || c.Issuer != op.Issuer {
			t.Errorf("the exchanged token: %+v", c)
		}
	}
	if n := len(op.Exchanges()); n != 1 {
		t.Errorf("the OP exchanged %d times, want once", n)
	}
	expired, err := op.Subject("bob", []string{"gateway"}, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r := check(expired); r.status != 401 || r.body["error"] != "invalid_token" {
		t.Errorf("an expired token: %d %v", r.status, r.body)
	}
	if n := len(op.Requests()); n != 1 {
		t.Errorf("the OP's token endpoint got %d requests, want only alice's exchange", n)
	}
}

// TestActorPolicy: the gateway's own client-credentials token goes with
// every exchange as the actor token, and the exchanged token names it.
func TestActorPolicy(t *testing.T) {
	f := newFixtureFrom(t, `
secrets: {dir: "{{secrets}}"}
policies:
  gateway:
    url: {{url}}
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
  on-behalf:
    url: {{url}}
    grant: token_exchange
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    actorToken: {policy: gateway}
`, tokencache.Options{})
	alice := f.idp.Subject("alice", nil, time.Now().Add(time.Hour), nil)
	r := read(t, f.check(checkRequest("on-behalf", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + alice})))
	if r.status != 200 {
		t.Fatalf("%d %v", r.status, r.body)
	}
	var c struct {
		jwt.RegisteredClaims
		Act struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimPrefix(r.headers["authorization"], "Bearer "), &c); err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Act.Sub != "gw-client" {
		t.Errorf("the exchanged token names %q acting for %q, want gw-client acting for alice", c.Act.Sub, c.Subject)
	}
	seen := f.idp.Log()[len(f.idp.Log())-1]
	if seen.Form.Get("actor_token") == "" || seen.Form.Get("actor_token_type") != "urn:ietf:params:oauth:token-type:jwt" {
		t.Errorf("the exchange sent %v", seen.Form)
	}
}

// TestSubjectFlood: a flood of made-up bearer tokens costs the IdP nothing
// with subjectValidation, and at most the endpoint-wide cap without it;
// the answers say when to come back.
func TestSubjectFlood(t *testing.T) {
	f := newFixtureFrom(t, exchangeYAML, tokencache.Options{})
	other, err := testidp.New(testidp.Options{FreshKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	before := f.idp.Requests()
	const flood = 200
	counts := map[string]int{}
	for i := range flood {
		forged := other.Subject(fmt.Sprintf("guess-%d", i), []string{"https://gateway.example.com"}, time.Now().Add(time.Hour), nil)
		r := read(t, f.check(checkRequest("checked", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + forged})))
		if r.status != 401 || r.body["error"] != "invalid_token" {
			t.Fatalf("a forged token: %d %v", r.status, r.body)
		}
		r = read(t, f.check(checkRequest("orders-api", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + forged})))
		counts[fmt.Sprintf("%d %s retry-after=%t", r.status, r.body["error"], r.headers["retry-after"] != "")]++
	}
	sent := f.idp.Requests() - before
	t.Logf("%d forged tokens: %d exchanges asked for, answers %v", flood, sent, counts)
	if sent != config.DefaultMaxEndpointRejections {
		t.Errorf("the flood made %d token requests, want the endpoint-wide cap, %d", sent, config.DefaultMaxEndpointRejections)
	}
	if counts["401 invalid_token retry-after=false"] != config.DefaultMaxEndpointRejections ||
		counts["503 temporarily_unavailable retry-after=true"] != flood-config.DefaultMaxEndpointRejections {
		t.Errorf("answers %v", counts)
	}
}

// TestExchangeWithDPoP: an exchanged token can be bound to extauthz's key
// like any other: it goes upstream as a DPoP token, with a proof for the
// request.
func TestExchangeWithDPoP(t *testing.T) {
	f := newFixtureFrom(t, `
secrets: {dir: "{{secrets}}"}
policies:
  bound:
    url: {{url}}
    grant: token_exchange
    clientID: gw-client
    clientSecret: urn:k8s:secret:gw:secret
    dpop: {algorithm: ES256}
`, tokencache.Options{})
	alice := f.idp.Subject("alice", nil, time.Now().Add(time.Hour), nil)
	r := read(t, f.check(checkRequest("bound", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + alice})))
	if r.status != 200 || !strings.HasPrefix(r.headers["authorization"], "DPoP ") || r.headers["dpop"] == "" || r.meta["sub"] != "alice" {
		t.Errorf("%d %v headers %v meta %v", r.status, r.body, r.headers, r.meta)
	}
	if seen := f.idp.Log()[len(f.idp.Log())-1]; seen.DPoP == nil || seen.Form.Get("subject_token") != alice {
		t.Errorf("the exchange carried no proof, or not alice's token: %+v", seen.Form)
	}
}
