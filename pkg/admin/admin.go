// Package admin serves the admin gRPC API (proto/extauthz/admin/v1): the
// policies in service, and purging cached tokens.
package admin

import (
	"context"
	"errors"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/pkg/builder"
	"github.com/extauthz/extauthz/pkg/tokencache"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// Backend is what the admin API serves: the policies in service, and
// purging their tokens.
type Backend interface {
	Policies() []builder.PolicyInfo
	// Purge drops the cached tokens of a policy (all when empty), of a
	// client (all when empty), or of a client under a policy, everywhere
	// they are kept; an unknown policy is builder.ErrUnknownPolicy.
	Purge(ctx context.Context, policy, clientID string) (tokencache.Purged, error)
}

// Service implements adminv1.AdminServer over a Backend.
type Service struct {
	adminv1.UnimplementedAdminServer
	srv Backend
	log *zap.Logger
}

var _ adminv1.AdminServer = (*Service)(nil)

// New returns the admin service for b.
func New(b Backend, log *zap.Logger) *Service {
	return &Service{srv: b, log: log}
}

// ListPolicies describes the policies in service.
func (s *Service) ListPolicies(context.Context, *adminv1.ListPoliciesRequest) (*adminv1.ListPoliciesResponse, error) {
	resp := &adminv1.ListPoliciesResponse{}
	for _, p := range s.srv.Policies() {
		mode := "application"
		if p.Gateway {
			mode = "gateway"
		}
		resp.Policies = append(resp.Policies, &adminv1.Policy{
			Name: p.Name, TokenUrl: p.TokenURL, Mode: mode, AuthMethod: p.AuthMethod, ClientId: p.ClientID,
			Audience: p.Audience, Scopes: p.Scopes, Store: p.Store, VerifiesTokens: p.VerifiesTokens,
			HasClaims: p.HasClaims, ForwardHeaders: p.ForwardHeaders, DpopJkt: p.DPoP,
		})
	}
	return resp, nil
}

// PurgeTokens drops cached tokens of a policy, a client, or both.
func (s *Service) PurgeTokens(ctx context.Context, req *adminv1.PurgeTokensRequest) (*adminv1.PurgeTokensResponse, error) {
	if req.GetPolicy() == "" && req.GetClientId() == "" {
		return nil, status.Error(codes.InvalidArgument, "name a policy, a client_id or both")
	}
	purged, err := s.srv.Purge(ctx, req.GetPolicy(), req.GetClientId())
	resp := &adminv1.PurgeTokensResponse{Memory: purged.Memory, Redis: purged.Redis}
	switch {
	case errors.Is(err, builder.ErrUnknownPolicy):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		s.log.Warn("purge incomplete", zap.Error(err), zap.String("policy", req.GetPolicy()))
		return nil, status.Errorf(codes.Unavailable, "purged %d tokens from memory and %d from Redis, then: %v", purged.Memory, purged.Redis, err)
	}
	s.log.Info("tokens purged", zap.String("policy", req.GetPolicy()), zap.String("client_id", req.GetClientId()),
		zap.Int64("memory", purged.Memory), zap.Int64("redis", purged.Redis))
	return resp, nil
}
