// Package testidp is a real OAuth 2.0 token endpoint on loopback for tests
// and the demo: it issues RS256 JWTs with per-client claims for the
// client-credentials grant, and for the delegated grants — token exchange
// (RFC 8693) and the JWT bearer grant (RFC 7523 §2.1) — in exchange for
// subject tokens it signed itself or a federated issuer signed; it
// publishes its JWKS, counts requests and can be switched to fail, to be
// slow or to give odd answers.
package testidp

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// Paths served.
const (
	TokenPath = "/oauth/token"
	JWKSPath  = "/.well-known/jwks.json"
	// DiscoveryPath serves OpenID Connect discovery for the issuer URL.
	DiscoveryPath = "/.well-known/openid-configuration"
)

// Client is a registered client. It authenticates with Secret
// (client_secret_basic or client_secret_post), with an assertion signed by
// the key of PublicKey (private_key_jwt, RFC 7523), or with a TLS client
// certificate whose common name is its id (tls_client_auth, RFC 8705).
type Client struct {
	Secret string
	// PublicKey verifies private_key_jwt assertions (*rsa.PublicKey or *ecdsa.PublicKey).
	PublicKey crypto.PublicKey
	// TLSClientAuth makes the client authenticate with its certificate.
	TLSClientAuth bool
	// Claims are added to every token issued to the client.
	Claims map[string]any
	// Scopes the client may ask for; nil allows any.
	Scopes []string
	// FederatedSubject, when set, makes the client authenticate with a JWT
	// of Options.Federated's issuer whose sub is this (federated_jwt).
	FederatedSubject string
	// Grants are the grant_type values the client may use; nil allows
	// client_credentials and the delegated grants.
	Grants []string
}

// Answer selects an odd answer to successful requests.
type Answer int

// Answers.
const (
	AnswerNormal            Answer = iota
	AnswerStringExpiresIn          // "expires_in": "300"
	AnswerNoExpiresIn              // no expires_in: the lifetime is the JWT's exp
	AnswerOpaque                   // a random token that is not a JWT
	AnswerNoAccessToken            // no access_token at all
	AnswerNoTokenType              // no token_type
	AnswerMACTokenType             // "token_type": "mac"
	AnswerBadJSON                  // a body that is not JSON
	AnswerHuge                     // a body larger than 1 MiB
	AnswerErrorIn200               // status 200 with an OAuth error body
	AnswerOpaqueNoLifetime         // an opaque token without expires_in
	AnswerUnsafeToken              // an access_token with a space and CRLF in it
	AnswerForm                     // a form-encoded answer: access_token=…&expires_in=60
	AnswerFloatExpiresIn           // "expires_in": 3600.0
	AnswerHugeExpiresIn            // "expires_in": 1e30
	AnswerNegativeExpiresIn        // "expires_in": -5
	AnswerFarFutureExp             // a JWT whose exp is in the year 3000, and no expires_in
	AnswerNumericToken             // "access_token": 12345
)

// Behavior switches how the endpoint answers.
type Behavior struct {
	// FailStatus, when set, answers every request with this status and an
	// OAuth error body (FailCode, default server_error).
	FailStatus int
	FailCode   string
	// FailFirst limits FailStatus to this many requests, then answers normally.
	FailFirst int
	// RetryAfter is sent with failures when set.
	RetryAfter string
	// Latency delays every answer; a request whose client goes away stops waiting.
	Latency time.Duration
	Answer  Answer
	// IgnoreHangUp makes every request take its whole Latency even when
	// its client has gone, as an IdP that does not watch for hang-ups
	// does: it counts in Inflight and PeakConcurrency until then.
	IgnoreHangUp bool
	// Lifetime of issued tokens; DefaultLifetime when zero.
	Lifetime time.Duration
	// ForeignSignature signs tokens with a key the JWKS does not hold,
	// under the current kid: a bad signature.
	ForeignSignature bool
	// RedirectTo, when set, answers token requests 307 to this URL.
	RedirectTo string
	// DPoPNonce, when set, is the nonce DPoP proofs must carry: a proof
	// without it is answered use_dpop_nonce with a DPoP-Nonce header.
	DPoPNonce string
	// DPoPNonceAlways demands a new nonce of every proof: the nonce it
	// hands out never satisfies it.
	DPoPNonceAlways bool
	// IgnoreDPoP issues Bearer tokens whatever proof comes, as an IdP that
	// does not support DPoP does.
	IgnoreDPoP bool
	// AuthenticateFirst authenticates the client — spending a client
	// assertion's jti — before it looks at the DPoP proof's nonce, as some
	// IdPs do: a retry that re-sends the assertion is then refused.
	AuthenticateFirst bool
	// SubjectErrorCode is the error code a delegated grant's bad, expired
	// or foreign subject token, actor token or assertion is refused with
	// (status 400): invalid_grant when empty, as RFC 7523 §3.1 asks and
	// most IdPs answer token exchanges too; RFC 8693 §2.2.2 itself asks
	// for invalid_request, which is what zitadel/oidc answers.
	SubjectErrorCode string
}

