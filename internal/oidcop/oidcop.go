// Package oidcop is a real OpenID provider on loopback for interop tests:
// the op package of github.com/zitadel/oidc/v3 — discovery, JWKS, token
// endpoint, its token exchange (RFC 8693) and JWT profile (RFC 7523 §2.1)
// grants — served through the library's Server API (op.LegacyServer) over
// an in-memory storage of one confidential client and a few service users.
//
// The package is for tests only: only _test.go files import it, so that
// the library never reaches the extauthz binary.
//
// What the library does, as found in v3.52.0 and relied on by the tests:
//   - token exchange authenticates the client (client_secret_basic or
//     _post) and checks that it may use the grant (unauthorized_client);
//   - subject and actor tokens of type access_token or id_token are the
//     OP's own, verified by the library (issuer, signature, exp); tokens of
//     type jwt are verified by the storage (here: the OP's own keys too);
//   - a bad subject or actor token is refused 400 invalid_request, as RFC
//     8693 §2.2.2 asks, not invalid_grant;
//   - aud is the audience parameters (the client id when none): resource
//     parameters reach the storage (Exchange.Resources) but not the token;
//   - requested_token_type access_token (the default here) issues a JWT
//     access token (token_type Bearer), id_token an ID token (token_type
//     N_A); jwt is refused invalid_request: the library issues no such
//     token;
//   - the act claim is the storage's to add: here {"sub": actor's sub};
//   - the JWT profile grant needs no client authentication: the assertion
//     is self-signed by a service user (iss = sub) with a key registered
//     at the OP, aud the issuer; a bad one is refused 400 invalid_request,
//     not RFC 7523's invalid_grant; the token's sub and client_id are the
//     service user, its aud the assertion's.
package oidcop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// DefaultLifetime of issued tokens.
const DefaultLifetime = time.Hour

// Options configure New.
type Options struct {
	// ClientID and ClientSecret register the confidential client; it
	// authenticates with client_secret_basic (or _post) and may use the
	// token-exchange grant.
	ClientID     string
	ClientSecret string
	// ServiceUsers may use the JWT profile grant with assertions made by
	// Assertion.
	ServiceUsers []string
	// Lifetime of issued tokens; DefaultLifetime when zero.
	Lifetime time.Duration
}

// Request is what the token endpoint received.
type Request struct {
	Form   url.Values
	Header http.Header
}

// Exchange is a token exchange as the library handed it to the storage to
// validate: subject and actor tokens verified, parameters parsed.
type Exchange struct {
	ClientID           string
	Subject            string // the subject token's sub
	SubjectTokenType   string
	Actor              string // the actor token's sub, if one came
	ActorTokenType     string
	RequestedTokenType string // as asked; "" when not sent
	Audience           []string
	Resources          []string
	Scopes             []string
}

// Server is a running OpenID provider.
type Server struct {
	Issuer       string // its URL
	TokenURL     string
	JWKSURL      string
	DiscoveryURL string

	srv   *httptest.Server
	store *storage

	mu       sync.Mutex
	requests []Request
}

// New starts an OpenID provider on 127.0.0.1 with fresh keys.
func New(o Options) (*Server, error) {
	if o.ClientID == "" || o.ClientSecret == "" {
		return nil, errors.New("oidcop: a client id and secret are needed")
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultLifetime
	}
	store, err := newStorage(o)
	if err != nil {
		return nil, err
	}
	var cryptoKey [32]byte // encrypts opaque tokens, which this OP never issues
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, err
	}
	s := &Server{store: store, srv: httptest.NewUnstartedServer(nil)}
	s.Issuer = "http://" + s.srv.Listener.Addr().String()
	provider, err := op.NewProvider(&op.Config{CryptoKey: cryptoKey, AuthMethodPost: true}, store,
		op.StaticIssuer(s.Issuer), op.WithAllowInsecure())
	if err != nil {
		s.srv.Close()
		return nil, fmt.Errorf("oidcop: %w", err)
	}
	endpoints := provider.Endpoints()
	handler := op.RegisterLegacyServer(op.NewLegacyServer(provider, endpoints), op.AuthorizeCallbackHandler(provider))
	s.TokenURL = endpoints.Token.Absolute(s.Issuer)
	s.JWKSURL = endpoints.JwksURI.Absolute(s.Issuer)
	s.DiscoveryURL = s.Issuer + oidc.DiscoveryEndpoint
	tokenPath := endpoints.Token.Relative()
	s.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == tokenPath {
			s.record(r)
		}
		handler.ServeHTTP(w, r)
	})
	s.srv.Start()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// record keeps the form and headers of a token request, leaving its body
// for the library to read.
func (s *Server) record(r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Form: form, Header: r.Header.Clone()})
}

// Requests returns the token requests received, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Exchanges returns the token exchanges the library passed on to the
// storage, oldest first: those whose client, subject and actor it accepted.
func (s *Server) Exchanges() []Exchange { return s.store.exchangeLog() }

// Subject returns an access token the OP issues for the user sub, as it
// would to the registered client after a login: the library's own JWT
// (op.CreateJWT) with the OP's signing key — iss the OP, client_id the
// client, aud (the client id when empty), exp. The OP accepts it as a
// subject or actor token of type access_token or jwt until exp.
func (s *Server) Subject(sub string, aud []string, exp time.Time) (string, error) {
	id, err := randomID()
	if err != nil {
		return "", err
	}
	return op.CreateJWT(context.Background(), s.Issuer, subjectRequest{sub: sub, aud: aud}, exp, id, s.store.client, s.store)
}

// Assertion returns a JWT profile grant assertion for the service user
// sub, made by the library's own client helper: iss and sub the user, aud
// the issuer, iat now, exp, signed with the key the OP holds for its
// service users.
func (s *Server) Assertion(sub string, exp time.Time) (string, error) {
	a := oidc.NewJWTProfileAssertion(sub, assertionKeyID, []string{s.Issuer}, s.store.assertionPEM,
		func(c *oidc.JWTProfileAssertionClaims) { c.Expiration = oidc.FromTime(exp) })
	return oidc.GenerateJWTProfileToken(a)
}

// subjectRequest is what op.CreateJWT needs to know of a user's token.
type subjectRequest struct {
	sub string
	aud []string
}

func (r subjectRequest) GetSubject() string    { return r.sub }
func (r subjectRequest) GetAudience() []string { return r.aud }
func (r subjectRequest) GetScopes() []string   { return nil }

// randomID returns a token id.
func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// joinScopes returns scopes as a scope claim's value.
func joinScopes(scopes []string) string { return strings.Join(scopes, " ") }

// generateKey returns a fresh RSA key.
func generateKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }
