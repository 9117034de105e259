package testidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// proofWindow is how far a proof's iat may be from now.
const proofWindow = time.Minute

// Proof is what a verified DPoP proof says.
type Proof struct {
	Thumbprint string // the RFC 7638 thumbprint of the header's jwk
	JTI        string
	Nonce      string
	ATH        string
}

// VerifyProof checks a DPoP proof as RFC 9449 §4.3 asks, independently of
// the code that makes proofs: typ dpop+jwt; ES256, EdDSA or RS256; a
// public jwk in the header that verifies the signature; htm and htu as
// given; an iat within a minute of now.
func VerifyProof(proof, htm, htu string, now time.Time) (Proof, error) {
	var p Proof
	var claims struct {
		jwt.RegisteredClaims
		HTM   string `json:"htm"`
		HTU   string `json:"htu"`
		Nonce string `json:"nonce"`
		ATH   string `json:"ath"`
	}
	tok, err := jwt.ParseWithClaims(proof, &claims, func(t *jwt.Token) (any, error) {
		if t.Header["typ"] != "dpop+jwt" {
			return nil, errors.New("typ is not dpop+jwt")
		}
		jwk, ok := t.Header["jwk"].(map[string]any)
		if !ok {
			return nil, errors.New("no jwk in the header")
		}
		key, thumb, err := publicJWK(jwk)
		if err != nil {
			return nil, err
		}
		p.Thumbprint = thumb
		return key, nil
	}, jwt.WithValidMethods([]string{"ES256", "EdDSA", "RS256"}), jwt.WithoutClaimsValidation())
	switch {
	case err != nil:
		return p, fmt.Errorf("proof: %w", err)
	case !tok.Valid:
		return p, errors.New("proof: invalid")
	case claims.HTM != htm:
		return p, fmt.Errorf("proof: htm %q, want %q", claims.HTM, htm)
	case claims.HTU != htu:
		return p, fmt.Errorf("proof: htu %q, want %q", claims.HTU, htu)
	case claims.ID == "":
		return p, errors.New("proof: no jti")
	case claims.IssuedAt == nil || claims.IssuedAt.Sub(now).Abs() > proofWindow:
		return p, errors.New("proof: iat missing or not fresh")
	}
	p.JTI, p.Nonce, p.ATH = claims.ID, claims.Nonce, claims.ATH
	return p, nil
}

// publicJWK reads a public JWK and computes its RFC 7638 thumbprint from
// the required members, written in lexicographic order by hand.
func publicJWK(jwk map[string]any) (crypto.PublicKey, string, error) {
	str := func(k string) string { s, _ := jwk[k].(string); return s }
	raw := func(k string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(str(k)) }
	if _, private := jwk["d"]; private {
		return nil, "", errors.New("the jwk holds a private key")
	}
	var key crypto.PublicKey
	var canonical string
	switch str("kty") {
	case "EC":
		x, err1 := raw("x")
		y, err2 := raw("y")
		if str("crv") != "P-256" || err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return nil, "", errors.New("a bad EC jwk")
		}
		ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, "", fmt.Errorf("a bad EC jwk: %w", err)
		}
		key = ec
		canonical = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, str("x"), str("y"))
	case "OKP":
		x, err := raw("x")
		if str("crv") != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, "", errors.New("a bad OKP jwk")
		}
		key = ed25519.PublicKey(x)
		canonical = fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, str("x"))
	case "RSA":
		n, err1 := raw("n")
		e, err2 := raw("e")
		if err1 != nil || err2 != nil || len(n) < 256 {
			return nil, "", errors.New("a bad RSA jwk")
		}
		key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		canonical = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, str("e"), str("n"))
	default:
		return nil, "", fmt.Errorf("kty %q", str("kty"))
	}
	sum := sha256.Sum256([]byte(canonical))
	return key, base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// ResourceServer checks every request as an RFC 9449 resource server does:
// an access token of the test IdP (signature checked) presented as
// "Authorization: DPoP <token>", bound (cnf.jkt) to the key of the proof
// in the DPoP header; the proof's htm and htu this request's method and
// URL (its scheme, its Host, its path), its ath the token's hash, a fresh iat,
// and a jti never seen. It answers 200, or 401 with why.
type ResourceServer struct {
	idp  *Server
	mu   sync.Mutex
	jtis map[string]bool
	log  []string // why requests were refused, in order
	ok   int
}

// NewResourceServer returns a resource server that trusts idp's tokens.
func NewResourceServer(idp *Server) *ResourceServer {
	return &ResourceServer{idp: idp, jtis: map[string]bool{}}
}

func (rs *ResourceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	why := rs.check(r)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if why != "" {
		rs.log = append(rs.log, why)
		w.Header().Set("WWW-Authenticate", `DPoP error="invalid_token"`)
		http.Error(w, why, http.StatusUnauthorized)
		return
	}
	rs.ok++
	fmt.Fprint(w, "ok")
}

// Results returns how many requests were accepted, and why the others were refused.
func (rs *ResourceServer) Results() (accepted int, refused []string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.ok, append([]string(nil), rs.log...)
}

func (rs *ResourceServer) check(r *http.Request) string {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "DPoP ")
	if !ok {
		return "not a DPoP token"
	}
	var claims struct {
		jwt.RegisteredClaims
		Cnf struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	if _, err := jwt.ParseWithClaims(token, &claims, rs.idp.verificationKey, jwt.WithValidMethods([]string{"RS256"})); err != nil {
		return "token: " + err.Error()
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return fmt.Sprintf("%d DPoP headers", len(proofs))
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	p, err := VerifyProof(proofs[0], r.Method, scheme+"://"+r.Host+r.URL.Path, rs.idp.now())
	switch {
	case err != nil:
		return err.Error()
	case claims.Cnf.JKT == "" || p.Thumbprint != claims.Cnf.JKT:
		return "the proof's key is not the token's"
	case p.ATH != tokenHash(token):
		return "ath does not match the token"
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.jtis[p.JTI] {
		return "proof replayed"
	}
	rs.jtis[p.JTI] = true
	return ""
}

// Forward sends method to url with headers set, as a proxy forwards a
// request after an allow, and returns the status and the body.
func Forward(method, url string, headers map[string]string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// verificationKey finds the test IdP's key for a token's kid.
func (s *Server) verificationKey(t *jwt.Token) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		if k.kid == t.Header["kid"] {
			return &k.key.PublicKey, nil
		}
	}
	return nil, errors.New("unknown kid")
}