// Federated is an issuer whose JWTs clients may authenticate with
// (federated_jwt), such as a Kubernetes cluster's service account issuer
// (see ClusterIssuer): its tokens are verified with the keys published at
// JWKSURL, fetched as an IdP fetches them (keyfunc/v3).
type Federated struct {
	Issuer   string
	JWKSURL  string
	Audience string
}

// DefaultLifetime of issued tokens.
const DefaultLifetime = time.Hour

// Request is what the endpoint saw of one token request.
type Request struct {
	ClientID   string
	AuthMethod string // client_secret_basic, client_secret_post, private_key_jwt, client_secret_jwt, federated_jwt or tls_client_auth
	Form       url.Values
	Header     http.Header
	DPoP       *Proof // the verified DPoP proof, if one came
	// Subject is the sub the subject token (subject_token or assertion) of
	// a delegated grant names, before any check of the token.
	Subject string
}

// Server is a running test IdP.
type Server struct {
	URL      string // base URL
	TokenURL string
	JWKSURL  string
	Issuer   string

	srv           *httptest.Server
	fastKey       []byte // HS256 key when FastSigning
	anyClient     *Client
	requests      atomic.Int64
	inflight      atomic.Int64 // token requests being answered
	peak          atomic.Int64 // the most answered at once
	jwksRequests  atomic.Int64
	failed        atomic.Int64
	jtis          sync.Map // assertion and proof ids seen, to refuse replays
	federated     *Federated
	noLog         bool
	foldIDs       bool
	federatedKeys keyfunc.Keyfunc // the federated issuer's published keys
	stop          func()          // stops fetching them

	mu       sync.Mutex
	keys     []signingKey // published in the JWKS; the last one signs
	clients  map[string]Client
	behavior Behavior
	log      []Request
	now      func() time.Time
	// attempts counts token requests per client, as the IdP knows the
	// client (folded with CaseInsensitiveIDs), even with NoLog.
	attempts map[string]int
	// exchanges counts delegated-grant requests per subject sub.
	exchanges       map[string]int
	subjectAudience string
}

// Options configure New.
type Options struct {
	// TLS serves HTTPS with httptest's self-signed certificate (see Certificate).
	TLS bool
	// Now is the clock tokens are dated by; time.Now when nil.
	Now func() time.Time
	// FreshKey signs with a key of the server's own instead of the shared one.
	FreshKey bool
	// ClientCAs, with TLS, requires every client to present a certificate
	// signed by one of them (mutual TLS).
	ClientCAs *x509.CertPool
	// FastSigning signs tokens with HS256 instead of RS256, for load tests
	// that fetch many tokens and verify none.
	FastSigning bool
	// NoLog keeps no Log of requests, for tests that fetch many tokens and
	// measure the memory of the process.
	NoLog bool
	// AnyClient, when set, is the registration of every client id not
	// added with AddClient.
	AnyClient *Client
	// Federated, when set, is the issuer federated_jwt clients' assertions
	// come from.
	Federated *Federated
	// CaseInsensitiveIDs matches client ids without case, as many IdPs
	// do: "App", "APP" and "app" are one client.
	CaseInsensitiveIDs bool
	// SubjectAudience, when set, is an audience every subject token, actor
	// token and JWT bearer assertion must carry, as IdPs that accept only
	// tokens meant for them ask.
	SubjectAudience string
}

