package claims

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Path is a compiled claim key, such as the claim a forwarded header or the
// username is taken from. The zero Path is not valid.
type Path struct {
	segs []string
	src  string
}

// ParsePath compiles a key with the rules of an expression's keys: dotted
// segments, `\.` a literal dot, `\\` a literal backslash.
func ParsePath(key string) (Path, error) {
	segs, msg := parseKey(key)
	if msg != "" {
		return Path{}, fmt.Errorf("claim key %q: %s", key, msg)
	}
	return Path{segs: segs, src: key}, nil
}

// String returns the key the path was parsed from.
func (p Path) String() string { return p.src }

// Text renders the claim at p for a header: a string as it is, a number or
// boolean as its canonical text, an array as its elements joined by commas,
// an object as compact JSON with sorted keys. A missing or null claim reports
// false. Text allocates; callers render once per token, not per request.
func (c *Claims) Text(p Path) (string, bool) {
	v, ok := c.lookup(p.segs)
	if !ok || v.kind == kindNull {
		return "", false
	}
	return v.render(), true
}

func (v value) render() string {
	switch v.kind {
	case kindArray:
		parts := make([]string, len(v.elems))
		for i, e := range v.elems {
			parts[i] = e.render()
		}
		return strings.Join(parts, ",")
	case kindObject:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v.plain()); err != nil {
			return "" // unreachable: the tree came from JSON
		}
		return strings.TrimSuffix(b.String(), "\n")
	default:
		return v.text
	}
}

// plain turns the tree back into values encoding/json writes.
func (v value) plain() any {
	switch v.kind {
	case kindString:
		return v.text
	case kindBool:
		return v.text == "true"
	case kindNumber:
		return json.Number(v.text)
	case kindArray:
		out := make([]any, len(v.elems))
		for i, e := range v.elems {
			out[i] = e.plain()
		}
		return out
	case kindObject:
		out := make(map[string]any, len(v.fields))
		for k, e := range v.fields {
			out[k] = e.plain()
		}
		return out
	default:
		return nil
	}
}

// ErrNotJWT reports a token that is not a JSON Web Token with a JSON object payload.
var ErrNotJWT = errors.New("not a JWT")

// ParseJWT decodes the payload of a JWT in compact serialization. It does not
// verify the signature: that is the caller's business.
func ParseJWT(token string) (*Claims, error) {
	header, rest, ok := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || header == "" || strings.Contains(sig, ".") {
		return nil, fmt.Errorf("%w: want three dot-separated parts", ErrNotJWT)
	}
	data, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrNotJWT)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrNotJWT, err)
	}
	return c, nil
}

// maxNumericDate is the last second of year 9999, past which a date is nonsense.
const maxNumericDate = 253402300799

// Expiry returns the time of the top-level "exp" claim (RFC 7519 NumericDate).
func (c *Claims) Expiry() (time.Time, bool) {
	v, ok := c.lookup([]string{"exp"})
	if !ok || v.kind != kindNumber {
		return time.Time{}, false
	}
	return numericDate(v.text)
}

// numericDate is the time of a JSON number literal counting seconds since
// the epoch, if it is a sensible one.
func numericDate[T string | []byte](lit T) (time.Time, bool) {
	if n := len(lit); n > 0 && n <= 12 {
		sec := int64(0) // the common case, whole seconds: no conversion
		for i := 0; i < n; i++ {
			if lit[i] < '0' || lit[i] > '9' {
				sec = -1
				break
			}
			sec = sec*10 + int64(lit[i]-'0')
		}
		if sec >= 0 {
			if sec <= 0 || sec > maxNumericDate {
				return time.Time{}, false
			}
			return time.Unix(sec, 0), true
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || f <= 0 || f > maxNumericDate {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// clientClaims name the client a token was issued to, in the order IdPs
// use them: RFC 9068's client_id, OpenID Connect's azp, Okta's cid, Entra
// ID v1's appid.
var clientClaims = [...]string{"client_id", "azp", "cid", "appid"}

// Client returns the client the token says it was issued to: the first of
// client_id, azp, cid and appid it holds as a string.
func (c *Claims) Client() (string, bool) {
	for _, name := range clientClaims {
		if v, ok := c.lookup([]string{name}); ok && v.kind == kindString {
			return v.text, true
		}
	}
	return "", false
}
