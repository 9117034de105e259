// Package idp asks an OAuth 2.0 token endpoint for access tokens with the
// client-credentials grant (RFC 6749 §4.4), and verifies the tokens it
// issues against its published keys (Verifier).
//
// Clients authenticate with client_secret_basic, client_secret_post,
// private_key_jwt (RFC 7523: a fresh signed assertion per request, retries included) or
// tls_client_auth (RFC 8705: the TLS client certificate, client_id in the
// body).
//
// A token request is a form POST (RFC 6749 §4.4.2) that authenticates the
// client in the Authorization header or the body (form-urlencoding id and
// secret as §2.3.1 asks). The answer is read up to 1 MiB, as JSON or, as
// some endpoints send it, form-encoded; expires_in may be an integer, a
// float or a numeric string, and one out of range is clamped to a year (or
// ignored when not positive) and logged rather than failing the answer.
// Redirects are never followed: credentials go only to the configured URL,
// and a 3xx is an unusable answer. Around each request: a timeout per
// attempt, retries with exponential backoff and jitter for network errors,
// 5xx and 429 (honouring Retry-After) and never for other 4xx, an overall
// bound from the caller's context, a check of token_type, and errors sorted
// into kinds a caller can map to statuses.
package idp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/secret"
)

// AuthMethod is how the client authenticates at the token endpoint.
type AuthMethod string

// Supported client authentication methods.
const (
	ClientSecretBasic AuthMethod = "client_secret_basic" // RFC 6749 §2.3.1, in the Authorization header
	ClientSecretPost  AuthMethod = "client_secret_post"  // RFC 6749 §2.3.1, in the body
	PrivateKeyJWT     AuthMethod = "private_key_jwt"     // RFC 7523 §2.2: a signed assertion
	TLSClientAuth     AuthMethod = "tls_client_auth"     // RFC 8705 §2.1: the TLS client certificate
	ClientSecretJWT   AuthMethod = "client_secret_jwt"   // RFC 7523 §2.2: an assertion signed with the secret (HS256)
	FederatedJWT      AuthMethod = "federated_jwt"       // RFC 7523 §2.2: a third party's JWT, read from a file
)

// AssertionType is the client_assertion_type of private_key_jwt.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Assertion configures private_key_jwt.
type Assertion struct {
	Key       crypto.Signer // an *rsa.PrivateKey (RS256) or a P-256 *ecdsa.PrivateKey (ES256)
	KeyID     string        // the assertion's kid header, when set
	Audience  string        // the token URL when empty
	Lifetime  time.Duration // one minute when zero
	Algorithm string        // RS256 or ES256; from the key when empty
}

// Defaults for Options left at zero.
const (
	DefaultTimeout    = 5 * time.Second
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 2 * time.Second
	// maxRetryAfter bounds how long a Retry-After may ask to wait.
	maxRetryAfter = time.Hour
)

// Options configure a Client: one token endpoint and the shape of its requests.
type Options struct {
	URL         string
	AuthMethod  AuthMethod
	Audience    string
	Scopes      []string
	ExtraParams map[string]string
	HTTPClient  *http.Client  // nil for a client with Go's default transport
	Timeout     time.Duration // per attempt
	MaxRetries  int           // retries after the first attempt
	Backoff     time.Duration // wait before the first retry; doubles after each
	MaxBackoff  time.Duration
	Logger      *zap.Logger
	Now         func() time.Time // for Retry-After dates and assertions; time.Now when nil
	// Assertion signs private_key_jwt assertions.
	Assertion *Assertion
	// AssertionFile holds the federated_jwt assertion: a JWT another issuer
	// signed (a Kubernetes projected service account token), re-read when
	// the file changes.
	AssertionFile string
	// DPoP, when set, binds tokens to this key (RFC 9449): every token
	// request carries a proof, and the endpoint must answer token_type DPoP.
	DPoP *dpop.Key
	// Name labels the client's metrics (the policy's name).
	Name string
	// Metrics counts token requests; metrics.Nop() when nil.
	Metrics *metrics.Metrics
	// Tracer traces token requests; none when nil.
	Tracer trace.Tracer
	// CredentialID fingerprints credentials the client carries outside
	// Credentials (a signing key, a TLS client certificate), so that its
	// Identity tells clients with different ones apart. It holds no secret.
	CredentialID string
	// TrustID fingerprints how the endpoint's certificate is checked (the
	// CA, insecureSkipVerify), so that clients that trust different
	// servers never share tokens. It holds no secret.
	TrustID string
	// Grant is how tokens are asked for: client credentials when zero.
	Grant Grant
	// ActorTokenFile, with TokenExchange, holds the actor_token (a
	// projected service account token), re-read when the file changes.
	ActorTokenFile string
	// ActorID names where Credentials.Actor comes from otherwise (a
	// policy), so that tokens exchanged with different actors are told
	// apart. It holds no secret.
	ActorID string
}

