package idp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/secret"
)

func TestClientSecretJWT(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	c := newClient(t, Options{URL: s.TokenURL, AuthMethod: ClientSecretJWT})
	if _, err := c.Token(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	req := s.Log()[0]
	if req.AuthMethod != "client_secret_jwt" || req.Form.Has("client_secret") || req.Header.Get("Authorization") != "" || req.Form.Get("client_id") != "app" {
		t.Errorf("request %+v", req)
	}
	var e *Error
	if _, err := c.Token(context.Background(), Credentials{ID: "app", Secret: secret.New("wrong")}); !errors.As(err, &e) || e.Kind != KindRejected {
		t.Errorf("a wrong secret: %v, want rejected", err)
	}
}

// clusterIssuer projects a test cluster's service account tokens into a
// file, as the kubelet does.
type clusterIssuer struct {
	*testidp.ClusterIssuer
	writes int
}

const (
	saSubject  = "system:serviceaccount:extauthz:extauthz"
	saAudience = "api://AzureADTokenExchange"
)

func newClusterIssuer(t *testing.T) *clusterIssuer {
	ci, err := testidp.NewClusterIssuer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ci.Close)
	return &clusterIssuer{ClusterIssuer: ci}
}

// project writes a token of the cluster to path, as the kubelet does.
func (ci *clusterIssuer) project(t *testing.T, path string, exp time.Time) string {
	t.Helper()
	tok, err := ci.Token(saSubject, saAudience, exp)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	// Each rotation gets its own modification time, as it would a while later.
	ci.writes++
	mtime := time.Unix(1_700_000_000+int64(ci.writes), 0)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestFederatedJWT(t *testing.T) {
	ci := newClusterIssuer(t)
	s := newIdP(t, testidp.Options{Federated: &testidp.Federated{Issuer: ci.Issuer, JWKSURL: ci.JWKSURL, Audience: saAudience}})
	s.AddClient("app-id", testidp.Client{FederatedSubject: saSubject})
	file := filepath.Join(t.TempDir(), "idp-token")
	first := ci.project(t, file, time.Now().Add(time.Hour))
	c := newClient(t, Options{URL: s.TokenURL, AuthMethod: FederatedJWT, AssertionFile: file})
	creds := Credentials{ID: "app-id"}
	if _, err := c.Token(context.Background(), creds); err != nil {
		t.Fatal(err)
	}
	req := s.Log()[0]
	if req.AuthMethod != "federated_jwt" || req.Form.Get("client_assertion") != first || req.Form.Get("client_id") != "app-id" ||
		req.Form.Get("client_assertion_type") != AssertionType {
		t.Errorf("request %+v", req)
	}
	// The kubelet rotates the token: the next request sends the new one.
	second := ci.project(t, file, time.Now().Add(2*time.Hour))
	if _, err := c.Token(context.Background(), creds); err != nil {
		t.Fatal(err)
	}
	if got := s.Log()[1].Form.Get("client_assertion"); got != second {
		t.Error("the rotated assertion was not sent")
	}
	// Another cluster's token: the IdP checks it against the trusted
	// issuer's published keys, and rejects the client.
	other := newClusterIssuer(t)
	other.project(t, file, time.Now().Add(time.Hour))
	_, err := c.Token(context.Background(), creds)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindRejected {
		t.Errorf("another cluster's token: %v, want rejected", err)
	}
	if ci.JWKSRequests() == 0 {
		t.Error("the IdP never fetched the cluster's keys")
	}
	// A token about to expire is not sent: the file is not being renewed.
	exp := time.Now().Add(30 * time.Second)
	ci.project(t, file, exp)
	_, err = c.Token(context.Background(), creds)
	if !errors.As(err, &e) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), exp.UTC().Format("2006-01-02T15:04:05Z")) {
		t.Errorf("an expiring assertion: %v, want an error naming %s and its exp", err, file)
	}
	if n := s.Requests(); n != 3 {
		t.Errorf("%d token requests, want none for the expiring assertion", n)
	}
}

