package oidcop

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The key ids of the OP's signing key and of the service users' key.
const (
	signingKeyID   = "oidcop-1"
	assertionKeyID = "service-users-1"
)

// errUnsupported answers the flows this OP does not offer: logins,
// refresh tokens, introspection, revocation.
var errUnsupported = errors.New("oidcop: not supported")

// storage is the OP's in-memory storage (op.Storage): one client, the
// service users' key, the signing key. It issues JWTs only and keeps no
// token, since every token it issues verifies by its signature.
type storage struct {
	client       *client
	serviceUsers []string
	signing      *rsa.PrivateKey
	assertionKey *rsa.PrivateKey
	assertionPEM []byte // the same, PEM, as the library's assertion helper reads it
	lifetime     time.Duration

	mu        sync.Mutex
	exchanges []Exchange
}

var (
	_ op.Storage                            = (*storage)(nil)
	_ op.TokenExchangeStorage               = (*storage)(nil)
	_ op.TokenExchangeTokensVerifierStorage = (*storage)(nil)
	_ op.JWTProfileTokenStorage             = (*storage)(nil)
)

func newStorage(o Options) (*storage, error) {
	signing, err := generateKey()
	if err != nil {
		return nil, err
	}
	assertion, err := generateKey()
	if err != nil {
		return nil, err
	}
	return &storage{
		client:       &client{id: o.ClientID, secret: o.ClientSecret, lifetime: o.Lifetime},
		serviceUsers: slices.Clone(o.ServiceUsers),
		signing:      signing,
		assertionKey: assertion,
		assertionPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(assertion)}),
		lifetime:     o.Lifetime,
	}, nil
}

func (s *storage) exchangeLog() []Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Exchange(nil), s.exchanges...)
}

// Token exchange (op.TokenExchangeStorage).

// ValidateTokenExchangeRequest records the exchange and sets what the
// library leaves to the storage: the requested type, access_token when
// none was asked for. Refresh tokens are not issued.
func (s *storage) ValidateTokenExchangeRequest(_ context.Context, r op.TokenExchangeRequest) error {
	s.mu.Lock()
	s.exchanges = append(s.exchanges, Exchange{
		ClientID: r.GetClientID(), Subject: r.GetExchangeSubject(), SubjectTokenType: string(r.GetExchangeSubjectTokenType()),
		Actor: r.GetExchangeActor(), ActorTokenType: string(r.GetExchangeActorTokenType()),
		RequestedTokenType: string(r.GetRequestedTokenType()),
		Audience:           slices.Clone(r.GetAudience()), Resources: slices.Clone(r.GetResourses()), Scopes: slices.Clone(r.GetScopes()),
	})
	s.mu.Unlock()
	switch r.GetRequestedTokenType() {
	case "":
		r.SetRequestedTokenType(oidc.AccessTokenType)
	case oidc.RefreshTokenType:
		return oidc.ErrInvalidRequest().WithDescription("refresh tokens are not issued")
	}
	return nil
}

func (s *storage) CreateTokenExchangeRequest(context.Context, op.TokenExchangeRequest) error {
	return nil
}

// GetPrivateClaimsFromTokenExchangeRequest adds what the library leaves
// out of an exchanged access token: the scope, and the actor (RFC 8693
// §4.1).
func (s *storage) GetPrivateClaimsFromTokenExchangeRequest(_ context.Context, r op.TokenExchangeRequest) (map[string]any, error) {
	return exchangeClaims(r), nil
}

// SetUserinfoFromTokenExchangeRequest names the subject of an exchanged ID
// token, which the library takes from the userinfo.
func (s *storage) SetUserinfoFromTokenExchangeRequest(_ context.Context, info *oidc.UserInfo, r op.TokenExchangeRequest) error {
	info.Subject = r.GetSubject()
	for k, v := range exchangeClaims(r) {
		info.AppendClaims(k, v)
	}
	return nil
}

func exchangeClaims(r op.TokenExchangeRequest) map[string]any {
	claims := map[string]any{}
	if scopes := r.GetScopes(); len(scopes) > 0 {
		claims["scope"] = joinScopes(scopes)
	}
	if actor := r.GetExchangeActor(); actor != "" {
		claims["act"] = map[string]any{"sub": actor}
	}
	return claims
}

