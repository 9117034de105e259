package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// TestGatewayAuthMethods configures private_key_jwt and tls_client_auth
// policies with secret references, against an IdP that requires mutual TLS
// and checks assertions.
func TestGatewayAuthMethods(t *testing.T) {
	ca := testpki.NewCA(t)
	idp, err := testidp.New(testidp.Options{TLS: true, ClientCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	idp.AddClient("signer", testidp.Client{PublicKey: key.Public(), Claims: map[string]any{"grp": "signed"}})
	idp.AddClient("mtls-client", testidp.Client{TLSClientAuth: true, Claims: map[string]any{"grp": "mtls"}})

	cert := ca.Issue(t, "mtls-client")
	dir := t.TempDir()
	for name, content := range map[string]string{
		"signer/key.pem": testpki.PKCS8PEM(t, key),
		"mtls/tls.crt":   cert.CertPEM,
		"mtls/tls.key":   cert.KeyPEM,
		"idp/ca.crt":     idp.CertificatePEM(),
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := fmt.Sprintf(`
secrets: {dir: %q}
policies:
  signed:
    url: %[2]s
    authMethod: private_key_jwt
    clientID: signer
    clientAssertion: {key: "urn:k8s:secret:signer:key.pem", keyID: k1}
    forwardHeaders: {X-Group: grp}
    clientConfig:
      tls: {ca: "urn:k8s:secret:idp:ca.crt", cert: "urn:k8s:secret:mtls:tls.crt", key: "urn:k8s:secret:mtls:tls.key"}
  mtls:
    url: %[2]s
    authMethod: tls_client_auth
    clientID: mtls-client
    forwardHeaders: {X-Group: grp}
    clientConfig:
      tls: {ca: "urn:k8s:secret:idp:ca.crt", cert: "urn:k8s:secret:mtls:tls.crt", key: "urn:k8s:secret:mtls:tls.key"}
`, dir, idp.TokenURL)
	cfg, err := config.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	cache := tokencache.New(tokencache.Options{MaxEntries: 10})
	srv, _ := serve(t, cfg, cache, Options{Tokens: cache, Logger: zap.NewNop()})
	for policy, wantGroup := range map[string]string{"signed": "signed", "mtls": "mtls"} {
		resp, err := srv.Check(t.Context(), checkRequest(policy, "h", "/", nil))
		if err != nil {
			t.Fatal(err)
		}
		r := read(t, resp)
		if r.status != 200 || r.headers["x-group"] != wantGroup {
			t.Errorf("%s: %d %v %v", policy, r.status, r.body, r.headers["x-group"])
		}
	}
	methods := map[string]bool{}
	for _, req := range idp.Log() {
		methods[req.AuthMethod] = true
	}
	if !methods["private_key_jwt"] || !methods["tls_client_auth"] {
		t.Errorf("the IdP saw %v", methods)
	}
}

func TestVerification(t *testing.T) {
	f := newFixture(t, `
  verified:
    url: {{url}}
    jwksURL: {{jwks}}
    forwardHeaders: {X-Group: grp}
  discovered:
    url: {{url}}
    issuer: {{issuer}}
    forwardHeaders: {X-Group: grp}
`)
	app := map[string]string{"authorization": basic("orders-app", "s3cret")}
	for _, policy := range []string{"verified", "discovered"} {
		if r := read(t, f.check(checkRequest(policy, "h", "/", app))); r.status != 200 || r.headers["x-group"] != "admin" {
			t.Errorf("%s: %d %v", policy, r.status, r.body)
		}
	}
	// The unverified policy "post" asks for the same token; it must not
	// share one with the verified policies, nor they with it.
	before := f.idp.Requests()
	if r := read(t, f.check(checkRequest("post", "h", "/", app))); r.status != 200 || r.meta["token_cache"] != "miss" {
		t.Errorf("unverified policy: %d %s", r.status, r.meta["token_cache"])
	}
	if f.idp.Requests() != before+1 {
		t.Error("an unverified policy reused a verified policy's token")
	}

	f.idp.SetBehavior(testidp.Behavior{ForeignSignature: true})
	viewer := map[string]string{"authorization": basic("viewer-app", "v1ewer")}
	r := read(t, f.check(checkRequest("verified", "h", "/", viewer)))
	if r.status != 502 || r.body["error"] != "invalid_token_response" {
		t.Errorf("bad signature: %d %v", r.status, r.body)
	}
	// Without verification, the same forged token passes: that is what
	// verification is for.
	if r := read(t, f.check(checkRequest("post", "h", "/", viewer))); r.status != 200 {
		t.Errorf("unverified policy with a forged token: %d", r.status)
	}
}