// Credentials identify a client to the token endpoint.
type Credentials struct {
	ID     string
	Secret secret.Value
	// Subject is the caller's token a delegated grant sends (TokenExchange:
	// subject_token; JWTBearer: assertion); empty otherwise.
	Subject secret.Value
	// Actor is the actor_token of a token exchange, if any.
	Actor secret.Value
}

// Token is the endpoint's answer.
type Token struct {
	AccessToken secret.Value
	Type        string        // as sent; empty when the endpoint sent none
	ExpiresIn   time.Duration // zero when the endpoint gave no lifetime
}

// Client requests tokens from one endpoint. It is safe for concurrent use.
type Client struct {
	opts      Options
	params    url.Values // the form, credentials aside
	identity  string
	host      string // the endpoint's host, for spans
	federated *assertionFile
	actor     *assertionFile         // the token exchange's actor token, if any
	nonce     atomic.Pointer[string] // the endpoint's latest DPoP-Nonce
}

// NewClient returns a Client for o.
func NewClient(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil || o.URL == "" {
		return nil, fmt.Errorf("idp: bad token URL %q", secret.RedactURL(o.URL))
	}
	switch o.AuthMethod {
	case ClientSecretBasic, "":
		o.AuthMethod = ClientSecretBasic
	case ClientSecretPost, TLSClientAuth:
	case ClientSecretJWT:
	case FederatedJWT:
		if o.AssertionFile == "" {
			return nil, errors.New("idp: federated_jwt needs the assertion's file")
		}
	case PrivateKeyJWT:
		if err := o.Assertion.check(); err != nil {
			return nil, err
		}
		if o.Assertion.Audience == "" {
			o.Assertion.Audience = o.URL
		}
		if o.Assertion.Lifetime <= 0 {
			o.Assertion.Lifetime = time.Minute
		}
	default:
		return nil, fmt.Errorf("idp: unsupported auth method %q", o.AuthMethod)
	}
	o.HTTPClient = withoutRedirects(o.HTTPClient)
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Nop()
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	params := url.Values{}
	for k, v := range o.ExtraParams {
		params.Set(k, v)
	}
	if o.Audience != "" {
		params.Set("audience", o.Audience)
	}
	if len(o.Scopes) > 0 {
		params.Set("scope", strings.Join(o.Scopes, " "))
	}
	if err := o.Grant.check(); err != nil {
		return nil, err
	}
	o.Grant.params(params)
	c := &Client{host: u.Host, opts: o, params: params}
	if o.AuthMethod == FederatedJWT {
		c.federated = &assertionFile{path: o.AssertionFile}
	}
	if o.ActorTokenFile != "" {
		if o.Grant.Type != TokenExchange {
			return nil, errors.New("idp: an actor token goes with the token_exchange grant only")
		}
		c.actor = &assertionFile{path: o.ActorTokenFile}
	}
	// The identity names everything that shapes a token request except the
	// credentials, so that a cache can tell tokens apart: a token bound to
	// a DPoP key is that key's.
	dpopID := ""
	if o.DPoP != nil {
		dpopID = "dpop:" + o.DPoP.Thumbprint()
	}
	c.identity = strings.Join([]string{o.URL, string(o.AuthMethod), params.Encode(), o.CredentialID, o.TrustID, dpopID}, "\x00")
	if o.ActorTokenFile != "" || o.ActorID != "" { // tokens exchanged with another actor's are another's
		c.identity += "\x00actor:" + o.ActorTokenFile + "\x00" + o.ActorID
	}
	return c, nil
}

