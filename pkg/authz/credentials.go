package authz

import (
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"unicode/utf8"
)

// maxAuthorizationBytes bounds the Authorization header a caller may send.
const maxAuthorizationBytes = 4096

// Reasons credentials are refused. They name the problem, never the value.
var (
	errNoCredentials      = errors.New("no Authorization header")
	errNotBasic           = errors.New("the Authorization header is not Basic")
	errCredentialsTooLong = errors.New("the Authorization header is too long")
	errBadBase64          = errors.New("the Basic credentials are not base64")
	errNoColon            = errors.New("the Basic credentials have no colon between id and secret")
	errBadEncoding        = errors.New("the Basic client id or secret is not form-urlencoded")
	errEmptyID            = errors.New("the Basic client id is empty")
	errEmptySecret        = errors.New("the Basic client secret is empty")
	errControlCharacter   = errors.New("the Basic client id or secret holds a control character")
	errBadUTF8            = errors.New("the Basic client id is not UTF-8")
)

// parseBasic reads client credentials from an Authorization: Basic header.
// As RFC 6749 §2.3.1 asks, id and secret are form-urlencoded before base64
// encoding, so both are decoded; they are split at the first colon.
func parseBasic(header string) (id, secret string, err error) {
	if header == "" {
		return "", "", errNoCredentials
	}
	if len(header) > maxAuthorizationBytes {
		return "", "", errCredentialsTooLong
	}
	scheme, payload, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", errNotBasic
	}
	payload = strings.TrimSpace(payload)
	raw, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		// Some clients leave the padding out.
		if raw, err = base64.RawStdEncoding.DecodeString(payload); err != nil {
			return "", "", errBadBase64
		}
	}
	rawID, rawSecret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errNoColon
	}
	if id, err = url.QueryUnescape(rawID); err != nil {
		return "", "", errBadEncoding
	}
	if secret, err = url.QueryUnescape(rawSecret); err != nil {
		return "", "", errBadEncoding
	}
	switch {
	case id == "":
		return "", "", errEmptyID
	case secret == "":
		return "", "", errEmptySecret
	case hasControl(id) || hasControl(secret):
		return "", "", errControlCharacter
	case !utf8.ValidString(id):
		return "", "", errBadUTF8
	}
	return id, secret, nil
}

// hasControl reports ASCII control characters, which never belong in
// credentials and must never reach a log line or a header.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}
