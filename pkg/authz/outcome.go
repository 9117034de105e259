package authz

import (
	"net/http"

	"google.golang.org/grpc/codes"
)

// outcome is what a Check decided. Every denial's HTTP status, gRPC code,
// error code and description live in the outcomes table, and nowhere else.
type outcome uint8

const (
	allow outcome = iota
	denyNoPolicy
	denyInvalidRequest
	denyInvalidClient
	denyAccessDenied
	denyUpstreamCredentialsRejected
	denyTemporarilyUnavailable
	denyInvalidTokenResponse
	denyInsufficientClaims
	denyAmbiguous
	denyTooManyRejections
	denyInternal
	denyMissingToken
	denyInvalidToken
)

var outcomes = [...]struct {
	status      int        // HTTP status of the denial
	grpc        codes.Code // CheckResponse.status.code
	code        string     // "error" in the body, and the metric and log label
	description string     // "error_description": safe to show anyone
}{
	allow:                           {http.StatusOK, codes.OK, "ok", ""},
	denyNoPolicy:                    {http.StatusForbidden, codes.PermissionDenied, "no_policy", "no authorization policy applies to this request"},
	denyInvalidRequest:              {http.StatusUnauthorized, codes.Unauthenticated, "invalid_request", "client credentials are required in an Authorization: Basic header"},
	denyInvalidClient:               {http.StatusUnauthorized, codes.Unauthenticated, "invalid_client", "the authorization server rejected the client credentials"},
	denyAccessDenied:                {http.StatusForbidden, codes.PermissionDenied, "access_denied", "the authorization server refused the requested scope or audience"},
	denyUpstreamCredentialsRejected: {http.StatusBadGateway, codes.Unavailable, "upstream_credentials_rejected", "the authorization server rejected the gateway's client credentials"},
	denyTemporarilyUnavailable:      {http.StatusServiceUnavailable, codes.Unavailable, "temporarily_unavailable", "the authorization server is unavailable; try again later"},
	denyInvalidTokenResponse:        {http.StatusBadGateway, codes.Unavailable, "invalid_token_response", "the authorization server's answer could not be used"},
	denyInsufficientClaims:          {http.StatusForbidden, codes.PermissionDenied, "insufficient_claims", "the access token's claims do not allow this request"},
	denyAmbiguous:                   {http.StatusBadRequest, codes.InvalidArgument, "invalid_request", "the request's path, host or routing headers are ambiguous: servers would not agree on what they name"},
	denyTooManyRejections:           {http.StatusUnauthorized, codes.Unauthenticated, "invalid_client", "the authorization server rejected this client id's credentials too often; try again later"},
	denyInternal:                    {http.StatusInternalServerError, codes.Internal, "server_error", "the authorization service failed to decide this request"},
	denyMissingToken:                {http.StatusUnauthorized, codes.Unauthenticated, "invalid_request", "a bearer token is required"},
	denyInvalidToken:                {http.StatusUnauthorized, codes.Unauthenticated, "invalid_token", "the bearer token is invalid, expired or not accepted for this service"},
}

// Code returns the outcome's error code, "ok" for allow.
func (o outcome) String() string { return outcomes[o].code }
