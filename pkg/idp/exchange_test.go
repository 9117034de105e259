package idp

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/oidcop"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/secret"
)

// The interop tests of the delegated grants: idp.Client against the test
// IdP (every fault it can play) and against a real OpenID provider built
// from zitadel/oidc (internal/oidcop).

var (
	exchangeAudience  = "https://api.example.com"
	exchangeResources = []string{"https://orders.example.com", "https://billing.example.com"}
	exchangeScopes    = []string{"orders.read", "billing.read"}
)

// delegated returns app's credentials carrying the caller's token and,
// when given, the actor's.
func delegated(subject, actor string) Credentials {
	c := app
	c.Subject = secret.New(subject)
	if actor != "" {
		c.Actor = secret.New(actor)
	}
	return c
}

// claimsOf returns a JWT's claims, unverified.
func claimsOf(t *testing.T, token string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatalf("token %q: %v", token, err)
	}
	return claims
}

// audienceOf returns a token's aud as a list.
func audienceOf(t *testing.T, c jwt.MapClaims) []string {
	t.Helper()
	aud, err := c.GetAudience()
	if err != nil {
		t.Fatalf("aud: %v", err)
	}
	return aud
}

// actorOf returns the sub of a token's act claim, "" when it has none.
func actorOf(c jwt.MapClaims) string {
	act, _ := c["act"].(map[string]any)
	sub, _ := act["sub"].(string)
	return sub
}

// wantForm checks the form fields a token endpoint received.
func wantForm(t *testing.T, form url.Values, want map[string][]string) {
	t.Helper()
	for k, v := range want {
		if got := form[k]; !slices.Equal(got, v) {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
}

// wantRefusal checks an error's kind, status and OAuth error code.
func wantRefusal(t *testing.T, err error, kind Kind, status int, code string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v, want an *Error", err)
	}
	if e.Kind != kind || e.Status != status || e.Code != code {
		t.Errorf("error %v: kind %v, status %d, code %q; want %v, %d, %q", err, e.Kind, e.Status, e.Code, kind, status, code)
	}
}

func TestTokenExchangeTestIdP(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	exp := time.Now().Add(time.Hour)
	alice := s.Subject("alice", []string{"https://gateway.example.com"}, exp, nil)
	gateway := s.Subject("spiffe://mesh/gateway", nil, exp, nil)
	tests := []struct {
		name      string
		give      Grant
		actor     string
		wantType  string // token_type
		wantActor string
	}{
		{name: "access token subject", give: Grant{}, wantType: "Bearer"},
		{name: "jwt subject", give: Grant{SubjectTokenType: TokenTypeJWT}, wantType: "Bearer"},
		{name: "id_token subject", give: Grant{SubjectTokenType: TokenTypeIDToken}, wantType: "Bearer"},
		{name: "actor", give: Grant{}, actor: gateway, wantType: "Bearer", wantActor: "spiffe://mesh/gateway"},
		{name: "requested access token", give: Grant{RequestedTokenType: TokenTypeAccessToken}, wantType: "Bearer"},
		{name: "requested jwt", give: Grant{RequestedTokenType: TokenTypeJWT}, wantType: "N_A"},
		{name: "requested id_token", give: Grant{RequestedTokenType: TokenTypeIDToken}, wantType: "N_A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.give
			g.Type, g.Resources = TokenExchange, exchangeResources
			c := newClient(t, Options{URL: s.TokenURL, Audience: exchangeAudience, Scopes: exchangeScopes, Grant: g})
			before := s.Exchanges("alice")
			tok, err := c.Token(context.Background(), delegated(alice, tt.actor))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Exchanges("alice") - before; got != 1 {
				t.Errorf("%d exchanges for alice, want 1", got)
			}
			log := s.Log()
			req := log[len(log)-1]
			subjectType, requested := cmp.Or(tt.give.SubjectTokenType, TokenTypeAccessToken), []string(nil)
			if tt.give.RequestedTokenType != "" {
				requested = []string{tt.give.RequestedTokenType}
			}
			want := map[string][]string{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {alice},
				"subject_token_type":   {subjectType},
				"requested_token_type": requested,
				"audience":             {exchangeAudience},
				"resource":             exchangeResources,
				"scope":                {"orders.read billing.read"},
				"assertion":            nil,
				"actor_token":          nil,
				"actor_token_type":     nil,
			}
			if tt.actor != "" {
				want["actor_token"], want["actor_token_type"] = []string{tt.actor}, []string{TokenTypeJWT}
			}
			wantForm(t, req.Form, want)
			if req.AuthMethod != "client_secret_basic" || req.ClientID != "app" || req.Subject != "alice" {
				t.Errorf("request by %q with %s for %q", req.ClientID, req.AuthMethod, req.Subject)
			}

			if tok.Type != tt.wantType || tok.ExpiresIn != testidp.DefaultLifetime {
				t.Errorf("token_type %q, lifetime %v; want %q", tok.Type, tok.ExpiresIn, tt.wantType)
			}
			claims := claimsOf(t, tok.AccessToken.Reveal())
			wantAud := append([]string{exchangeAudience}, exchangeResources...)
			if claims["sub"] != "alice" || claims["client_id"] != "app" || claims["scope"] != "orders.read billing.read" || !slices.Equal(audienceOf(t, claims), wantAud) {
				t.Errorf("claims %v", claims)
			}
			if got := actorOf(claims); got != tt.wantActor {
				t.Errorf("act.sub %q, want %q", got, tt.wantActor)
			}
		})
	}
}

