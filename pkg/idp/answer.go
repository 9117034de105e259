package idp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/secret"
)

// maxAnswerBytes bounds a token endpoint's answer.
const maxAnswerBytes = 1 << 20

// MaxLifetime bounds a token's lifetime, whatever the endpoint or the token
// says: longer ones are taken for a year.
const MaxLifetime = 365 * 24 * time.Hour

// fields are what an answer says, JSON or form-encoded alike.
type fields struct {
	accessToken, tokenType string
	errorCode, errorDesc   string
	expiresIn              string // as written: a number, or a string's content
	tokenNotString         bool
}

// parseAnswer reads an answer as JSON or, when its type says so, as a
// form (as GitHub and some older endpoints send it).
func parseAnswer(contentType string, body []byte) (fields, error) {
	var f fields
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return f, errors.New("the answer is neither JSON nor a form")
		}
		f.accessToken = vals.Get("access_token")
		f.tokenType, f.expiresIn = vals.Get("token_type"), vals.Get("expires_in")
		f.errorCode, f.errorDesc = vals.Get("error"), vals.Get("error_description")
		return f, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return f, errors.New("the answer is not a JSON object")
	}
	str := func(name string) (string, bool) {
		var s string
		v, ok := raw[name]
		return s, ok && json.Unmarshal(v, &s) == nil
	}
	if v, ok := raw["access_token"]; ok {
		f.tokenNotString = json.Unmarshal(v, &f.accessToken) != nil
	}
	f.tokenType, _ = str("token_type")
	f.errorCode, _ = str("error")
	f.errorDesc, _ = str("error_description")
	if v, ok := raw["expires_in"]; ok {
		if s, isString := str("expires_in"); isString {
			f.expiresIn = s
		} else {
			f.expiresIn = string(v)
		}
	}
	return f, nil
}

// answer turns a token endpoint's answer into a Token or an *Error.
func (c *Client) answer(resp *http.Response, body []byte) (*Token, *Error) {
	status := resp.StatusCode
	if len(body) > maxAnswerBytes {
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: errors.New("the answer is larger than 1 MiB")}
	}
	if status >= 300 && status < 400 {
		host := "nowhere"
		if u, err := url.Parse(resp.Header.Get("Location")); err == nil && u.Host != "" {
			host = u.Host
		}
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: fmt.Errorf("the token endpoint redirects to %s; redirects are not followed", host)}
	}
	f, perr := parseAnswer(resp.Header.Get("Content-Type"), body)
	if status < 200 || status > 299 || f.errorCode != "" {
		return nil, c.classify(resp, f)
	}
	switch {
	case perr != nil:
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: perr}
	case f.tokenNotString:
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: errors.New("access_token is not a string")}
	case f.accessToken == "":
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: errors.New("the answer has no access_token")}
	case !headerSafe(f.accessToken):
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: errors.New("access_token holds characters a header cannot carry")}
	case c.opts.DPoP != nil && !strings.EqualFold(f.tokenType, "dpop"):
		// The endpoint ignored the proof: a token any thief could replay.
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: fmt.Errorf("token_type %q is not DPoP: the endpoint did not bind the token", truncate(f.tokenType, 40))}
	case c.opts.DPoP == nil && f.tokenType != "" && !strings.EqualFold(f.tokenType, "bearer") && !c.notApplicable(f.tokenType):
		return nil, &Error{Kind: KindBadResponse, Status: status, Err: fmt.Errorf("token_type %q is not Bearer", truncate(f.tokenType, 40))}
	}
	return &Token{AccessToken: secret.New(f.accessToken), Type: f.tokenType, ExpiresIn: c.lifetime(f.expiresIn)}, nil
}

// lifetime reads expires_in: an integer, a float or a numeric string. None,
// or one that is not a positive number, is no lifetime (the token's exp or
// the default decides); one beyond MaxLifetime is MaxLifetime. Both are
// logged: an endpoint that says so is misconfigured.
func (c *Client) lifetime(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" || v == "null" {
		return 0
	}
	secs, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), math.IsNaN(secs), secs <= 0:
		c.opts.Logger.Warn("the token endpoint's expires_in is not a positive number; using the token's exp or the default lifetime",
			zap.String("expires_in", truncate(v, 40)))
		return 0
	case secs > MaxLifetime.Seconds(): // also +Inf, and 1e400 (ErrRange)
		c.opts.Logger.Warn("the token endpoint's expires_in is longer than a year; taking a year",
			zap.String("expires_in", truncate(v, 40)))
		return MaxLifetime
	}
	return time.Duration(secs * float64(time.Second))
}

// notApplicable reports the token_type "N_A" a token exchange answers
// when it issued another kind of token than an access token (RFC 8693
// §2.2.1), as requested.
func (c *Client) notApplicable(tokenType string) bool {
	g := c.opts.Grant
	return tokenType == "N_A" && g.Type == TokenExchange && g.RequestedTokenType != "" && g.RequestedTokenType != TokenTypeAccessToken
}

// classify sorts a failed answer by its status and OAuth error code.
func (c *Client) classify(resp *http.Response, f fields) *Error {
	e := &Error{Status: resp.StatusCode, Code: truncate(f.errorCode, 64), Description: f.errorDesc, Err: errors.New(http.StatusText(resp.StatusCode))}
	switch {
	case f.errorCode == "invalid_grant" && c.opts.Grant.delegated(),
		// RFC 8693 §2.2.2 answers an invalid or unacceptable subject (or
		// actor) token invalid_request, as zitadel does; Okta-style servers
		// answer invalid_grant.
		f.errorCode == "invalid_request" && c.opts.Grant.Type == TokenExchange:
		e.Kind = KindInvalidGrant
	case f.errorCode == "invalid_client" || f.errorCode == "unauthorized_client":
		e.Kind = KindRejected
	case f.errorCode == "invalid_scope" || f.errorCode == "invalid_target" || f.errorCode == "access_denied":
		e.Kind = KindForbidden
	case e.Status == http.StatusTooManyRequests || e.Status >= 500 ||
		f.errorCode == "temporarily_unavailable" || f.errorCode == "server_error":
		e.Kind = KindUnavailable
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), c.opts.Now())
	case e.Status == http.StatusUnauthorized:
		e.Kind = KindRejected
	case e.Status == http.StatusForbidden:
		e.Kind = KindForbidden
	default:
		e.Kind = KindRefused
	}
	return e
}
