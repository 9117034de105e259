package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/testidp"
)

func TestProofs(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tt := range []struct {
		alg    string
		signer crypto.Signer
	}{{ES256, ec}, {EdDSA, ed}, {RS256, rs}} {
		t.Run(tt.alg, func(t *testing.T) {
			k, err := NewKey(tt.signer, tt.alg)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			ath := TokenHash("token")
			proof, err := k.Proof("GET", "https://api.example.com/orders/1", ath, "n0nce\"", now)
			if err != nil {
				t.Fatal(err)
			}
			p, err := testidp.VerifyProof(proof, "GET", "https://api.example.com/orders/1", now)
			if err != nil {
				t.Fatal(err)
			}
			if p.Thumbprint != k.Thumbprint() || p.ATH != ath || p.Nonce != "n0nce\"" || p.JTI == "" {
				t.Errorf("proof says %+v; key thumbprint %s", p, k.Thumbprint())
			}
			again, _ := k.Proof("GET", "https://api.example.com/orders/1", ath, "", now)
			if q, _ := testidp.VerifyProof(again, "GET", "https://api.example.com/orders/1", now); q.JTI == p.JTI {
				t.Error("two proofs share a jti")
			}
			if _, err := testidp.VerifyProof(proof, "POST", "https://api.example.com/orders/1", now); err == nil {
				t.Error("a proof for GET verified for POST")
			}
			if _, err := testidp.VerifyProof(proof, "GET", "https://api.example.com/orders/1", now.Add(2*time.Minute)); err == nil {
				t.Error("a stale proof verified")
			}
			tampered := proof[:len(proof)-4] + strings.Repeat("A", 4)
			if _, err := testidp.VerifyProof(tampered, "GET", "https://api.example.com/orders/1", now); err == nil {
				t.Error("a tampered proof verified")
			}
		})
	}
}

// TestES256Signatures: every R || S verifies, whatever the lengths of the
// DER integers (a leading zero byte, or a short r or s); malformed DER is
// an error. htu with quotes or non-ASCII stays valid JSON.
func TestES256Signatures(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k, err := NewKey(ec, ES256)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 300 { // about one in 128 has a 31-byte r or s
		htu := "https://api.example.com/café/\"quoted\"/" + strconv.Itoa(i)
		proof, err := k.Proof("GET", htu, "", "", now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := testidp.VerifyProof(proof, "GET", htu, now); err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
	}
	for _, der := range [][]byte{nil, {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01}, {0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01},
		append([]byte{0x30, 0x26, 0x02, 0x21, 0x01}, make([]byte, 35)...)} {
		if _, err := rawSignature(der); err == nil {
			t.Errorf("rawSignature(% x) accepted", der)
		}
	}
	sig, err := rawSignature([]byte{0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x05})
	if err != nil || sig[31] != 0x80 || sig[30] != 0 || sig[63] != 5 {
		t.Errorf("short integers: % x %v", sig, err)
	}
}

func TestKeysRefuseWrongAlgorithms(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, tt := range []struct {
		signer crypto.Signer
		alg    string
	}{{ec, RS256}, {p384, ES256}, {small, RS256}} {
		if _, err := NewKey(tt.signer, tt.alg); err == nil {
			t.Errorf("%T with %s accepted", tt.signer, tt.alg)
		}
	}
}

// TestThumbprint checks RFC 7638's example: the thumbprint of its RSA key.
func TestThumbprint(t *testing.T) {
	// RFC 7638 §3.1.
	n := "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	priv := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: decodeBig(t, n), E: 65537}}
	k, err := NewKey(signerOf{priv}, RS256)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; k.Thumbprint() != want {
		t.Errorf("thumbprint %s, want %s", k.Thumbprint(), want)
	}
}

// signerOf is a public key posing as a signer, to compute a thumbprint.
type signerOf struct{ k *rsa.PrivateKey }

func (s signerOf) Public() crypto.PublicKey { return &s.k.PublicKey }
func (s signerOf) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("no")
}

func decodeBig(t *testing.T, s string) *big.Int {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return new(big.Int).SetBytes(b)
}

// BenchmarkProof signs a resource request's proof with each algorithm.
func BenchmarkProof(b *testing.B) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ath := TokenHash("eyJhbGciOiJSUzI1NiJ9.e30.sig")
	now := time.Now()
	for _, bc := range []struct {
		alg    string
		signer crypto.Signer
	}{{ES256, ec}, {EdDSA, ed}} {
		b.Run(bc.alg, func(b *testing.B) {
			k, err := NewKey(bc.signer, bc.alg)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.Proof("GET", "https://api.example.com/orders/1", ath, "", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