func TestJWTBearerTestIdP(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	alice := s.Subject("alice", nil, time.Now().Add(time.Hour), nil)
	c := newClient(t, Options{URL: s.TokenURL, AuthMethod: ClientSecretPost, Scopes: exchangeScopes, Grant: Grant{Type: JWTBearer, Resources: exchangeResources[:1]}})
	tok, err := c.Token(context.Background(), delegated(alice, ""))
	if err != nil {
		t.Fatal(err)
	}
	req := s.Log()[0]
	wantForm(t, req.Form, map[string][]string{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":          {alice},
		"resource":           exchangeResources[:1],
		"scope":              {"orders.read billing.read"},
		"client_id":          {"app"},
		"subject_token":      nil,
		"subject_token_type": nil,
	})
	claims := claimsOf(t, tok.AccessToken.Reveal())
	if tok.Type != "Bearer" || claims["sub"] != "alice" || claims["client_id"] != "app" || !slices.Equal(audienceOf(t, claims), exchangeResources[:1]) {
		t.Errorf("token %q, claims %v", tok.Type, claims)
	}
	if s.Exchanges("alice") != 1 {
		t.Errorf("%d exchanges for alice, want 1", s.Exchanges("alice"))
	}
}

// forged signs claims with a key the IdP does not publish, under its kid.
func forged(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "testidp-1"
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestDelegatedRefusedTestIdP(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	other, err := testidp.New(testidp.Options{FreshKey: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	now := time.Now()
	valid := s.Subject("alice", nil, now.Add(time.Hour), nil)
	tests := []struct {
		name     string
		grant    GrantType
		subject  string
		actor    string
		behavior testidp.Behavior
		wantKind Kind
		wantCode string
	}{
		{name: "expired", subject: s.Subject("alice", nil, now.Add(-time.Minute), nil), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "not yet valid", subject: s.Subject("alice", nil, now.Add(time.Hour), map[string]any{"nbf": now.Add(time.Hour).Unix()}), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "no exp", subject: s.Subject("alice", nil, now, map[string]any{"exp": nil}), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "foreign issuer", subject: other.Subject("alice", nil, now.Add(time.Hour), nil), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "bad signature", subject: forged(t, jwt.MapClaims{"iss": s.Issuer, "sub": "alice", "exp": now.Add(time.Hour).Unix()}), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "foreign actor", subject: valid, actor: other.Subject("spiffe://mesh/gateway", nil, now.Add(time.Hour), nil), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "expired assertion", grant: JWTBearer, subject: s.Subject("alice", nil, now.Add(-time.Minute), nil), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{name: "foreign assertion", grant: JWTBearer, subject: other.Subject("alice", nil, now.Add(time.Hour), nil), wantKind: KindInvalidGrant, wantCode: "invalid_grant"},
		{
			name: "RFC 8693 error code", subject: s.Subject("alice", nil, now.Add(-time.Minute), nil),
			behavior: testidp.Behavior{SubjectErrorCode: "invalid_request"}, wantKind: KindInvalidGrant, wantCode: "invalid_request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetBehavior(tt.behavior)
			c := newClient(t, Options{URL: s.TokenURL, MaxRetries: 2, Grant: Grant{Type: cmp.Or(tt.grant, TokenExchange)}})
			before := s.Exchanges("alice")
			_, err := c.Token(context.Background(), delegated(tt.subject, tt.actor))
			wantRefusal(t, err, tt.wantKind, 400, tt.wantCode)
			if got := s.Exchanges("alice") - before; got != 1 {
				t.Errorf("%d exchanges for alice, want 1: a refusal is not retried", got)
			}
		})
	}
}

func TestDelegatedWithoutSubject(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	for _, g := range []GrantType{TokenExchange, JWTBearer} {
		t.Run(string(g), func(t *testing.T) {
			c := newClient(t, Options{URL: s.TokenURL, MaxRetries: 2, Grant: Grant{Type: g}})
			_, err := c.Token(context.Background(), delegated("", s.Subject("gateway", nil, time.Now().Add(time.Hour), nil)))
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindRefused || e.Status != 0 {
				t.Errorf("error %v, want a refusal before any request", err)
			}
		})
	}
	if n := s.Requests(); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
}

func TestDelegatedFaultsTestIdP(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	s.AddClient("cc-only", testidp.Client{Secret: "s3cret", Grants: []string{"client_credentials"}})
	alice := s.Subject("alice", nil, time.Now().Add(time.Hour), nil)
	tests := []struct {
		name         string
		behavior     testidp.Behavior
		id           string
		timeout      time.Duration
		wantKind     Kind // 0: a token
		wantAttempts int
	}{
		{name: "fails once then answers", behavior: testidp.Behavior{FailStatus: 503, FailFirst: 1}, wantAttempts: 2},
		{name: "keeps failing", behavior: testidp.Behavior{FailStatus: 503}, wantKind: KindUnavailable, wantAttempts: 2},
		{name: "slow", behavior: testidp.Behavior{Latency: time.Second}, timeout: 50 * time.Millisecond, wantKind: KindUnavailable, wantAttempts: 2},
		{name: "odd token_type", behavior: testidp.Behavior{Answer: testidp.AnswerMACTokenType}, wantKind: KindBadResponse, wantAttempts: 1},
		{name: "no access_token", behavior: testidp.Behavior{Answer: testidp.AnswerNoAccessToken}, wantKind: KindBadResponse, wantAttempts: 1},
		{name: "client may not exchange", id: "cc-only", wantKind: KindRejected, wantAttempts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetBehavior(tt.behavior)
			c := newClient(t, Options{URL: s.TokenURL, MaxRetries: 1, Timeout: tt.timeout, Grant: Grant{Type: TokenExchange}})
			creds := delegated(alice, "")
			creds.ID = cmp.Or(tt.id, creds.ID)
			before := s.Exchanges("alice")
			_, err := c.Token(context.Background(), creds)
			wantKind(t, err, tt.wantKind)
			if got := s.Exchanges("alice") - before; got != tt.wantAttempts {
				t.Errorf("%d exchanges for alice, want %d", got, tt.wantAttempts)
			}
		})
	}
}

// newOP starts a zitadel/oidc OpenID provider that knows app.
func newOP(t *testing.T) *oidcop.Server {
	t.Helper()
	op, err := oidcop.New(oidcop.Options{ClientID: app.ID, ClientSecret: app.Secret.Reveal(), ServiceUsers: []string{"svc-reports"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	return op
}

func subjectOf(t *testing.T, op *oidcop.Server, sub string, exp time.Time) string {
	t.Helper()
	tok, err := op.Subject(sub, []string{"https://gateway.example.com"}, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenExchangeOIDCOP(t *testing.T) {
	op := newOP(t)
	exp := time.Now().Add(time.Hour)
	alice := subjectOf(t, op, "alice", exp)
	gateway := subjectOf(t, op, "spiffe://mesh/gateway", exp)
	verifier := newVerifier(t, VerifierOptions{Issuer: op.Issuer}) // discovery, then the JWKS
	tests := []struct {
		name      string
		give      Grant
		actor     string
		wantType  string
		wantAud   []string
		wantActor string
	}{
		{name: "access token subject", give: Grant{}, wantType: "Bearer", wantAud: []string{exchangeAudience}},
		{name: "jwt subject", give: Grant{SubjectTokenType: TokenTypeJWT}, wantType: "Bearer", wantAud: []string{exchangeAudience}},
		{name: "actor", give: Grant{}, actor: gateway, wantType: "Bearer", wantAud: []string{exchangeAudience}, wantActor: "spiffe://mesh/gateway"},
		{name: "actor of type access token", give: Grant{ActorTokenType: TokenTypeAccessToken}, actor: gateway, wantType: "Bearer", wantAud: []string{exchangeAudience}, wantActor: "spiffe://mesh/gateway"},
		{name: "requested access token", give: Grant{RequestedTokenType: TokenTypeAccessToken}, wantType: "Bearer", wantAud: []string{exchangeAudience}},
		// An ID token: token_type N_A, the client among its audiences.
		{name: "requested id_token", give: Grant{RequestedTokenType: TokenTypeIDToken}, wantType: "N_A", wantAud: []string{exchangeAudience, app.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.give
			g.Type, g.Resources = TokenExchange, exchangeResources
			c := newClient(t, Options{URL: op.TokenURL, Audience: exchangeAudience, Scopes: exchangeScopes, Grant: g})
			tok, err := c.Token(context.Background(), delegated(alice, tt.actor))
			if err != nil {
				t.Fatal(err)
			}

			reqs := op.Requests()
			req := reqs[len(reqs)-1]
			want := map[string][]string{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":      {alice},
				"subject_token_type": {cmp.Or(tt.give.SubjectTokenType, TokenTypeAccessToken)},
				"audience":           {exchangeAudience},
				"resource":           exchangeResources,
				"scope":              {"orders.read billing.read"},
				"client_secret":      nil,
			}
			if tt.actor != "" {
				want["actor_token"], want["actor_token_type"] = []string{tt.actor}, []string{cmp.Or(tt.give.ActorTokenType, TokenTypeJWT)}
			}
			wantForm(t, req.Form, want)
			if id, _, ok := basicAuth(req.Header.Get("Authorization")); !ok || id != app.ID {
				t.Errorf("Authorization %q, want client_secret_basic", req.Header.Get("Authorization"))
			}
			// What the library made of it, as its storage was asked to validate.
			exs := op.Exchanges()
			ex := exs[len(exs)-1]
			if ex.ClientID != app.ID || ex.Subject != "alice" || ex.Actor != tt.wantActor || ex.RequestedTokenType != tt.give.RequestedTokenType ||
				!slices.Equal(ex.Audience, []string{exchangeAudience}) || !slices.Equal(ex.Resources, exchangeResources) || !slices.Equal(ex.Scopes, exchangeScopes) {
				t.Errorf("the OP saw %+v", ex)
			}

			if tok.Type != tt.wantType {
				t.Errorf("token_type %q, want %q", tok.Type, tt.wantType)
			}
			claims := claimsOf(t, tok.AccessToken.Reveal())
			if claims["iss"] != op.Issuer || claims["sub"] != "alice" || claims["client_id"] != app.ID || claims["scope"] != "orders.read billing.read" || !slices.Equal(audienceOf(t, claims), tt.wantAud) {
				t.Errorf("claims %v", claims)
			}
			if got := actorOf(claims); got != tt.wantActor {
				t.Errorf("act.sub %q, want %q", got, tt.wantActor)
			}
			if err := verifier.Verify(context.Background(), tok.AccessToken.Reveal()); err != nil {
				t.Errorf("the exchanged token does not verify against the OP's JWKS: %v", err)
			}
		})
	}
}

// TestTokenExchangeOIDCOPRefusals records how zitadel/oidc refuses: a bad
// subject or actor token is invalid_request (RFC 8693 §2.2.2), never
// invalid_grant; the client takes either as KindInvalidGrant for a token
// exchange (so does an unsupported requested_token_type: that is the
// price of following the RFC).
func TestTokenExchangeOIDCOPRefusals(t *testing.T) {
	op := newOP(t)
	other := newIdP(t, testidp.Options{})
	now := time.Now()
	alice := subjectOf(t, op, "alice", now.Add(time.Hour))
	tests := []struct {
		name       string
		give       Grant
		creds      Credentials
		wantKind   Kind
		wantStatus int
		wantCode   string
	}{
		{name: "expired subject", creds: delegated(subjectOf(t, op, "alice", now.Add(-time.Minute)), ""), wantKind: KindInvalidGrant, wantStatus: 400, wantCode: "invalid_request"},
		{name: "expired jwt subject", give: Grant{SubjectTokenType: TokenTypeJWT}, creds: delegated(subjectOf(t, op, "alice", now.Add(-time.Minute)), ""), wantKind: KindInvalidGrant, wantStatus: 400, wantCode: "invalid_request"},
		{name: "foreign subject", creds: delegated(other.Subject("alice", nil, now.Add(time.Hour), nil), ""), wantKind: KindInvalidGrant, wantStatus: 400, wantCode: "invalid_request"},
		{name: "foreign actor", creds: delegated(alice, other.Subject("gateway", nil, now.Add(time.Hour), nil)), wantKind: KindInvalidGrant, wantStatus: 400, wantCode: "invalid_request"},
		// The library issues no token of type jwt.
		{name: "requested jwt", give: Grant{RequestedTokenType: TokenTypeJWT}, creds: delegated(alice, ""), wantKind: KindInvalidGrant, wantStatus: 400, wantCode: "invalid_request"},
		// 400, not the 401 RFC 6749 §5.2 asks for after Basic authentication.
		{name: "wrong client secret", creds: Credentials{ID: app.ID, Secret: secret.New("wrong"), Subject: secret.New(alice)}, wantKind: KindRejected, wantStatus: 400, wantCode: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.give
			g.Type = TokenExchange
			c := newClient(t, Options{URL: op.TokenURL, MaxRetries: 2, Grant: g})
			before := len(op.Requests())
			_, err := c.Token(context.Background(), tt.creds)
			wantRefusal(t, err, tt.wantKind, tt.wantStatus, tt.wantCode)
			if n := len(op.Requests()) - before; n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

// TestJWTBearerOIDCOP: zitadel/oidc's JWT profile grant takes a service
// user's self-signed assertion (iss = sub, aud the issuer, a key the OP
// holds for the user) and authenticates no client: the Basic header
// idp.Client sends is ignored. A bad assertion is invalid_request.
func TestJWTBearerOIDCOP(t *testing.T) {
	op := newOP(t)
	now := time.Now()
	assertion := func(sub string, exp time.Time) string {
		a, err := op.Assertion(sub, exp)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	good := assertion("svc-reports", now.Add(time.Minute))
	verifier := newVerifier(t, VerifierOptions{Issuer: op.Issuer})
	tests := []struct {
		name     string
		give     string
		wantKind Kind // 0: a token
		wantCode string
	}{
		{name: "service user", give: good},
		{name: "expired", give: assertion("svc-reports", now.Add(-time.Minute)), wantKind: KindRefused, wantCode: "invalid_request"},
		{name: "unknown service user", give: assertion("mallory", now.Add(time.Minute)), wantKind: KindRefused, wantCode: "invalid_request"},
		{name: "a user's access token", give: subjectOf(t, op, "alice", now.Add(time.Hour)), wantKind: KindRefused, wantCode: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Options{URL: op.TokenURL, MaxRetries: 2, Scopes: exchangeScopes, Grant: Grant{Type: JWTBearer}})
			tok, err := c.Token(context.Background(), delegated(tt.give, ""))
			reqs := op.Requests()
			wantForm(t, reqs[len(reqs)-1].Form, map[string][]string{
				"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
				"assertion":  {tt.give},
				"scope":      {"orders.read billing.read"},
			})
			if tt.wantKind != 0 {
				wantRefusal(t, err, tt.wantKind, 400, tt.wantCode)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			claims := claimsOf(t, tok.AccessToken.Reveal())
			if tok.Type != "Bearer" || claims["sub"] != "svc-reports" || claims["client_id"] != "svc-reports" || !slices.Equal(audienceOf(t, claims), []string{op.Issuer}) {
				t.Errorf("token %q, claims %v", tok.Type, claims)
			}
			if err := verifier.Verify(context.Background(), tok.AccessToken.Reveal()); err != nil {
				t.Errorf("the token does not verify against the OP's JWKS: %v", err)
			}
		})
	}
}

// basicAuth reads an Authorization: Basic header.
func basicAuth(h string) (id, secret string, ok bool) {
	return (&http.Request{Header: http.Header{"Authorization": {h}}}).BasicAuth()
}

// TestDelegatedFederatedTestIdP: tokens of the federated issuer (a
// cluster's projected service account tokens) are subject and actor tokens
// too, and SubjectAudience refuses tokens not meant for the IdP.
func TestDelegatedFederatedTestIdP(t *testing.T) {
	cluster, err := testidp.NewClusterIssuer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	s := newIdP(t, testidp.Options{
		Federated:       &testidp.Federated{Issuer: cluster.Issuer, JWKSURL: cluster.JWKSURL, Audience: "https://idp"},
		SubjectAudience: "https://idp",
	})
	exp := time.Now().Add(time.Hour)
	sa := func(sub, aud string) string {
		tok, err := cluster.Token(sub, aud, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice := s.Subject("alice", []string{"https://idp"}, exp, nil)
	tests := []struct {
		name      string
		grant     GrantType
		subject   string
		actor     string
		wantSub   string
		wantActor string
		wantKind  Kind
	}{
		{name: "service account actor", subject: alice, actor: sa("system:serviceaccount:mesh:gateway", "https://idp"), wantSub: "alice", wantActor: "system:serviceaccount:mesh:gateway"},
		{name: "service account subject", subject: sa("system:serviceaccount:jobs:report", "https://idp"), wantSub: "system:serviceaccount:jobs:report"},
		{name: "service account assertion", grant: JWTBearer, subject: sa("system:serviceaccount:jobs:report", "https://idp"), wantSub: "system:serviceaccount:jobs:report"},
		{name: "subject for another audience", subject: s.Subject("alice", []string{"https://elsewhere"}, exp, nil), wantKind: KindInvalidGrant},
		{name: "actor for another audience", subject: alice, actor: sa("system:serviceaccount:mesh:gateway", "https://elsewhere"), wantKind: KindInvalidGrant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Options{URL: s.TokenURL, Grant: Grant{Type: cmp.Or(tt.grant, TokenExchange)}})
			tok, err := c.Token(context.Background(), delegated(tt.subject, tt.actor))
			wantKind(t, err, tt.wantKind)
			if err != nil {
				return
			}
			claims := claimsOf(t, tok.AccessToken.Reveal())
			if claims["sub"] != tt.wantSub || actorOf(claims) != tt.wantActor {
				t.Errorf("sub %v, act %v; want %q acted for by %q", claims["sub"], claims["act"], tt.wantSub, tt.wantActor)
			}
		})
	}
}