// sharedKey is generated once per process: RSA key generation is slow, and
// tests start many IdPs.
var sharedKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// New starts a test IdP on 127.0.0.1. Its signing key is shared by every
// IdP of the process unless FreshKey is set.
func New(o Options) (*Server, error) {
	key, err := sharedKey()
	if o.FreshKey {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{keys: []signingKey{{kid: "testidp-1", key: key}}, clients: map[string]Client{}, now: o.Now, anyClient: o.AnyClient, federated: o.Federated, noLog: o.NoLog, foldIDs: o.CaseInsensitiveIDs, attempts: map[string]int{}, exchanges: map[string]int{}, subjectAudience: o.SubjectAudience}
	s.stop = func() {}
	if f := o.Federated; f != nil {
		ctx, cancel := context.WithCancel(context.Background())
		kf, err := keyfunc.NewDefaultCtx(ctx, []string{f.JWKSURL})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("the federated issuer's keys: %w", err)
		}
		s.federatedKeys, s.stop = kf, cancel
	}
	if o.FastSigning {
		s.fastKey = []byte(randomID())
	}
	if s.now == nil {
		s.now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.token)
	mux.HandleFunc("GET "+JWKSPath, s.jwks)
	mux.HandleFunc("GET "+DiscoveryPath, s.discovery)
	if o.TLS {
		s.srv = httptest.NewUnstartedServer(mux)
		if o.ClientCAs != nil {
			s.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: o.ClientCAs}
		}
		s.srv.StartTLS()
	} else {
		s.srv = httptest.NewServer(mux)
	}
	s.URL = s.srv.URL
	s.TokenURL = s.URL + TokenPath
	s.JWKSURL = s.URL + JWKSPath
	s.Issuer = s.URL
	return s, nil
}

// Close stops the server, cutting requests that are still waiting.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.stop()
}

// CertificatePEM returns the server's certificate when it serves TLS.
func (s *Server) CertificatePEM() string {
	c := s.srv.Certificate()
	if c == nil {
		return ""
	}
	return "-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(c.Raw) + "\n-----END CERTIFICATE-----\n"
}

// AddClient registers or replaces a client.
func (s *Server) AddClient(id string, c Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = c
}

// SetBehavior changes how the endpoint answers from the next request on.
func (s *Server) SetBehavior(b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behavior = b
	s.failed.Store(0)
}

type signingKey struct {
	kid string
	key *rsa.PrivateKey
}

// RotateKey starts signing with a new key under a new kid; the JWKS
// publishes both.
func (s *Server) RotateKey() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, signingKey{kid: fmt.Sprintf("testidp-%d", len(s.keys)+1), key: key})
	return nil
}

// JWKSRequests counts requests for the JWKS.
func (s *Server) JWKSRequests() int64 { return s.jwksRequests.Load() }

// Requests counts token requests received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// PeakConcurrency returns the most token requests it was answering at once.
func (s *Server) PeakConcurrency() int64 { return s.peak.Load() }

// Attempts returns how many token requests named the client id (any
// case of it with CaseInsensitiveIDs).
func (s *Server) Attempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[s.canonical(id)]
}

// Inflight returns how many token requests it is answering now.
func (s *Server) Inflight() int64 { return s.inflight.Load() }

// canonical is the id the IdP knows a client by.
func (s *Server) canonical(id string) string {
	if s.foldIDs {
		return strings.ToLower(id)
	}
	return id
}