func TestDPoPTokenRequests(t *testing.T) {
	key, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		behavior     testidp.Behavior
		wantKind     Kind
		wantRequests int64
	}{
		{"bound", testidp.Behavior{}, 0, 1},
		{"a nonce, once", testidp.Behavior{DPoPNonce: "n-1"}, 0, 2},
		{"a nonce demanded twice", testidp.Behavior{DPoPNonceAlways: true}, KindRefused, 2},
		{"the endpoint ignores the proof", testidp.Behavior{IgnoreDPoP: true}, KindBadResponse, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newIdP(t, testidp.Options{})
			s.SetBehavior(tt.behavior)
			c := newClient(t, Options{URL: s.TokenURL, DPoP: key})
			tok, err := c.Token(context.Background(), app)
			var e *Error
			switch {
			case tt.wantKind == 0 && err != nil:
				t.Fatal(err)
			case tt.wantKind != 0 && (!errors.As(err, &e) || e.Kind != tt.wantKind):
				t.Fatalf("error %v, want kind %v", err, tt.wantKind)
			}
			if n := s.Requests(); n != tt.wantRequests {
				t.Errorf("%d token requests, want %d", n, tt.wantRequests)
			}
			if err != nil {
				return
			}
			var claims struct {
				jwt.RegisteredClaims
				Cnf struct {
					JKT string `json:"jkt"`
				} `json:"cnf"`
			}
			if _, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken.Reveal(), &claims); err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(tok.Type, "DPoP") || claims.Cnf.JKT != key.Thumbprint() {
				t.Errorf("token_type %q, cnf.jkt %q; want DPoP bound to %s", tok.Type, claims.Cnf.JKT, key.Thumbprint())
			}
			// The nonce is remembered: the next request carries it at once.
			before := s.Requests()
			if _, err := c.Token(context.Background(), app); err != nil {
				t.Fatal(err)
			}
			if n := s.Requests() - before; n != 1 {
				t.Errorf("the next request took %d tries", n)
			}
		})
	}
	a := newClient(t, Options{URL: "https://x/t"})
	b := newClient(t, Options{URL: "https://x/t", DPoP: key})
	if a.Identity() == b.Identity() {
		t.Error("a DPoP client shares its identity with a Bearer one")
	}
}

// TestNonceRetryIsANewRequest: an endpoint that authenticates the client,
// spending its assertion's jti, before it asks for a DPoP nonce gets a new
// assertion and a new proof on the retry, for every assertion method.
func TestNonceRetryIsANewRequest(t *testing.T) {
	key, err := dpop.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []AuthMethod{ClientSecretJWT, PrivateKeyJWT} {
		t.Run(string(method), func(t *testing.T) {
			s := newIdP(t, testidp.Options{})
			s.SetBehavior(testidp.Behavior{DPoPNonce: "n-1", AuthenticateFirst: true})
			o := Options{URL: s.TokenURL, AuthMethod: method, DPoP: key}
			if method == PrivateKeyJWT {
				signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				s.AddClient("app", testidp.Client{Secret: "s3cret", PublicKey: &signer.PublicKey})
				o.Assertion = &Assertion{Key: signer}
			}
			c := newClient(t, o)
			if _, err := c.Token(context.Background(), app); err != nil {
				t.Fatalf("the retry with the nonce: %v", err)
			}
			log := s.Log()
			if len(log) != 1 || s.Requests() != 2 {
				t.Fatalf("%d requests, %d past the nonce; want the first refused for its nonce and one more", s.Requests(), len(log))
			}
			// The refused request's assertion was spent: had the retry
			// re-sent it, the endpoint would have answered replayed.
			if jti(t, log[0].Form.Get("client_assertion")) == "" || log[0].DPoP == nil || log[0].DPoP.Nonce != "n-1" {
				t.Errorf("the retry: assertion %q, proof %+v", log[0].Form.Get("client_assertion"), log[0].DPoP)
			}
		})
	}
}

func jti(t *testing.T, assertion string) string {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}
