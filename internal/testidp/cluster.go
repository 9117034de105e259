package testidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ClusterIssuer is a Kubernetes cluster's service account issuer, for
// federated_jwt: it signs projected service account tokens and publishes
// its discovery document and keys, as the API server does at
// /.well-known/openid-configuration and /openid/v1/jwks, for an IdP to
// verify the tokens with.
type ClusterIssuer struct {
	Issuer  string // its URL: the tokens' iss
	JWKSURL string

	srv          *httptest.Server
	key          *ecdsa.PrivateKey
	kid          string
	jwksRequests atomic.Int64
}

// NewClusterIssuer starts a cluster issuer on 127.0.0.1 with an ES256 key.
func NewClusterIssuer() (*ClusterIssuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	c := &ClusterIssuer{key: key, kid: "cluster-" + randomID()[:8]}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, _ *http.Request) {
		c.jwksRequests.Add(1)
		pub, err := key.PublicKey.Bytes() // 0x04 || X || Y
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": c.kid,
			"x": base64.RawURLEncoding.EncodeToString(pub[1:33]), "y": base64.RawURLEncoding.EncodeToString(pub[33:]),
		}}})
	})
	mux.HandleFunc("GET "+DiscoveryPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": c.Issuer, "jwks_uri": c.JWKSURL, "id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	c.srv = httptest.NewServer(mux)
	c.Issuer = c.srv.URL
	c.JWKSURL = c.srv.URL + "/openid/v1/jwks"
	return c, nil
}

// Close stops the issuer.
func (c *ClusterIssuer) Close() { c.srv.Close() }

// JWKSRequests counts the key set's fetches.
func (c *ClusterIssuer) JWKSRequests() int64 { return c.jwksRequests.Load() }

// Token signs a service account token for sub, with audience aud, that
// expires at exp, as the kubelet requests it for a projected volume.
func (c *ClusterIssuer) Token(sub, aud string, exp time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Issuer: c.Issuer, Subject: sub, Audience: jwt.ClaimStrings{aud},
		IssuedAt: jwt.NewNumericDate(time.Now()), NotBefore: jwt.NewNumericDate(time.Now()), ExpiresAt: jwt.NewNumericDate(exp),
	})
	t.Header["kid"] = c.kid
	return t.SignedString(c.key)
}
