package idp

import (
	"fmt"
	"net/url"
	"slices"
)

// GrantType is how a client asks for a token.
type GrantType string

// Supported grants.
const (
	// ClientCredentials is RFC 6749 §4.4: a token for the client itself.
	ClientCredentials GrantType = "client_credentials"
	// TokenExchange is RFC 8693: a token for this upstream in exchange for
	// the caller's token (Credentials.Subject), optionally with an actor's.
	TokenExchange GrantType = "token_exchange"
	// JWTBearer is RFC 7523 §2.1: the caller's JWT (Credentials.Subject) is
	// the authorization grant.
	JWTBearer GrantType = "jwt_bearer"
)

// The grant_type values sent for each grant.
const (
	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	jwtBearerGrant     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// Token type identifiers (RFC 8693 §3).
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// SubjectTokenTypes are the subject token types a token exchange may send.
var SubjectTokenTypes = []string{TokenTypeAccessToken, TokenTypeJWT, TokenTypeIDToken}

// Grant configures the grant a Client asks with; the zero value is
// ClientCredentials.
type Grant struct {
	Type GrantType
	// SubjectTokenType is the subject_token_type of a token exchange;
	// TokenTypeAccessToken when empty.
	SubjectTokenType string
	// RequestedTokenType is the requested_token_type, when set.
	RequestedTokenType string
	// Resources are sent as resource parameters (RFC 8693 §2.1, RFC 8707).
	Resources []string
	// ActorTokenType is the actor_token_type sent with Credentials.Actor;
	// TokenTypeJWT when empty.
	ActorTokenType string
}

// check normalizes g and reports a grant that cannot be sent.
func (g *Grant) check() error {
	switch g.Type {
	case "", ClientCredentials:
		g.Type = ClientCredentials
		if g.SubjectTokenType != "" || g.RequestedTokenType != "" {
			return fmt.Errorf("idp: the %s grant sends no token types", ClientCredentials)
		}
	case TokenExchange:
		if g.SubjectTokenType == "" {
			g.SubjectTokenType = TokenTypeAccessToken
		}
		if !slices.Contains(SubjectTokenTypes, g.SubjectTokenType) {
			return fmt.Errorf("idp: unsupported subject token type %q", g.SubjectTokenType)
		}
		if g.ActorTokenType == "" {
			g.ActorTokenType = TokenTypeJWT
		}
	case JWTBearer:
		if g.SubjectTokenType != "" || g.RequestedTokenType != "" {
			return fmt.Errorf("idp: the %s grant sends no token types", JWTBearer)
		}
	default:
		return fmt.Errorf("idp: unsupported grant %q", g.Type)
	}
	return nil
}

// delegated reports a grant that carries the caller's token.
func (g Grant) delegated() bool { return g.Type == TokenExchange || g.Type == JWTBearer }

// params sets the grant's fixed parameters on p.
func (g Grant) params(p url.Values) {
	switch g.Type {
	case TokenExchange:
		p.Set("grant_type", tokenExchangeGrant)
		p.Set("subject_token_type", g.SubjectTokenType)
		if g.RequestedTokenType != "" {
			p.Set("requested_token_type", g.RequestedTokenType)
		}
		for _, r := range g.Resources {
			p.Add("resource", r)
		}
	case JWTBearer:
		p.Set("grant_type", jwtBearerGrant)
		for _, r := range g.Resources {
			p.Add("resource", r)
		}
	default:
		p.Set("grant_type", string(ClientCredentials))
		for _, r := range g.Resources { // RFC 8707 §2
			p.Add("resource", r)
		}
	}
}

// subject sets the per-request parameters of the grant: the caller's token
// and the actor's. It reports a delegated grant without a subject token.
func (g Grant) subject(form url.Values, creds Credentials) *Error {
	if !g.delegated() {
		return nil
	}
	if creds.Subject.Empty() {
		return &Error{Kind: KindRefused, Err: fmt.Errorf("the %s grant needs the caller's token", g.Type)}
	}
	if g.Type == JWTBearer {
		form.Set("assertion", creds.Subject.Reveal())
		return nil
	}
	form.Set("subject_token", creds.Subject.Reveal())
	if !creds.Actor.Empty() {
		form.Set("actor_token", creds.Actor.Reveal())
		form.Set("actor_token_type", g.ActorTokenType)
	}
	return nil
}
