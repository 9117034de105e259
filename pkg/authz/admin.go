package authz

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/extauthz/extauthz/pkg/tokencache"
)

// PolicyInfo describes a policy in service. It holds no secret.
type PolicyInfo struct {
	Name           string
	TokenURL       string
	Gateway        bool
	AuthMethod     string
	ClientID       string // gateway mode only
	Audience       string
	Scopes         []string
	Store          string // "memory" or "redis/<mode>"
	VerifiesTokens bool
	HasClaims      bool
	ForwardHeaders []string
}

// Policies describes the policies in service, sorted by name.
func (s *Server) Policies() []PolicyInfo {
	st := s.state.Load()
	out := make([]PolicyInfo, 0, len(st.policies))
	for _, p := range st.policies {
		cp := p.config
		info := PolicyInfo{
			Name: p.name, TokenURL: cp.Compiled.TokenURL.String(), Gateway: p.gateway, AuthMethod: cp.AuthMethod,
			Audience: cp.Audience, Scopes: cp.Scopes, Store: "memory",
			VerifiesTokens: cp.JWKSURL != "" || cp.Issuer != "", HasClaims: p.program != nil,
		}
		if p.gateway {
			info.ClientID = p.creds.ID
		}
		if r := cp.Compiled.Store.Redis; r != nil {
			info.Store = "redis/" + r.Mode
		}
		for _, f := range p.forward {
			info.ForwardHeaders = append(info.ForwardHeaders, f.Name)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ErrUnknownPolicy reports a purge for a policy that is not in service.
var ErrUnknownPolicy = errors.New("no such policy")

// Purge drops cached tokens of a policy (all when empty), of a client (all
// when empty), or of a client under a policy, everywhere they are kept.
func (s *Server) Purge(ctx context.Context, policy, clientID string) (tokencache.Purged, error) {
	st := s.state.Load()
	var r tokencache.PurgeRequest
	r.ClientID = clientID
	if policy != "" {
		p := st.policies[policy]
		if p == nil {
			return tokencache.Purged{}, fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
		}
		r.Endpoints = []*tokencache.Endpoint{p.endpoint}
	}
	return s.tokens.Purge(ctx, r)
}
