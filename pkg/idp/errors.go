package idp

import (
	"fmt"
	"strings"
	"time"

	"github.com/extauthz/extauthz/pkg/secret"
)

// Kind sorts failed token requests by what a caller should answer.
type Kind uint8

// Kinds of failure.
const (
	// KindUnavailable: the endpoint could not be reached, timed out, or
	// answered 5xx or 429, and retries did not help.
	KindUnavailable Kind = iota + 1
	// KindRejected: the endpoint refused the client credentials
	// (invalid_client, unauthorized_client, or 401).
	KindRejected
	// KindForbidden: the endpoint refused the scope, audience or access
	// (invalid_scope, invalid_target, access_denied, or 403).
	KindForbidden
	// KindRefused: the endpoint refused the request for another reason (4xx).
	KindRefused
	// KindBadResponse: the answer cannot be used (no token, bad JSON, a
	// token_type other than Bearer).
	KindBadResponse
	// KindInvalidGrant: the endpoint refused the caller's token a
	// delegated grant sent (invalid_grant; for a token exchange also
	// invalid_request, as RFC 8693 §2.2.2 says): invalid, expired or not
	// for it.
	KindInvalidGrant
)

func (k Kind) String() string {
	switch k {
	case KindUnavailable:
		return "unavailable"
	case KindRejected:
		return "rejected"
	case KindForbidden:
		return "forbidden"
	case KindRefused:
		return "refused"
	case KindBadResponse:
		return "bad_response"
	case KindInvalidGrant:
		return "invalid_grant"
	}
	return "unknown"
}

// Error is a failed token request. Its text is for logs: it holds the
// endpoint's own error code and description, never a credential or token,
// and every URL in it is redacted (secret.RedactURLs), whatever error it wraps.
type Error struct {
	Kind        Kind
	Status      int    // HTTP status of the last answer; 0 when there was none
	Code        string // OAuth error code of the last answer, if any
	Description string // the endpoint's error_description, for logs only
	RetryAfter  time.Duration
	Attempts    int
	Err         error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint %s", e.Kind)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " (%s)", truncate(e.Description, 200))
	}
	if e.Err != nil && e.Status == 0 || e.Kind == KindBadResponse {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	return secret.RedactURLs(b.String())
}

func (e *Error) Unwrap() error { return e.Err }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
