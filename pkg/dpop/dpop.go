// Package dpop makes DPoP proofs (RFC 9449): short JWTs, signed with a key
// the access token is bound to, that say which request they are for. A
// Key signs ES256 (P-256), EdDSA (Ed25519) or RS256 proofs; its public half
// travels in every proof's header as a JWK, and its RFC 7638 thumbprint is
// what the authorization server binds tokens to (cnf.jkt).
package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"
)

// Algorithms a Key signs with.
const (
	ES256 = "ES256"
	EdDSA = "EdDSA"
	RS256 = "RS256"
)

// Key signs proofs. It is immutable and safe for concurrent use.
type Key struct {
	signer     crypto.Signer
	alg        string
	header     string // the proof header, base64url: typ, alg, jwk
	thumbprint string // RFC 7638, base64url
}

// NewKey returns a Key for signer and alg: ES256 with a P-256 key, EdDSA
// with an Ed25519 key, RS256 with an RSA key of at least 2048 bits.
func NewKey(signer crypto.Signer, alg string) (*Key, error) {
	var jwk map[string]string
	switch k := signer.Public().(type) {
	case *ecdsa.PublicKey:
		if alg != ES256 || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("dpop: an EC key signs ES256 on P-256 only, not %q", alg)
		}
		b, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return nil, err
		}
		jwk = map[string]string{"crv": "P-256", "kty": "EC", "x": b64(b[1:33]), "y": b64(b[33:])}
	case ed25519.PublicKey:
		if alg != EdDSA {
			return nil, fmt.Errorf("dpop: an Ed25519 key signs EdDSA, not %q", alg)
		}
		jwk = map[string]string{"crv": "Ed25519", "kty": "OKP", "x": b64(k)}
	case *rsa.PublicKey:
		if alg != RS256 || k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("dpop: an RSA key of at least 2048 bits signs RS256, not %q", alg)
		}
		jwk = map[string]string{"e": b64(big.NewInt(int64(k.E)).Bytes()), "kty": "RSA", "n": b64(k.N.Bytes())}
	default:
		return nil, fmt.Errorf("dpop: a %T cannot sign proofs", k)
	}
	// RFC 7638: the required members, in lexicographic order, no spaces;
	// encoding/json writes map keys sorted.
	canonical, err := json.Marshal(jwk)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canonical)
	header, err := json.Marshal(struct {
		Typ string            `json:"typ"`
		Alg string            `json:"alg"`
		JWK map[string]string `json:"jwk"`
	}{"dpop+jwt", alg, jwk})
	if err != nil {
		return nil, err
	}
	return &Key{signer: signer, alg: alg, header: b64(header), thumbprint: b64(sum[:])}, nil
}

// GenerateKey returns a new P-256 key for ES256.
func GenerateKey() (*Key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return NewKey(k, ES256)
}

// Thumbprint is the key's RFC 7638 JWK thumbprint (SHA-256, base64url):
// what an authorization server puts in a bound token's cnf.jkt.
func (k *Key) Thumbprint() string { return k.thumbprint }

// Algorithm is the key's signing algorithm.
func (k *Key) Algorithm() string { return k.alg }

// TokenHash is a proof's ath for an access token: the base64url SHA-256 of
// it. It is fixed per token: callers compute it once.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return b64(sum[:])
}

// Proof signs a proof for a request: htm its method, htu its URL without
// query and fragment, ath the TokenHash of the token it carries (empty for
// a token request), nonce the server's latest DPoP-Nonce (empty for none).
// Every proof has a fresh iat and a unique jti.
func (k *Key) Proof(htm, htu, ath, nonce string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims := make([]byte, 0, 192)
	claims = append(claims, `{"jti":"`...)
	claims = base64.RawURLEncoding.AppendEncode(claims, jti[:])
	claims = append(claims, `","htm":`...)
	claims = appendJSONString(claims, htm)
	claims = append(claims, `,"htu":`...)
	claims = appendJSONString(claims, htu)
	claims = append(claims, `,"iat":`...)
	claims = strconv.AppendInt(claims, now.Unix(), 10)
	if ath != "" {
		claims = append(claims, `,"ath":"`...)
		claims = append(claims, ath...)
		claims = append(claims, '"')
	}
	if nonce != "" {
		claims = append(claims, `,"nonce":`...)
		claims = appendJSONString(claims, nonce)
	}
	claims = append(claims, '}')

	signing := make([]byte, 0, len(k.header)+1+base64.RawURLEncoding.EncodedLen(len(claims))+1+350)
	signing = append(signing, k.header...)
	signing = append(signing, '.')
	signing = base64.RawURLEncoding.AppendEncode(signing, claims)
	sig, err := k.sign(signing)
	if err != nil {
		return "", err
	}
	signing = append(signing, '.')
	signing = base64.RawURLEncoding.AppendEncode(signing, sig)
	return string(signing), nil
}

// sign signs data as the key's JWS algorithm asks.
func (k *Key) sign(data []byte) ([]byte, error) {
	switch s := k.signer.(type) {
	case *ecdsa.PrivateKey:
		digest := sha256.Sum256(data)
		der, err := ecdsa.SignASN1(rand.Reader, s, digest[:])
		if err != nil {
			return nil, err
		}
		return rawSignature(der)
	case ed25519.PrivateKey:
		return ed25519.Sign(s, data), nil
	case *rsa.PrivateKey:
		digest := sha256.Sum256(data)
		return rsa.SignPKCS1v15(rand.Reader, s, crypto.SHA256, digest[:])
	}
	return nil, errors.New("dpop: the key cannot sign")
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rawSignature turns a P-256 ECDSA signature from its DER form, SEQUENCE
// { INTEGER r, INTEGER s }, into the R || S of JWS (RFC 7518 §3.4), 32
// bytes each.
func rawSignature(der []byte) ([]byte, error) {
	bad := errors.New("dpop: a malformed ECDSA signature")
	if len(der) < 8 || der[0] != 0x30 || int(der[1]) != len(der)-2 {
		return nil, bad
	}
	sig := make([]byte, 64)
	rest := der[2:]
	for i := range 2 {
		if len(rest) < 2 || rest[0] != 0x02 || int(rest[1]) > len(rest)-2 {
			return nil, bad
		}
		n := rest[2 : 2+int(rest[1])]
		rest = rest[2+int(rest[1]):]
		for len(n) > 0 && n[0] == 0 { // DER's sign byte
			n = n[1:]
		}
		if len(n) > 32 {
			return nil, bad
		}
		copy(sig[32*i+32-len(n):32*i+32], n)
	}
	if len(rest) != 0 {
		return nil, bad
	}
	return sig, nil
}

// appendJSONString appends s as a JSON string: as it is when it is
// printable ASCII without quotes or backslashes (methods, most URLs),
// through encoding/json otherwise.
func appendJSONString(dst []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\'
	}
	if plain {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, err := json.Marshal(s)
	if err != nil { // a string always marshals
		return append(dst, `""`...)
	}
	return append(dst, b...)
}