// Log returns every token request received, oldest first.
func (s *Server) Log() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	for n, p := s.inflight.Add(1), s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	defer s.inflight.Add(-1)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	req := Request{Form: r.PostForm, Header: r.Header.Clone()}
	grant := r.PostForm.Get("grant_type")
	delegated := grant == TokenExchangeGrant || grant == JWTBearerGrant
	if delegated {
		req.Subject = unverifiedSubject(subjectToken(r.PostForm))
	}
	id, sec, basic, err := clientCredentials(r)
	req.ClientID = id
	switch {
	case basic:
		req.AuthMethod = "client_secret_basic"
	case r.PostForm.Has("client_assertion"):
		req.AuthMethod = "private_key_jwt"
	case r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && sec == "":
		req.AuthMethod = "tls_client_auth"
	default:
		req.AuthMethod = "client_secret_post"
	}
	s.mu.Lock()
	b := s.behavior
	client, known := s.clients[id]
	if !known && s.foldIDs {
		for k, c := range s.clients {
			if strings.EqualFold(k, id) {
				client, known = c, true
				break
			}
		}
	}
	s.attempts[s.canonical(id)]++
	if delegated {
		s.exchanges[req.Subject]++
	}
	s.mu.Unlock()
	if !known && s.anyClient != nil {
		client, known = *s.anyClient, true
	}
	if req.AuthMethod == "private_key_jwt" {
		switch {
		case client.FederatedSubject != "":
			req.AuthMethod = "federated_jwt"
		case assertionAlg(r.PostForm.Get("client_assertion")) == "HS256":
			req.AuthMethod = "client_secret_jwt"
		}
	}
	authenticated := false
	if b.AuthenticateFirst && known && r.PostForm.Has("client_assertion") {
		if why := s.checkAssertion(r.PostForm, id, client); why != "" {
			oauthError(w, http.StatusUnauthorized, "invalid_client", why)
			return
		}
		authenticated = true // its jti is spent
	}
	var proof *Proof
	if h := r.Header.Values("DPoP"); len(h) > 0 {
		p, err := VerifyProof(h[0], http.MethodPost, s.TokenURL, s.now())
		if err == nil && len(h) > 1 {
			err = errors.New("more than one DPoP header")
		}
		if err == nil {
			if _, seen := s.jtis.LoadOrStore("dpop:"+p.JTI, true); seen {
				err = errors.New("proof replayed")
			}
		}
		if err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", err.Error())
			return
		}
		if nonce := b.DPoPNonce; b.DPoPNonceAlways || nonce != "" && p.Nonce != nonce {
			if b.DPoPNonceAlways {
				nonce = randomID()
			}
			w.Header().Set("DPoP-Nonce", nonce)
			oauthError(w, http.StatusBadRequest, "use_dpop_nonce", "a DPoP nonce is required")
			return
		}
		proof, req.DPoP = &p, &p
	}
	if !s.noLog {
		s.mu.Lock()
		s.log = append(s.log, req)
		s.mu.Unlock()
	}

	if b.Latency > 0 {
		hungUp := r.Context().Done()
		if b.IgnoreHangUp {
			hungUp = nil
		}
		select {
		case <-time.After(b.Latency):
		case <-hungUp:
			return
		}
	}
	if b.RedirectTo != "" {
		http.Redirect(w, r, b.RedirectTo, http.StatusTemporaryRedirect)
		return
	}
	if b.FailStatus != 0 && (b.FailFirst == 0 || s.failed.Add(1) <= int64(b.FailFirst)) {
		if b.RetryAfter != "" {
			w.Header().Set("Retry-After", b.RetryAfter)
		}
		code := b.FailCode
		if code == "" {
			code = "server_error"
		}
		oauthError(w, b.FailStatus, code, "switched to fail")
		return
	}
	switch {
	case err != nil:
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	case !known:
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	case authenticated && !supportedGrant(grant):
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "not a supported grant")
		return
	case authenticated: // before the DPoP proof was looked at
	case req.AuthMethod == "private_key_jwt" || req.AuthMethod == "client_secret_jwt" || req.AuthMethod == "federated_jwt":
		if why := s.checkAssertion(r.PostForm, id, client); why != "" {
			oauthError(w, http.StatusUnauthorized, "invalid_client", why)
			return
		}
	case client.TLSClientAuth:
		if req.AuthMethod != "tls_client_auth" || r.TLS.PeerCertificates[0].Subject.CommonName != id {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "no client certificate for this client")
			return
		}
	case client.Secret == "" || client.Secret != sec:
		w.Header().Set("WWW-Authenticate", `Basic realm="testidp"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	case !supportedGrant(grant):
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "not a supported grant")
		return
	}
	if client.Grants != nil && !slices.Contains(client.Grants, grant) {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "the client may not use this grant")
		return
	}
	scope := r.PostForm.Get("scope")
	if client.Scopes != nil {
		for _, sc := range strings.Fields(scope) {
			if !slices.Contains(client.Scopes, sc) {
				oauthError(w, http.StatusBadRequest, "invalid_scope", "scope "+sc+" is not allowed")
				return
			}
		}
	}
	var d *delegation
	if delegated {
		var code, why string
		if d, code, why = s.delegate(r.PostForm, b); d == nil {
			oauthError(w, http.StatusBadRequest, code, why)
			return
		}
	}
	s.issue(w, b, id, client, scope, r.PostForm.Get("audience"), proof, d)
}

// assertionAlg returns the alg of a JWT's header, unverified.
func assertionAlg(assertion string) string {
	tok, _, err := jwt.NewParser().ParseUnverified(assertion, jwt.MapClaims{})
	if err != nil {
		return ""
	}
	alg, _ := tok.Header["alg"].(string)
	return alg
}

// checkAssertion verifies a private_key_jwt assertion as RFC 7523 asks: the
// client's key, RS256 or ES256, iss and sub the client, aud the token URL,
// an exp at most five minutes away, and a jti never seen before. It returns
// why the assertion fails, or "".
func (s *Server) checkAssertion(form url.Values, id string, c Client) string {
	if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		return "bad client_assertion_type"
	}
	// private_key_jwt: the client's key; client_secret_jwt: its secret
	// (HS256); federated_jwt: the trusted issuer's key, the issuer's iss
	// and audience, the client's subject.
	keyOf := func(*jwt.Token) (any, error) { return c.PublicKey, nil }
	methods, iss, sub, aud := []string{"RS256", "ES256"}, id, id, s.TokenURL
	switch {
	case c.FederatedSubject != "":
		if s.federated == nil {
			return "no federated issuer is trusted"
		}
		keyOf, iss, sub, aud = s.federatedKeys.Keyfunc, s.federated.Issuer, c.FederatedSubject, s.federated.Audience
	case assertionAlg(form.Get("client_assertion")) == "HS256":
		if c.Secret == "" {
			return "the client has no secret"
		}
		keyOf, methods = func(*jwt.Token) (any, error) { return []byte(c.Secret), nil }, []string{"HS256"}
	case c.PublicKey == nil:
		return "the client has no key"
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(form.Get("client_assertion"), &claims, keyOf,
		jwt.WithValidMethods(methods), jwt.WithAudience(aud), jwt.WithIssuer(iss),
		jwt.WithSubject(sub), jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now))
	switch {
	case err != nil:
		return "assertion: " + err.Error()
	case claims.ExpiresAt.Sub(s.now()) > 5*time.Minute && c.FederatedSubject == "":
		return "assertion lives too long"
	case claims.ID == "" && c.FederatedSubject == "":
		return "assertion has no jti"
	}
	if c.FederatedSubject != "" {
		return "" // a projected token is presented until it is rotated
	}
	if _, seen := s.jtis.LoadOrStore(claims.ID, true); seen {
		return "assertion replayed"
	}
	return ""
}

// issue answers with a token for the client id — or, for a delegated
// grant (d), for d's subject, on behalf of the client.
func (s *Server) issue(w http.ResponseWriter, b Behavior, id string, c Client, scope, audience string, proof *Proof, d *delegation) {
	lifetime := b.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	now := s.now()
	claims := jwt.MapClaims{
		"iss": s.Issuer, "sub": id, "client_id": id,
		"iat": now.Unix(), "exp": now.Add(lifetime).Unix(), "jti": randomID(),
	}
	if b.Answer == AnswerFarFutureExp {
		claims["exp"] = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	}
	tokenType := "Bearer"
	if proof != nil && !b.IgnoreDPoP {
		claims["cnf"] = map[string]any{"jkt": proof.Thumbprint}
		tokenType = "DPoP"
	}
	if audience != "" {
		claims["aud"] = audience
	}
	if scope != "" {
		claims["scope"] = scope
	}
	for k, v := range c.Claims {
		claims[k] = v
	}
	if d != nil {
		d.claims(claims)
	}
	s.mu.Lock()
	signer := s.keys[len(s.keys)-1]
	s.mu.Unlock()
	key := signer.key
	if b.ForeignSignature {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
			return
		}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = signer.kid
	var signingKey any = key
	if s.fastKey != nil {
		tok = jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		signingKey = s.fastKey
	}
	signed, err := tok.SignedString(signingKey)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	body := map[string]any{"access_token": signed, "token_type": tokenType, "expires_in": int64(lifetime / time.Second)}
	if d != nil && d.issued != "" {
		body["issued_token_type"] = d.issued
		if d.issued != TokenTypeAccessToken {
			body["token_type"] = "N_A" // RFC 8693 §2.2.1: not an access token
		}
	}
	switch b.Answer {
	case AnswerStringExpiresIn:
		body["expires_in"] = fmt.Sprint(int64(lifetime / time.Second))
	case AnswerNoExpiresIn:
		delete(body, "expires_in")
	case AnswerOpaque:
		body["access_token"] = "opaque-" + randomID()
	case AnswerNoAccessToken:
		delete(body, "access_token")
	case AnswerNoTokenType:
		delete(body, "token_type")
	case AnswerMACTokenType:
		body["token_type"] = "mac"
	case AnswerBadJSON:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token": "abc", `)
		return
	case AnswerHuge:
		body["padding"] = strings.Repeat("x", 1<<20)
	case AnswerOpaqueNoLifetime:
		body["access_token"] = "opaque-" + randomID()
		delete(body, "expires_in")
	case AnswerUnsafeToken:
		body["access_token"] = "abc def\r\nX-Injected: 1"
	case AnswerErrorIn200:
		body = map[string]any{"error": "invalid_request", "error_description": "an error with status 200"}
	case AnswerForm:
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		fmt.Fprint(w, url.Values{"access_token": {"opaque-" + randomID()}, "token_type": {"bearer"}, "expires_in": {"60"}}.Encode())
		return
	case AnswerFloatExpiresIn:
		body["expires_in"] = json.RawMessage(fmt.Sprintf("%d.0", int64(lifetime/time.Second)))
	case AnswerHugeExpiresIn:
		body["expires_in"] = json.RawMessage("1e30")
	case AnswerNegativeExpiresIn:
		body["expires_in"] = -5
	case AnswerFarFutureExp:
		delete(body, "expires_in")
	case AnswerNumericToken:
		body["access_token"] = 12345
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

// clientCredentials reads the client's id and secret from a Basic header
// (form-urlencoded inside, RFC 6749 §2.3.1) or from the form.
func clientCredentials(r *http.Request) (id, secret string, basic bool, err error) {
	if u, p, ok := r.BasicAuth(); ok {
		if id, err = url.QueryUnescape(u); err == nil {
			secret, err = url.QueryUnescape(p)
		}
		return id, secret, true, err
	}
	return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), false, nil
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	s.jwksRequests.Add(1)
	s.mu.Lock()
	var keys []map[string]string
	for _, k := range s.keys {
		keys = append(keys, map[string]string{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid,
			"n": base64.RawURLEncoding.EncodeToString(k.key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.key.E)).Bytes()),
		})
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

func (s *Server) discovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer": s.Issuer, "jwks_uri": s.JWKSURL, "token_endpoint": s.TokenURL,
		"grant_types_supported": []string{"client_credentials", TokenExchangeGrant, JWTBearerGrant},
	})
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
