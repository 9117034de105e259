package testidp

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The grant_type values of the delegated grants.
const (
	// TokenExchangeGrant is RFC 8693's: subject_token (and actor_token) in,
	// a token for the subject out.
	TokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	// JWTBearerGrant is RFC 7523 §2.1's: the assertion is the grant.
	JWTBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// Token type identifiers (RFC 8693 §3) a token exchange accepts as
// subject_token_type and actor_token_type and answers as issued_token_type.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// subjectTypes are the token types a subject or actor token may have:
// every one of them is a JWT here.
var subjectTypes = []string{TokenTypeAccessToken, TokenTypeJWT, TokenTypeIDToken}

// supportedGrant reports a grant_type the endpoint answers.
func supportedGrant(grant string) bool {
	return grant == "client_credentials" || grant == TokenExchangeGrant || grant == JWTBearerGrant
}

// delegation is what a delegated grant establishes: whom the token is for,
// who acts for them, and what it is for.
type delegation struct {
	sub    string
	aud    []string       // audience and resource values, in order
	act    map[string]any // the actor, when an actor token came
	issued string         // issued_token_type; "" for the JWT bearer grant
}

// claims sets the delegation's claims on a token's: they win over the
// client's own, so that a client's Claims never rename the subject.
func (d *delegation) claims(c map[string]any) {
	c["sub"] = d.sub
	delete(c, "aud")
	if len(d.aud) > 0 {
		c["aud"] = d.aud
	}
	if d.act != nil {
		c["act"] = d.act
	}
}

// subjectToken returns the caller's token a delegated grant carries.
func subjectToken(form url.Values) string {
	if form.Get("grant_type") == JWTBearerGrant {
		return form.Get("assertion")
	}
	return form.Get("subject_token")
}

// unverifiedSubject returns the sub a JWT names, without checking it: ""
// for anything else.
func unverifiedSubject(token string) string {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return ""
	}
	return claims.Subject
}

// delegate checks the parameters of a delegated grant — the subject token
// and, for a token exchange, its type, the actor token and the requested
// type — and returns the delegation, or the error code and why.
func (s *Server) delegate(form url.Values, b Behavior) (d *delegation, code, why string) {
	refused := b.SubjectErrorCode
	if refused == "" {
		refused = "invalid_grant"
	}
	d = &delegation{aud: slices.Concat(form["audience"], form["resource"])}
	token := subjectToken(form)
	if form.Get("grant_type") == JWTBearerGrant {
		if token == "" {
			return nil, "invalid_request", "assertion missing"
		}
		claims, err := s.verifySubject(token)
		if err != nil {
			return nil, refused, "assertion: " + err.Error()
		}
		d.sub, _ = claims["sub"].(string)
		return d, "", ""
	}
	switch typ := form.Get("subject_token_type"); {
	case token == "":
		return nil, "invalid_request", "subject_token missing"
	case !slices.Contains(subjectTypes, typ):
		return nil, "invalid_request", fmt.Sprintf("unsupported subject_token_type %q", typ)
	}
	subject, err := s.verifySubject(token)
	if err != nil {
		return nil, refused, "subject_token: " + err.Error()
	}
	d.sub, _ = subject["sub"].(string)
	if actor := form.Get("actor_token"); actor != "" {
		if !slices.Contains(subjectTypes, form.Get("actor_token_type")) {
			return nil, "invalid_request", "actor_token_type missing or unsupported"
		}
		claims, err := s.verifySubject(actor)
		if err != nil {
			return nil, refused, "actor_token: " + err.Error()
		}
		// RFC 8693 §4.1: the actor acts for the subject; actors before it,
		// named by the subject token, nest inside.
		d.act = map[string]any{"sub": claims["sub"]}
		if prior, ok := subject["act"]; ok {
			d.act["act"] = prior
		}
	} else if form.Has("actor_token_type") {
		return nil, "invalid_request", "actor_token_type without actor_token"
	}
	switch d.issued = form.Get("requested_token_type"); d.issued {
	case "":
		d.issued = TokenTypeAccessToken
	case TokenTypeAccessToken, TokenTypeJWT, TokenTypeIDToken:
	default:
		return nil, "invalid_request", fmt.Sprintf("unsupported requested_token_type %q", d.issued)
	}
	return d, "", ""
}

// verifySubject checks a subject, actor or assertion token: a JWT signed
// by this IdP (RS256, a key of its JWKS, its iss) or by the federated
// issuer (its published keys, its iss), with an exp not passed and an nbf,
// if any, reached — and Options.SubjectAudience among its aud, when set.
// It returns the token's claims.
func (s *Server) verifySubject(token string) (jwt.MapClaims, error) {
	var unverified jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &unverified); err != nil {
		return nil, errors.New("not a JWT")
	}
	keyOf, methods := s.verificationKey, []string{"RS256"}
	switch iss := unverified.Issuer; {
	case iss == s.Issuer:
	case s.federated != nil && iss == s.federated.Issuer:
		keyOf, methods = s.federatedKeys.Keyfunc, []string{"RS256", "ES256"}
	default:
		return nil, fmt.Errorf("issuer %q is not trusted", iss)
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithIssuer(unverified.Issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now)}
	if s.subjectAudience != "" {
		opts = append(opts, jwt.WithAudience(s.subjectAudience))
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(token, claims, keyOf, opts...); err != nil {
		return nil, err
	}
	if sub, _ := claims["sub"].(string); sub == "" {
		return nil, errors.New("no sub")
	}
	return claims, nil
}

// Subject signs a token of this IdP for sub, as it would issue one to a
// user — iss the IdP, aud (when given), iat and nbf now, exp, a jti — for
// tests to present as a subject token, actor token or JWT bearer
// assertion. extra adds or replaces claims; an extra claim whose value is
// nil is left out (no exp, say). It returns "" when the IdP's key cannot
// sign, which an RSA key it generated never fails to.
func (s *Server) Subject(sub string, aud []string, exp time.Time, extra map[string]any) string {
	now := s.now()
	claims := jwt.MapClaims{"iss": s.Issuer, "sub": sub, "iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(), "jti": randomID()}
	if len(aud) > 0 {
		claims["aud"] = aud
	}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	s.mu.Lock()
	signer := s.keys[len(s.keys)-1]
	s.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = signer.kid
	signed, err := tok.SignedString(signer.key)
	if err != nil {
		return ""
	}
	return signed
}

// Exchanges counts the delegated-grant requests (token exchange and JWT
// bearer) whose subject token named sub, refused ones included, from the
// moment they arrived: the IdP's load from that subject. Unparseable
// subject tokens count under "".
func (s *Server) Exchanges(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchanges[sub]
}
