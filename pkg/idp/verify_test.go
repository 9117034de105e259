package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/testidp"
)

func issued(t *testing.T, s *testidp.Server, id string) string {
	t.Helper()
	c := newClient(t, Options{URL: s.TokenURL})
	tok, err := c.Token(context.Background(), Credentials{ID: id, Secret: app.Secret})
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken.Reveal()
}

func newVerifier(t *testing.T, o VerifierOptions) *Verifier {
	t.Helper()
	v, err := NewVerifier(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func wantKind(t *testing.T, err error, kind Kind) {
	t.Helper()
	var e *Error
	switch {
	case kind == 0 && err != nil:
		t.Errorf("error %v, want none", err)
	case kind != 0 && (!errors.As(err, &e) || e.Kind != kind):
		t.Errorf("error %v, want kind %v", err, kind)
	}
}

func TestVerify(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	s.AddClient("early", testidp.Client{Secret: "s3cret", Claims: map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}})
	good := issued(t, s, "app")
	ctx := context.Background()

	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL}).Verify(ctx, good), 0)
	wantKind(t, newVerifier(t, VerifierOptions{Issuer: s.Issuer}).Verify(ctx, good), 0)
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL, Issuer: s.Issuer}).Verify(ctx, good), 0)
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL, Issuer: "https://someone-else"}).Verify(ctx, good), KindBadResponse)
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL, Audience: "https://api"}).Verify(ctx, good), KindBadResponse)
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL}).Verify(ctx, issued(t, s, "early")), KindBadResponse)
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL}).Verify(ctx, "not-a-jwt"), KindBadResponse)

	aud := newClient(t, Options{URL: s.TokenURL, Audience: "https://api"})
	tok, err := aud.Token(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL, Audience: "https://api"}).Verify(ctx, tok.AccessToken.Reveal()), 0)

	s.SetBehavior(testidp.Behavior{ForeignSignature: true})
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL}).Verify(ctx, issued(t, s, "app")), KindBadResponse)

	past := newIdP(t, testidp.Options{Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: past.JWKSURL}).Verify(ctx, issued(t, past, "app")), KindBadResponse)
}

func TestVerifyKeyRotationAndUnknownKeys(t *testing.T) {
	s := newIdP(t, testidp.Options{FreshKey: true})
	ctx := context.Background()
	v := newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL, UnknownKeyRefresh: time.Millisecond})
	wantKind(t, v.Verify(ctx, issued(t, s, "app")), 0)
	if n := s.JWKSRequests(); n != 1 {
		t.Fatalf("%d JWKS requests for the first token, want 1", n)
	}
	for range 10 {
		wantKind(t, v.Verify(ctx, issued(t, s, "app")), 0)
	}
	if n := s.JWKSRequests(); n != 1 {
		t.Errorf("%d JWKS requests for 11 tokens with a known key, want 1", n)
	}
	if err := s.RotateKey(); err != nil {
		t.Fatal(err)
	}
	wantKind(t, v.Verify(ctx, issued(t, s, "app")), 0)
	if n := s.JWKSRequests(); n != 2 {
		t.Errorf("a rotated key made %d JWKS requests in all, want 2", n)
	}

	// Tokens with a kid nobody published refresh the JWKS at most at the
	// configured rate.
	limited := newVerifier(t, VerifierOptions{JWKSURL: s.JWKSURL, UnknownKeyRefresh: time.Hour})
	wantKind(t, limited.Verify(ctx, issued(t, s, "app")), 0)
	before := s.JWKSRequests()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	for i := range 20 {
		forged := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
		forged.Header["kid"] = "unknown-" + string(rune('a'+i))
		signed, _ := forged.SignedString(key)
		wantKind(t, limited.Verify(ctx, signed), KindBadResponse)
	}
	if n := s.JWKSRequests() - before; n > 1 {
		t.Errorf("20 unknown kids made %d JWKS requests, want at most 1", n)
	}
}

func TestVerifyWithoutKeys(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	tok := issued(t, s, "app")
	ctx := context.Background()
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: "http://127.0.0.1:1/jwks"}).Verify(ctx, tok), KindUnavailable)
	wantKind(t, newVerifier(t, VerifierOptions{Issuer: "http://127.0.0.1:1"}).Verify(ctx, tok), KindUnavailable)
	wantKind(t, newVerifier(t, VerifierOptions{Issuer: s.Issuer + "/other"}).Verify(ctx, tok), KindUnavailable)
	if _, err := NewVerifier(VerifierOptions{}); err == nil {
		t.Error("a verifier without keys was accepted")
	}
}

// TestVerifierFollowsNoRedirect: a JWKS or discovery document that
// redirects is not fetched from elsewhere, so another server's keys never
// vouch for tokens.
func TestVerifierFollowsNoRedirect(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	good := issued(t, s, "app")
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := s.JWKSURL
		if strings.HasSuffix(r.URL.Path, "/openid-configuration") {
			target = s.URL + "/.well-known/openid-configuration"
		}
		http.Redirect(w, r, target, http.StatusFound)
	}))
	defer redirector.Close()
	ctx := context.Background()
	wantKind(t, newVerifier(t, VerifierOptions{JWKSURL: redirector.URL + "/jwks"}).Verify(ctx, good), KindUnavailable)
	wantKind(t, newVerifier(t, VerifierOptions{Issuer: redirector.URL}).Verify(ctx, good), KindUnavailable)
	if n := s.JWKSRequests(); n != 0 {
		t.Errorf("the JWKS behind the redirect was fetched %d times", n)
	}
}
