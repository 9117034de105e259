package authz

import (
	"errors"
	"strings"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
)

// subClaim names the subject in an exchanged token, for the metadata.
var subClaim = func() claims.Path {
	p, err := claims.ParsePath("sub")
	if err != nil {
		panic(err)
	}
	return p
}()

// maxSubjectBytes bounds a caller's token: larger than any access token or
// ID token an IdP issues, far smaller than Envoy's header limit.
const maxSubjectBytes = 8 << 10

var (
	errNoSubject  = errors.New("no bearer token")
	errBadSubject = errors.New("the bearer token is malformed")
)

// subjectToken reads the caller's token a delegated grant exchanges: from
// Authorization after "Bearer " (any case, RFC 6750 §2.1), or the whole
// value of another header. It is hostile input: bounded, and of the shape
// its type says — a JWT (three base64url parts) for jwt, id_token and the
// jwt_bearer grant, else an RFC 6750 b64token.
func (p *policy) subjectToken(in input) (secret.Value, error) {
	v, ok := in.header(p.subject.Header)
	if !ok || v == "" {
		return secret.Value{}, errNoSubject
	}
	if p.subject.Header == "authorization" {
		scheme, tok, found := strings.Cut(v, " ")
		if !found || !strings.EqualFold(scheme, "bearer") {
			return secret.Value{}, errNoSubject
		}
		if v = strings.TrimLeft(tok, " "); v == "" {
			return secret.Value{}, errNoSubject
		}
	}
	if len(v) > maxSubjectBytes {
		return secret.Value{}, errBadSubject
	}
	jwt := p.subject.Type == idp.TokenTypeJWT || p.subject.Type == idp.TokenTypeIDToken
	if jwt && !jwtShaped(v) || !jwt && !b64token(v) {
		return secret.Value{}, errBadSubject
	}
	return secret.New(v), nil
}

// b64token reports RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func b64token(s string) bool {
	end := len(s)
	for end > 0 && s[end-1] == '=' {
		end--
	}
	if end == 0 {
		return false
	}
	for i := 0; i < end; i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}

// jwtShaped reports three non-empty base64url parts joined by dots (a JWS
// in compact serialization).
func jwtShaped(s string) bool {
	parts := 0
	n := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if n == 0 {
				return false
			}
			parts, n = parts+1, 0
			continue
		}
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
		n++
	}
	return parts == 3
}
