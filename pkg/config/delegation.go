package config

import (
	"net/url"
	"path/filepath"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
)

// tokenTypes are the short names of RFC 8693's token type identifiers.
var tokenTypes = map[string]string{
	"access_token": idp.TokenTypeAccessToken,
	"jwt":          idp.TokenTypeJWT,
	"id_token":     idp.TokenTypeIDToken,
}

// tokenType reads a token type: a short name or a URN of RFC 8693 §3.
func tokenType(s string) (string, bool) {
	if urn, ok := tokenTypes[s]; ok {
		return urn, true
	}
	return s, strings.HasPrefix(s, "urn:ietf:params:oauth:token-type:") && len(s) <= 128 && validHeaderValue(s)
}

// delegation checks the policy's grant and, for token_exchange and
// jwt_bearer, where the caller's token comes from and how it is checked.
func (v *validator) delegation(path string, p *Policy) {
	c := &p.Compiled
	g := idp.Grant{Type: idp.GrantType(p.Grant)}
	v.resources(path, p)
	g.Resources = p.Resource
	switch g.Type {
	case "", idp.ClientCredentials:
		g.Type = idp.ClientCredentials
		for field, set := range map[string]bool{
			"subjectTokenHeader": p.SubjectTokenHeader != "", "subjectTokenType": p.SubjectTokenType != "",
			"requestedTokenType": p.RequestedTokenType != "",
			"actorToken":         p.ActorToken != nil, "subjectValidation": p.SubjectValidation != nil,
		} {
			if set {
				v.addf(path+"."+field, "applies to the token_exchange and jwt_bearer grants only")
			}
		}
		c.Grant = g
		return
	case idp.TokenExchange, idp.JWTBearer:
	default:
		v.addf(path+".grant", "%q is not a grant: want client_credentials, token_exchange or jwt_bearer", p.Grant)
		return
	}
	c.Delegated = true
	if p.ClientID == "" {
		v.addf(path+".clientID", "the %s grant authenticates the policy itself at the token endpoint: set clientID (and clientSecret, or an authMethod with a key or certificate)", g.Type)
	}
	if g.Type == idp.TokenExchange {
		if p.SubjectTokenType != "" {
			t, ok := tokenType(p.SubjectTokenType)
			if ok {
				_, ok = tokenTypes[strings.TrimPrefix(t, "urn:ietf:params:oauth:token-type:")]
			}
			if !ok {
				v.addf(path+".subjectTokenType", "%q is not a subject token type: want access_token, jwt or id_token", p.SubjectTokenType)
			}
			g.SubjectTokenType = t
		}
		if p.RequestedTokenType != "" {
			t, ok := tokenType(p.RequestedTokenType)
			if !ok {
				v.addf(path+".requestedTokenType", "%q is not a token type: want access_token, jwt, id_token or a urn:ietf:params:oauth:token-type: URN", p.RequestedTokenType)
			}
			g.RequestedTokenType = t
		}
		if a := p.ActorToken; a != nil {
			switch {
			case (a.File == "") == (a.Policy == ""):
				v.addf(path+".actorToken", "set file (the file that holds the actor's token) or policy (a client-credentials policy whose token it is), one of them")
			case a.Policy != "":
				c.ActorPolicy = a.Policy // checked once every policy is compiled: actors
			case !filepath.IsAbs(a.File) && v.dir != "":
				c.ActorFile = filepath.Join(v.dir, a.File)
			default:
				c.ActorFile = a.File
			}
		}
	} else {
		for field, set := range map[string]bool{
			"subjectTokenType": p.SubjectTokenType != "", "requestedTokenType": p.RequestedTokenType != "", "actorToken": p.ActorToken != nil,
		} {
			if set {
				v.addf(path+"."+field, "applies to the token_exchange grant only")
			}
		}
	}
	c.Grant = g

	h := p.SubjectTokenHeader
	if h == "" {
		h = "Authorization"
	}
	if !httpguts.ValidHeaderFieldName(h) || strings.HasPrefix(h, ":") || v.reservedHeader(strings.ToLower(h)) && !strings.EqualFold(h, "authorization") {
		v.addf(path+".subjectTokenHeader", "%q cannot carry the caller's token", h)
	}
	c.SubjectHeader = strings.ToLower(h)

	if sv := p.SubjectValidation; sv != nil {
		if sv.Issuer == "" && sv.JWKSURL == "" {
			v.addf(path+".subjectValidation", "set issuer (keys by OpenID Connect discovery) or jwksURL")
		}
		v.keySources(path+".subjectValidation", sv.JWKSURL, sv.Issuer, "callers' tokens")
	}
}

// actors checks that every actorToken.policy names a policy that holds its
// own client credentials and asks for client-credentials tokens: the token
// a caller's is exchanged with must be the gateway's, never a caller's.
func (v *validator) actors(names []string, policies map[string]*Policy) {
	for _, name := range names {
		p := policies[name]
		if p == nil || p.Compiled.ActorPolicy == "" {
			continue
		}
		path := "policies." + name + ".actorToken.policy"
		a := policies[p.Compiled.ActorPolicy]
		switch {
		case a == nil:
			v.addf(path, "no policy is named %q%s", p.Compiled.ActorPolicy, known(policies))
		case !a.Compiled.GatewayMode() || a.Compiled.Delegated:
			v.addf(path, "%q must be a client_credentials policy with its own clientID: its token is the actor's", p.Compiled.ActorPolicy)
		}
	}
}

// resources checks the policy's resource indicators (RFC 8707): absolute
// URIs without a fragment, and not also set through extraParams.
func (v *validator) resources(path string, p *Policy) {
	if _, set := p.ExtraParams["resource"]; set && len(p.Resource) > 0 {
		v.addf(path+".resource", "set resource or extraParams.resource, not both")
	}
	for i, r := range p.Resource {
		u, err := url.Parse(r)
		if !v.urlText(path+".resource", r) {
			continue
		}
		if err != nil || !u.IsAbs() || u.Fragment != "" {
			v.addf(path+".resource", "entry %d, %q, is not an absolute URI without a fragment (RFC 8707)", i, secret.RedactURL(r))
		}
	}
}
