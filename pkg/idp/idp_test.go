package idp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/secret"
)

func newIdP(t *testing.T, o testidp.Options) *testidp.Server {
	t.Helper()
	s, err := testidp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddClient("app", testidp.Client{Secret: "s3cret"})
	s.AddClient("odd:id/+", testidp.Client{Secret: "s e:c%r&e=t+"})
	return s
}

func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var app = Credentials{ID: "app", Secret: secret.New("s3cret")}

func TestToken(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	c := newClient(t, Options{URL: s.TokenURL, Audience: "https://api", Scopes: []string{"a", "b"}, ExtraParams: map[string]string{"resource": "https://r"}})
	tok, err := c.Token(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok.AccessToken.Reveal(), ".") != 2 || tok.Type != "Bearer" || tok.ExpiresIn != testidp.DefaultLifetime {
		t.Errorf("token %q %q %v", tok.AccessToken.Reveal(), tok.Type, tok.ExpiresIn)
	}
	req := s.Log()[0]
	want := map[string]string{"grant_type": "client_credentials", "audience": "https://api", "scope": "a b", "resource": "https://r"}
	for k, v := range want {
		if got := req.Form.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
	if req.AuthMethod != "client_secret_basic" || req.Form.Has("client_secret") || req.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("request %+v", req)
	}
}

