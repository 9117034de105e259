package idp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
)

func TestPrivateKeyJWT(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		key     crypto.Signer
		wantAlg string
	}{{"RS256", rsaKey, "RS256"}, {"ES256", ecKey, "ES256"}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newIdP(t, testidp.Options{})
			s.AddClient("signer", testidp.Client{PublicKey: tc.key.Public()})
			c := newClient(t, Options{URL: s.TokenURL, AuthMethod: PrivateKeyJWT, Assertion: &Assertion{Key: tc.key, KeyID: "key-1"}})
			signer := Credentials{ID: "signer"}
			for range 2 { // a second assertion has a new jti, so the endpoint sees no replay
				if _, err := c.Token(context.Background(), signer); err != nil {
					t.Fatalf("token: %v", err)
				}
			}
			req := s.Log()[0]
			if req.AuthMethod != "private_key_jwt" || req.Form.Get("client_id") != "signer" || req.Form.Has("client_secret") || req.Header.Get("Authorization") != "" {
				t.Errorf("request %+v", req)
			}
			tok, _, err := jwt.NewParser().ParseUnverified(req.Form.Get("client_assertion"), jwt.MapClaims{})
			if err != nil {
				t.Fatal(err)
			}
			if tok.Header["kid"] != "key-1" || tok.Header["alg"] != tc.wantAlg {
				t.Errorf("assertion header %v", tok.Header)
			}
		})
	}

	t.Run("the wrong key is rejected", func(t *testing.T) {
		s := newIdP(t, testidp.Options{})
		s.AddClient("signer", testidp.Client{PublicKey: rsaKey.Public()})
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := newClient(t, Options{URL: s.TokenURL, AuthMethod: PrivateKeyJWT, Assertion: &Assertion{Key: other}}).Token(context.Background(), Credentials{ID: "signer"})
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindRejected {
			t.Errorf("error %v, want rejected", err)
		}
	})
	t.Run("an audience other than the endpoint is rejected", func(t *testing.T) {
		s := newIdP(t, testidp.Options{})
		s.AddClient("signer", testidp.Client{PublicKey: rsaKey.Public()})
		_, err := newClient(t, Options{URL: s.TokenURL, AuthMethod: PrivateKeyJWT, Assertion: &Assertion{Key: rsaKey, Audience: "https://elsewhere"}}).Token(context.Background(), Credentials{ID: "signer"})
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindRejected {
			t.Errorf("error %v, want rejected", err)
		}
	})
	t.Run("a key that cannot sign the algorithm", func(t *testing.T) {
		if _, err := NewClient(Options{URL: "https://x/t", AuthMethod: PrivateKeyJWT, Assertion: &Assertion{Key: ecKey, Algorithm: "RS256"}}); err == nil {
			t.Error("an EC key accepted for RS256")
		}
		if _, err := NewClient(Options{URL: "https://x/t", AuthMethod: PrivateKeyJWT}); err == nil {
			t.Error("private_key_jwt accepted without a key")
		}
	})
}

// TestTLSClientAuth runs against an endpoint that requires mutual TLS.
func TestTLSClientAuth(t *testing.T) {
	ca := testpki.NewCA(t)
	s := newIdP(t, testidp.Options{TLS: true, ClientCAs: ca.Pool()})
	s.AddClient("mtls-client", testidp.Client{TLSClientAuth: true})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(s.CertificatePEM()))
	transport := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: NewTransport(&tls.Config{RootCAs: roots, Certificates: certs})}
	}
	cert := ca.Issue(t, "mtls-client").TLSCertificate(t)

	c := newClient(t, Options{URL: s.TokenURL, AuthMethod: TLSClientAuth, HTTPClient: transport(cert)})
	if _, err := c.Token(context.Background(), Credentials{ID: "mtls-client"}); err != nil {
		t.Fatalf("with the certificate: %v", err)
	}
	req := s.Log()[0]
	if req.AuthMethod != "tls_client_auth" || req.Form.Get("client_id") != "mtls-client" || req.Form.Has("client_secret") {
		t.Errorf("request %+v", req)
	}

	var e *Error
	_, err := newClient(t, Options{URL: s.TokenURL, AuthMethod: TLSClientAuth, HTTPClient: transport(cert)}).Token(context.Background(), Credentials{ID: "someone-else"})
	if !errors.As(err, &e) || e.Kind != KindRejected {
		t.Errorf("a certificate for another client: %v, want rejected", err)
	}
	_, err = newClient(t, Options{URL: s.TokenURL, AuthMethod: TLSClientAuth, HTTPClient: transport()}).Token(context.Background(), Credentials{ID: "mtls-client"})
	if !errors.As(err, &e) || e.Kind != KindUnavailable {
		t.Errorf("no certificate: %v, want the handshake to fail", err)
	}
}

func TestIdentityCarriesCredentialID(t *testing.T) {
	a := newClient(t, Options{URL: "https://x/t", AuthMethod: TLSClientAuth, CredentialID: "cert-a"})
	b := newClient(t, Options{URL: "https://x/t", AuthMethod: TLSClientAuth, CredentialID: "cert-b"})
	if a.Identity() == b.Identity() {
		t.Error("clients with different certificates share an identity")
	}
}
