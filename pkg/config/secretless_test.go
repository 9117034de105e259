package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/idp"
)

// writeAssertion writes an unsigned JWT as the kubelet writes a projected
// service account token: the token endpoint, not extauthz, verifies it.
func writeAssertion(t *testing.T, path, sub string, exp time.Time) {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Issuer: "https://cluster.example", Subject: sub, Audience: jwt.ClaimStrings{"idp"},
		ExpiresAt: jwt.NewNumericDate(exp),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func ed25519PEM(t *testing.T) string {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return testpki.PKCS8PEM(t, k)
}

// TestFederated: the assertion file is the client's identity; a rotation
// that keeps iss, sub and aud changes nothing the cache or a reload sees.
func TestFederated(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "idp-token")
	writeAssertion(t, token, "system:serviceaccount:gw:extauthz", time.Now().Add(time.Hour))
	cfgPath := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(cfgPath, []byte("policies:\n  o:\n    url: https://idp.example/token\n    authMethod: federated_jwt\n    clientID: gw\n    clientAssertion: {file: idp-token}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() *Config {
		t.Helper()
		c, err := Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := load()
	p := first.Policies["o"]
	if p.Compiled.AssertionFile != token {
		t.Errorf("assertion file %q, want %q (relative to the configuration)", p.Compiled.AssertionFile, token)
	}
	var watched bool
	for _, f := range first.Files {
		watched = watched || f == token
	}
	if !watched {
		t.Errorf("files %v do not include the assertion", first.Files)
	}

	writeAssertion(t, token, "system:serviceaccount:gw:extauthz", time.Now().Add(2*time.Hour))
	rotated := load()
	if rotated.Fingerprint != first.Fingerprint || rotated.Policies["o"].Compiled.CredentialID != p.Compiled.CredentialID {
		t.Error("a rotation of the same identity changed the configuration's fingerprint or the credential identity")
	}
	writeAssertion(t, token, "system:serviceaccount:gw:other", time.Now().Add(time.Hour))
	other := load()
	if other.Fingerprint == first.Fingerprint || other.Policies["o"].Compiled.CredentialID == p.Compiled.CredentialID {
		t.Error("another subject left the fingerprint and the credential identity as they were")
	}
}

// secretlessProblems are TestProblems' cases of federated_jwt,
// client_secret_jwt and DPoP.
func secretlessProblems(t *testing.T) []problemCase {
	dir := t.TempDir()
	notJWT := filepath.Join(dir, "not-jwt")
	if err := os.WriteFile(notJWT, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, ecPEM := selfSigned(t)
	const url = "url: https://x/t"
	return []problemCase{
		{"federated without a file", "policies:\n  o: {" + url + ", authMethod: federated_jwt, clientID: a}\n", "policies.o.clientAssertion.file: federated_jwt needs the file"},
		{"federated without clientID", "policies:\n  o: {" + url + ", authMethod: federated_jwt, clientAssertion: {file: " + notJWT + "}}\n", "policies.o.clientID: federated_jwt authenticates the policy's own client"},
		{"federated with a secret", "policies:\n  o: {" + url + ", authMethod: federated_jwt, clientID: a, clientSecret: s, clientAssertion: {file: " + notJWT + "}}\n", "policies.o.clientSecret: federated_jwt uses no client secret"},
		{"federated file missing", "policies:\n  o: {" + url + ", authMethod: federated_jwt, clientID: a, clientAssertion: {file: " + filepath.Join(dir, "nope") + "}}\n", "policies.o.clientAssertion.file: client assertion: open "},
		{"federated file not a JWT", "policies:\n  o: {" + url + ", authMethod: federated_jwt, clientID: a, clientAssertion: {file: " + notJWT + "}}\n", "client assertion in " + notJWT + " is not a JWT"},
		{"federated with a key", "policies:\n  o: {" + url + ", authMethod: federated_jwt, clientID: a, clientAssertion: {file: " + notJWT + ", key: k}}\n", "policies.o.clientAssertion: federated_jwt sends the file's assertion as it is"},
		{"private_key_jwt with a file", "policies:\n  o: {" + url + ", authMethod: private_key_jwt, clientID: a, clientAssertion: {file: " + notJWT + "}}\n", "policies.o.clientAssertion.file: is for federated_jwt"},
		{"client_secret_jwt without a secret", "policies:\n  o: {" + url + ", authMethod: client_secret_jwt, clientID: a}\n", "policies.o.clientSecret: clientID is set, so clientSecret must be too"},
		{"dpop with a bad algorithm", "policies:\n  o: {" + url + ", dpop: {algorithm: HS256}}\n", `policies.o.dpop.algorithm: "HS256" is not supported: want ES256, EdDSA or RS256`},
		{"dpop without a key, with Redis", "store: {encryptionKey: " + strings.Repeat("A", 43) + "=, redis: {endpoints: ['a:1']}}\npolicies:\n  o: {" + url + ", dpop: {}}\n", "policies.o.dpop.key: is required with Redis"},
		{"dpop generated EdDSA", "policies:\n  o: {" + url + ", dpop: {algorithm: EdDSA}}\n", "policies.o.dpop.key: a generated key is ES256"},
		{"dpop with a Bearer prefix", "policies:\n  o: {" + url + ", tokenPrefix: 'Bearer ', dpop: {}}\n", "policies.o.dpop: a DPoP token travels as Authorization: DPoP <token>"},
		{"dpop in another header", "policies:\n  o: {" + url + ", tokenHeader: X-Token, dpop: {}}\n", "policies.o.dpop: a DPoP token travels as Authorization"},
		{"dpop with a bad key", "policies:\n  o: {" + url + ", dpop: {key: nope}}\n", "policies.o.dpop.key: no PEM private key found"},
		{"dpop EC key for EdDSA", "policies:\n  o:\n    " + url + "\n    dpop:\n      algorithm: EdDSA\n      key: |\n" + indent(ecPEM, "        "), "policies.o.dpop.key: dpop: "},
	}
}

// TestDPoPKeys: a configured key of each algorithm loads; without one, a
// key is made at start.
func TestDPoPKeys(t *testing.T) {
	_, ecPEM := selfSigned(t)
	for _, tt := range []struct{ alg, key string }{{"ES256", ecPEM}, {"EdDSA", ed25519PEM(t)}} {
		c, err := Parse([]byte("policies:\n  o:\n    url: https://x/t\n    dpop:\n      algorithm: "+tt.alg+"\n      key: |\n"+indent(tt.key, "        ")), "")
		if err != nil {
			t.Fatalf("%s: %v", tt.alg, err)
		}
		p := c.Policies["o"]
		if p.Compiled.DPoPKey == nil || p.Compiled.DPoPKey.Algorithm() != tt.alg || *p.TokenPrefix != "DPoP " {
			t.Errorf("%s: key %v, prefix %q", tt.alg, p.Compiled.DPoPKey, *p.TokenPrefix)
		}
	}
	c, err := Parse([]byte("policies:\n  o: {url: 'https://x/t', authMethod: client_secret_jwt, clientID: a, clientSecret: s, dpop: {}}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policies["o"]; !p.Compiled.DPoPGenerate || p.DPoP.Algorithm != "ES256" || p.AuthMethod != idp.ClientSecretJWT {
		t.Errorf("generate %v, algorithm %q", p.Compiled.DPoPGenerate, p.DPoP.Algorithm)
	}
}