func TestClientAuthentication(t *testing.T) {
	odd := Credentials{ID: "odd:id/+", Secret: secret.New("s e:c%r&e=t+")}
	for _, method := range []AuthMethod{ClientSecretBasic, ClientSecretPost} {
		t.Run(string(method), func(t *testing.T) {
			s := newIdP(t, testidp.Options{})
			c := newClient(t, Options{URL: s.TokenURL, AuthMethod: method})
			if _, err := c.Token(context.Background(), odd); err != nil {
				t.Fatalf("credentials with reserved characters: %v", err)
			}
			if got := s.Log()[0].AuthMethod; got != string(method) {
				t.Errorf("endpoint saw %s", got)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name         string
		behavior     testidp.Behavior
		creds        Credentials
		maxRetries   int
		wantKind     Kind
		wantRequests int64
		wantRetry    time.Duration
	}{
		{"wrong secret is not retried", testidp.Behavior{}, Credentials{ID: "app", Secret: secret.New("x")}, 3, KindRejected, 1, 0},
		{"401 without a code", testidp.Behavior{FailStatus: 401, FailCode: "-"}, app, 3, KindRejected, 1, 0},
		{"unauthorized_client", testidp.Behavior{FailStatus: 400, FailCode: "unauthorized_client"}, app, 3, KindRejected, 1, 0},
		{"invalid_scope", testidp.Behavior{FailStatus: 400, FailCode: "invalid_scope"}, app, 3, KindForbidden, 1, 0},
		{"invalid_target", testidp.Behavior{FailStatus: 400, FailCode: "invalid_target"}, app, 3, KindForbidden, 1, 0},
		{"403", testidp.Behavior{FailStatus: 403, FailCode: "-"}, app, 3, KindForbidden, 1, 0},
		{"other 4xx", testidp.Behavior{FailStatus: 400, FailCode: "invalid_request"}, app, 3, KindRefused, 1, 0},
		{"5xx retried until the retries run out", testidp.Behavior{FailStatus: 503}, app, 3, KindUnavailable, 4, 0},
		{"no retries", testidp.Behavior{FailStatus: 500}, app, 0, KindUnavailable, 1, 0},
		{"429 retried", testidp.Behavior{FailStatus: 429, FailCode: "-"}, app, 2, KindUnavailable, 3, 0},
		{"Retry-After beyond the deadline stops retrying", testidp.Behavior{FailStatus: 429, RetryAfter: "3600"}, app, 3, KindUnavailable, 1, time.Hour},
		{"recovers", testidp.Behavior{FailStatus: 502, FailFirst: 2}, app, 3, 0, 3, 0},
		{"no access_token", testidp.Behavior{Answer: testidp.AnswerNoAccessToken}, app, 3, KindBadResponse, 1, 0},
		{"not JSON", testidp.Behavior{Answer: testidp.AnswerBadJSON}, app, 3, KindBadResponse, 1, 0},
		{"over 1 MiB", testidp.Behavior{Answer: testidp.AnswerHuge}, app, 3, KindBadResponse, 1, 0},
		{"token_type mac", testidp.Behavior{Answer: testidp.AnswerMACTokenType}, app, 3, KindBadResponse, 1, 0},
		{"unsafe token", testidp.Behavior{Answer: testidp.AnswerUnsafeToken}, app, 3, KindBadResponse, 1, 0},
		{"error with status 200", testidp.Behavior{Answer: testidp.AnswerErrorIn200}, app, 3, KindRefused, 1, 0},
		{"access_token not a string", testidp.Behavior{Answer: testidp.AnswerNumericToken}, app, 3, KindBadResponse, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newIdP(t, testidp.Options{})
			s.SetBehavior(tt.behavior)
			c := newClient(t, Options{URL: s.TokenURL, MaxRetries: tt.maxRetries})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Token(ctx, tt.creds)
			var e *Error
			switch {
			case tt.wantKind == 0 && err != nil:
				t.Fatalf("error %v, want a token", err)
			case tt.wantKind != 0 && (!errors.As(err, &e) || e.Kind != tt.wantKind):
				t.Fatalf("error %v, want kind %v", err, tt.wantKind)
			}
			if n := s.Requests(); n != tt.wantRequests {
				t.Errorf("%d requests, want %d", n, tt.wantRequests)
			}
			if e != nil && e.RetryAfter != tt.wantRetry {
				t.Errorf("RetryAfter %v, want %v", e.RetryAfter, tt.wantRetry)
			}
			if e != nil && strings.Contains(e.Error(), "s3cret") {
				t.Errorf("error text holds the secret: %v", e)
			}
		})
	}
}

func TestOddAnswers(t *testing.T) {
	tests := []struct {
		answer   testidp.Answer
		wantType string
		wantTTL  time.Duration
	}{
		{testidp.AnswerStringExpiresIn, "Bearer", testidp.DefaultLifetime},
		{testidp.AnswerNoExpiresIn, "Bearer", 0},
		{testidp.AnswerNoTokenType, "", testidp.DefaultLifetime},
		{testidp.AnswerOpaque, "Bearer", testidp.DefaultLifetime},
		{testidp.AnswerForm, "bearer", time.Minute},
		{testidp.AnswerFloatExpiresIn, "Bearer", testidp.DefaultLifetime},
		{testidp.AnswerHugeExpiresIn, "Bearer", MaxLifetime},
		{testidp.AnswerNegativeExpiresIn, "Bearer", 0},
	}
	for _, tt := range tests {
		s := newIdP(t, testidp.Options{})
		s.SetBehavior(testidp.Behavior{Answer: tt.answer})
		tok, err := newClient(t, Options{URL: s.TokenURL}).Token(context.Background(), app)
		if err != nil || tok.Type != tt.wantType || tok.ExpiresIn != tt.wantTTL {
			t.Errorf("answer %d: %+v, %v; want type %q, lifetime %v", tt.answer, tok, err, tt.wantType, tt.wantTTL)
		}
	}
}

// TestAttemptTimeout would hang if an attempt were not bounded.
func TestAttemptTimeout(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	s.SetBehavior(testidp.Behavior{Latency: time.Hour})
	c := newClient(t, Options{URL: s.TokenURL, Timeout: 50 * time.Millisecond, MaxRetries: 1})
	_, err := c.Token(context.Background(), app)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable || e.Attempts != 2 {
		t.Fatalf("error %v, want unavailable after 2 attempts", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not say it timed out", err)
	}
}

func TestContextBoundsTheWholeFetch(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	s.SetBehavior(testidp.Behavior{Latency: time.Hour})
	c := newClient(t, Options{URL: s.TokenURL, Timeout: time.Hour, MaxRetries: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Token(ctx, app)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable || e.Attempts != 1 {
		t.Fatalf("error %v, want unavailable after 1 attempt", err)
	}
}

func TestTLS(t *testing.T) {
	s := newIdP(t, testidp.Options{TLS: true})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(s.CertificatePEM()))

	trusted := &http.Client{Transport: NewTransport(tlsConfig(pool, false))}
	if _, err := newClient(t, Options{URL: s.TokenURL, HTTPClient: trusted}).Token(context.Background(), app); err != nil {
		t.Errorf("with the CA: %v", err)
	}
	insecure := &http.Client{Transport: NewTransport(tlsConfig(nil, true))}
	if _, err := newClient(t, Options{URL: s.TokenURL, HTTPClient: insecure}).Token(context.Background(), app); err != nil {
		t.Errorf("with insecureSkipVerify: %v", err)
	}
	_, err := newClient(t, Options{URL: s.TokenURL, MaxRetries: 0}).Token(context.Background(), app)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want a certificate error", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		give string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{" 7 ", 7 * time.Second},
		{"-5", 0},
		{"soon", 0},
		{"Wed, 25 Nov 2026 12:00:30 GMT", 30 * time.Second},
		{"Wed, 25 Nov 2026 11:00:00 GMT", 0},
		{"99999999", time.Hour},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.give, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

func TestBudget(t *testing.T) {
	c := newClient(t, Options{URL: "https://x/t", Timeout: time.Second, MaxRetries: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 150 * time.Millisecond})
	if got, want := c.Budget(), 4*time.Second+100*time.Millisecond+150*time.Millisecond+150*time.Millisecond; got != want {
		t.Errorf("Budget() = %v, want %v", got, want)
	}
}

func TestIdentity(t *testing.T) {
	base := Options{URL: "https://x/t", Audience: "a", Scopes: []string{"s"}}
	id := newClient(t, base).Identity()
	for _, o := range []Options{
		{URL: "https://y/t", Audience: "a", Scopes: []string{"s"}},
		{URL: "https://x/t", Audience: "b", Scopes: []string{"s"}},
		{URL: "https://x/t", Audience: "a", Scopes: []string{"s", "t"}},
		{URL: "https://x/t", Audience: "a", Scopes: []string{"s"}, AuthMethod: ClientSecretPost},
		{URL: "https://x/t", Audience: "a", Scopes: []string{"s"}, ExtraParams: map[string]string{"resource": "r"}},
		{URL: "https://x/t", Audience: "a", Scopes: []string{"s"}, TrustID: "ca=1"},
	} {
		if newClient(t, o).Identity() == id {
			t.Errorf("%+v has the identity of %+v", o, base)
		}
	}
	if newClient(t, base).Identity() != id {
		t.Error("identity is not stable")
	}
}

func tlsConfig(pool *x509.CertPool, insecure bool) *tls.Config {
	return &tls.Config{RootCAs: pool, InsecureSkipVerify: insecure}
}

func TestLifetime(t *testing.T) {
	c := newClient(t, Options{URL: "https://x/t"})
	for _, tt := range []struct {
		give string
		want time.Duration
	}{
		{"", 0}, {"null", 0}, {"3600", time.Hour}, {"3600.0", time.Hour}, {" 60 ", time.Minute}, {"1.5", 1500 * time.Millisecond},
		{"3.6e3", time.Hour}, {"1e30", MaxLifetime}, {"1e400", MaxLifetime}, {"Infinity", MaxLifetime},
		{"-5", 0}, {"0", 0}, {"NaN", 0}, {"soon", 0}, {"true", 0}, {"{}", 0},
	} {
		if got := c.lifetime(tt.give); got != tt.want {
			t.Errorf("lifetime(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

// TestNoRedirects: a token endpoint that redirects never gets the
// credentials re-sent, by any auth method, and its answer is unusable.
func TestNoRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token": "stolen", "token_type": "Bearer", "expires_in": 3600}`)
	}))
	defer thief.Close()
	for _, method := range []AuthMethod{ClientSecretBasic, ClientSecretPost} {
		t.Run(string(method), func(t *testing.T) {
			s := newIdP(t, testidp.Options{})
			s.SetBehavior(testidp.Behavior{RedirectTo: thief.URL + "/steal?x=1"})
			_, err := newClient(t, Options{URL: s.TokenURL, AuthMethod: method}).Token(context.Background(), app)
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindBadResponse || e.Status != 307 {
				t.Fatalf("a redirect: %v, want an unusable answer", err)
			}
			if !strings.Contains(err.Error(), strings.TrimPrefix(thief.URL, "http://")) || strings.Contains(err.Error(), "steal") {
				t.Errorf("error %q: want the Location's host only", err)
			}
			if n := elsewhere.Load(); n != 0 {
				t.Errorf("the redirect target got %d requests", n)
			}
		})
	}
}