// withoutRedirects returns a copy of hc (a client with Go's default
// transport when nil) that never follows a redirect: a token endpoint,
// discovery document or JWKS that redirects is answered by its 3xx, so
// that credentials are never re-sent elsewhere.
func withoutRedirects(hc *http.Client) *http.Client {
	c := &http.Client{Transport: NewTransport(nil)}
	if hc != nil {
		copied := *hc
		c = &copied
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// Identity describes the requests this client makes, credentials aside. Two
// clients with the same identity obtain interchangeable tokens for the same
// credentials. It holds no secret.
func (c *Client) Identity() string { return c.identity }

// Budget is the longest Token can take when its context has no deadline:
// every attempt timing out, with the longest waits between them.
func (c *Client) Budget() time.Duration {
	b := time.Duration(c.opts.MaxRetries+1) * c.opts.Timeout
	for n := 1; n <= c.opts.MaxRetries; n++ {
		b += min(c.opts.Backoff<<min(n-1, 30), c.opts.MaxBackoff)
	}
	return b
}

// AttemptTimeout bounds one attempt.
func (c *Client) AttemptTimeout() time.Duration { return c.opts.Timeout }

// URL returns the token endpoint.
func (c *Client) URL() string { return c.opts.URL }

// Grant returns the grant the client asks with.
func (c *Client) Grant() Grant { return c.opts.Grant }

// Name returns the name the client's metrics carry (the policy's).
func (c *Client) Name() string { return c.opts.Name }

// Token obtains a token for creds, retrying as the package documentation
// says until ctx ends. Its error is always an *Error.
func (c *Client) Token(ctx context.Context, creds Credentials) (*Token, error) {
	start := time.Now()
	ctx, span := c.opts.Tracer.Start(ctx, "extauthz.idp.Token", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("extauthz.policy", c.opts.Name), attribute.String("server.address", c.host)))
	defer span.End()
	tok, err := c.token(ctx, creds)
	outcome := "ok"
	if err != nil {
		outcome = err.Kind.String()
		span.SetStatus(codes.Error, outcome)
		span.SetAttributes(attribute.Int("http.response.status_code", err.Status), attribute.Int("extauthz.attempts", err.Attempts))
	}
	span.SetAttributes(attribute.String("extauthz.outcome", outcome))
	c.opts.Metrics.IdPRequests.WithLabelValues(c.opts.Name, outcome).Inc()
	c.opts.Metrics.IdPDuration.WithLabelValues(c.opts.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	return tok, nil
}

func (c *Client) token(ctx context.Context, creds Credentials) (*Token, *Error) {
	for attempt := 1; ; attempt++ {
		tok, err := c.attempt(ctx, creds)
		if err == nil {
			return tok, nil
		}
		err.Attempts = attempt
		if err.Kind != KindUnavailable || attempt > c.opts.MaxRetries || ctx.Err() != nil {
			return nil, err
		}
		wait := c.backoff(attempt)
		if err.RetryAfter > 0 {
			wait = err.RetryAfter
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return nil, err // the next attempt could not finish in time
		}
		c.opts.Logger.Debug("retrying token request", zap.Error(err), zap.Int("attempt", attempt), zap.Duration("wait", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// backoff returns the wait before retry n (1-based): exponential, capped, with
// the upper half jittered so that many clients do not retry in step.
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MaxBackoff
	if n < 30 {
		d = min(c.opts.Backoff<<(n-1), c.opts.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

func (c *Client) attempt(ctx context.Context, creds Credentials) (*Token, *Error) {
	actx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	tok, err := c.post(actx, creds)
	if err != nil && err.Code == "use_dpop_nonce" && c.opts.DPoP != nil {
		// Once, with the nonce the endpoint just gave: a new request, with
		// a new client assertion as well as a new proof, since an endpoint
		// may have spent the first assertion's jti on the refused one.
		tok, err = c.post(actx, creds)
	}
	return tok, err
}

// form returns the body of one token request: the grant's parameters and
// the client's authentication in the body, with a client assertion made
// for this request alone.
func (c *Client) form(creds Credentials) (string, *Error) {
	form := maps.Clone(c.params)
	switch c.opts.AuthMethod {
	case ClientSecretPost:
		form.Set("client_id", creds.ID)
		form.Set("client_secret", creds.Secret.Reveal())
	case TLSClientAuth:
		form.Set("client_id", creds.ID)
	case PrivateKeyJWT, ClientSecretJWT, FederatedJWT:
		assertion, err := c.assertion(creds)
		if err != nil {
			return "", err
		}
		form.Set("client_id", creds.ID)
		form.Set("client_assertion_type", AssertionType)
		form.Set("client_assertion", assertion)
	}
	if c.actor != nil {
		a, err := c.actor.read(c.opts.Now())
		if err != nil {
			return "", &Error{Kind: KindUnavailable, Err: fmt.Errorf("the actor token: %w", err)}
		}
		creds.Actor = secret.New(a)
	}
	if err := c.opts.Grant.subject(form, creds); err != nil {
		return "", err
	}
	return form.Encode(), nil
}

// post sends one token request, made anew (assertion, DPoP proof), and
// reads its answer.
func (c *Client) post(ctx context.Context, creds Credentials) (*Token, *Error) {
	body, ferr := c.form(creds)
	if ferr != nil {
		return nil, ferr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.opts.URL, strings.NewReader(body))
	if err != nil {
		return nil, &Error{Kind: KindRefused, Err: redactURL(err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.opts.AuthMethod == ClientSecretBasic {
		// RFC 6749 §2.3.1: id and secret are form-urlencoded first.
		req.SetBasicAuth(url.QueryEscape(creds.ID), url.QueryEscape(creds.Secret.Reveal()))
	}
	if k := c.opts.DPoP; k != nil {
		nonce := ""
		if n := c.nonce.Load(); n != nil {
			nonce = *n
		}
		proof, err := k.Proof(http.MethodPost, c.opts.URL, "", nonce, c.opts.Now())
		if err != nil {
			return nil, &Error{Kind: KindRefused, Err: fmt.Errorf("signing a DPoP proof: %w", err)}
		}
		req.Header.Set("DPoP", proof)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Err: redactURL(err)}
	}
	defer resp.Body.Close()
	if n := resp.Header.Get("DPoP-Nonce"); n != "" && c.opts.DPoP != nil && len(n) <= 1024 {
		c.nonce.Store(&n) // the endpoint's latest, for every later proof
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Status: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	return c.answer(resp, data)
}

// redactURL returns err fit for a message: a *url.Error (net/http's, and
// url.Parse's) without its URL, keeping the operation and cause, and the
// text of any other with every URL in it redacted (secret.RedactURLs), as
// keyfunc's errors quote the JWKS URL. errors.Is and errors.As still reach
// the causes; print the error redactURL returns, never a cause of it.
func redactURL(err error) error {
	if err == nil {
		return nil
	}
	if ue, ok := err.(*url.Error); ok {
		err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	if text, red := err.Error(), secret.RedactURLs(err.Error()); red != text {
		return &redactedError{text: red, err: err}
	}
	return err
}

// redactedError is an error whose text has its URLs redacted.
type redactedError struct {
	text string
	err  error
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }

// check reports an assertion configuration that cannot sign.
func (a *Assertion) check() error {
	if a == nil || a.Key == nil {
		return errors.New("idp: private_key_jwt needs a signing key")
	}
	alg, err := a.method()
	if err != nil {
		return err
	}
	a.Algorithm = alg.Alg()
	return nil
}

// method returns the signing method for the key and the algorithm asked for.
func (a *Assertion) method() (jwt.SigningMethod, error) {
	switch k := a.Key.(type) {
	case *rsa.PrivateKey:
		if a.Algorithm == "" || a.Algorithm == "RS256" {
			return jwt.SigningMethodRS256, nil
		}
	case *ecdsa.PrivateKey:
		if k.Curve.Params().Name == "P-256" && (a.Algorithm == "" || a.Algorithm == "ES256") {
			return jwt.SigningMethodES256, nil
		}
	}
	return nil, fmt.Errorf("idp: a %T cannot sign %q assertions: use an RSA key for RS256 or a P-256 EC key for ES256", a.Key, a.Algorithm)
}

// assertion returns the client assertion of creds: signed anew for
// private_key_jwt (the key) and client_secret_jwt (the secret, HS256) — iss
// and sub the client, aud the token endpoint, a short exp and a unique
// jti — or the file's for federated_jwt.
func (c *Client) assertion(creds Credentials) (string, *Error) {
	now := c.opts.Now()
	if c.federated != nil {
		a, err := c.federated.read(now)
		if err != nil {
			return "", &Error{Kind: KindUnavailable, Err: err}
		}
		return a, nil
	}
	var method jwt.SigningMethod
	var key any
	audience, lifetime, kid := c.opts.URL, time.Minute, ""
	if c.opts.AuthMethod == ClientSecretJWT {
		method, key = jwt.SigningMethodHS256, []byte(creds.Secret.Reveal())
	} else {
		a := c.opts.Assertion
		m, err := a.method()
		if err != nil {
			return "", &Error{Kind: KindRefused, Err: err}
		}
		method, key, audience, lifetime, kid = m, a.Key, a.Audience, a.Lifetime, a.KeyID
	}
	var jti [16]byte
	if _, err := cryptorand.Read(jti[:]); err != nil {
		return "", &Error{Kind: KindRefused, Err: err}
	}
	tok := jwt.NewWithClaims(method, jwt.RegisteredClaims{
		Issuer:    creds.ID,
		Subject:   creds.ID,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
		ID:        hex.EncodeToString(jti[:]),
	})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	signed, err := tok.SignedString(key)
	if err != nil {
		return "", &Error{Kind: KindRefused, Err: err}
	}
	return signed, nil
}

// headerSafe reports a token that can travel in a header as it is: visible
// ASCII only, no spaces or control characters.
func headerSafe(tok string) bool {
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// NewTransport returns an HTTP transport for token endpoints: Go's defaults
// (proxy from the environment, HTTP/2, keep-alive) with tlsConfig, if any.
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	if tlsConfig != nil {
		t.TLSClientConfig = tlsConfig.Clone()
	}
	return t
}