// VerifyExchangeSubjectToken verifies what the library does not: subject
// tokens of type jwt, which must be the OP's own; the library calls it too
// for tokens of the other types it refused, which are refused again.
func (s *storage) VerifyExchangeSubjectToken(ctx context.Context, token string, typ oidc.TokenType) (string, string, map[string]any, error) {
	return s.verifyJWT(ctx, token, typ)
}

// VerifyExchangeActorToken verifies actor tokens as subject tokens.
func (s *storage) VerifyExchangeActorToken(ctx context.Context, token string, typ oidc.TokenType) (string, string, map[string]any, error) {
	return s.verifyJWT(ctx, token, typ)
}

func (s *storage) verifyJWT(ctx context.Context, token string, typ oidc.TokenType) (string, string, map[string]any, error) {
	if typ != oidc.JWTTokenType {
		return "", "", nil, errors.New("not a token of this OP")
	}
	v := op.NewAccessTokenVerifier(op.IssuerFromContext(ctx), &op.OpenIDKeySet{Storage: s})
	claims, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, token, v)
	if err != nil {
		return "", "", nil, err
	}
	return token, claims.Subject, claims.Claims, nil
}

// JWT profile grant.

// JWTProfileTokenType makes the JWT profile grant issue JWTs, not the
// library's default opaque tokens.
func (s *storage) JWTProfileTokenType(context.Context, op.TokenRequest) (op.AccessTokenType, error) {
	return op.AccessTokenTypeJWT, nil
}

// GetKeyByIDAndClientID returns the key a service user's assertion is
// verified with.
func (s *storage) GetKeyByIDAndClientID(_ context.Context, keyID, userID string) (*jose.JSONWebKey, error) {
	if keyID != assertionKeyID || !slices.Contains(s.serviceUsers, userID) {
		return nil, errors.New("no such key")
	}
	return &jose.JSONWebKey{KeyID: keyID, Algorithm: string(jose.RS256), Use: "sig", Key: &s.assertionKey.PublicKey}, nil
}

func (s *storage) ValidateJWTProfileScopes(_ context.Context, _ string, scopes []string) ([]string, error) {
	return scopes, nil
}

// Tokens and keys.

func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	id, err := randomID()
	return id, time.Now().Add(s.lifetime), err
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errUnsupported
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.signing}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{&s.signing.PublicKey}}, nil
}

// Clients.

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if id != s.client.id {
		return nil, errors.New("no such client")
	}
	return s.client, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	if id != s.client.id || secret != s.client.secret {
		return errors.New("wrong client id or secret")
	}
	return nil
}

// Claims of tokens other than exchanged ones: none beyond the library's.

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errUnsupported
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errUnsupported
}

// Flows this OP does not offer.

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) SaveAuthCode(context.Context, string, string) error { return errUnsupported }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return errUnsupported }
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errUnsupported
}
func (s *storage) TerminateSession(context.Context, string, string) error { return errUnsupported }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType().WithDescription("revocation is not supported")
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *storage) Health(context.Context) error { return nil }

// signingKey is the OP's RS256 signing key (op.SigningKey).
type signingKey struct{ key *rsa.PrivateKey }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return signingKeyID }

// publicKey is its public half, published in the JWKS (op.Key).
type publicKey struct{ key *rsa.PublicKey }

func (k publicKey) ID() string                         { return signingKeyID }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }

// client is the registered confidential client (op.Client).
type client struct {
	id, secret string
	lifetime   time.Duration
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                        { return c.id }
func (c *client) RedirectURIs() []string               { return nil }
func (c *client) PostLogoutRedirectURIs() []string     { return nil }
func (c *client) ApplicationType() op.ApplicationType  { return op.ApplicationTypeWeb }
func (c *client) AuthMethod() oidc.AuthMethod          { return oidc.AuthMethodBasic }
func (c *client) ResponseTypes() []oidc.ResponseType   { return nil }
func (c *client) LoginURL(string) string               { return "" }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration       { return c.lifetime }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return true }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}

// GrantTypes allows the client the token-exchange grant only: the library
// refuses it any other with unauthorized_client.
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeTokenExchange}
}
