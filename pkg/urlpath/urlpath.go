// Package urlpath normalizes request paths, so that a policy is chosen on
// the path an upstream will serve, and refuses the paths whose meaning
// depends on who decodes them.
//
// Normalize keeps to RFC 3986: it drops the query and the fragment, decodes
// percent-encoded unreserved characters (§6.2.2.2) and writes every other
// percent-encoding in upper case (§6.2.2.1), merges repeated slashes, and
// removes "." and ".." segments (§5.2.4). It refuses, rather than guesses:
//
//   - a control character or NUL, raw or percent-encoded;
//   - a backslash, raw or encoded (%5C), which some servers take for a slash;
//   - an encoded slash (%2F), which some servers decode and some do not;
//   - an encoded "%", ";", "?" or "#" (%25, %3B, %3F, %23), which a second
//     decoding turns into a delimiter;
//   - a dot segment written with percent-encoding ("%2e%2e"), which some
//     servers resolve and some do not;
//   - ";" parameters on a dot segment ("..;x"), which servlet containers
//     strip before resolving and other servers do not;
//   - ".." right after an empty segment ("//.."), which servers that merge
//     slashes first and servers that do not resolve to different paths;
//   - ".." that climbs above the root.
//
// These are the paths Traefik rejects by default, and those the path
// confusion attacks on proxies in front of Java, Node and Go servers use.
package urlpath

import (
	"errors"
	"strings"
)

// MaxBytes bounds the path (without query) Normalize accepts and returns:
// nginx's default request line buffer.
const MaxBytes = 8192

// Reasons a path is refused. They describe the path, never repeat it.
var (
	ErrTooLong          = errors.New("the path is longer than 8192 bytes")
	ErrNotAbsolute      = errors.New("the path does not start with /")
	ErrControl          = errors.New("the path holds a control character or NUL")
	ErrBackslash        = errors.New("the path holds a backslash")
	ErrBadEscape        = errors.New("the path holds a malformed percent-encoding")
	ErrEncodedSlash     = errors.New("the path holds an encoded slash or backslash (%2F, %5C)")
	ErrEncodedDelimiter = errors.New("the path holds an encoded %, ;, ? or # (%25, %3B, %3F, %23)")
	ErrEncodedDot       = errors.New("the path holds a percent-encoded dot segment")
	ErrDotParams        = errors.New("the path holds ; parameters on a dot segment")
	ErrDotAfterEmpty    = errors.New("the path holds .. after an empty segment (//..)")
	ErrAboveRoot        = errors.New("the path's .. segments climb above the root")
)

// Normalize returns the normal form of a request path (a request target in
// origin form, with or without its query), or the reason it is refused. An
// empty path is "/". A path already in normal form is returned as it is,
// without allocating.
func Normalize(raw string) (string, error) {
	p, normal := cut(raw)
	switch {
	case p == "":
		return "/", nil
	case len(p) > MaxBytes:
		return "", ErrTooLong
	case p[0] != '/':
		return "", ErrNotAbsolute
	case normal:
		return p, nil
	}
	return normalize(p)
}

// Byte classes.
const (
	unreserved = 1 << iota // ALPHA DIGIT - . _ ~ (RFC 3986 §2.3)
	plain                  // may stand in a path as it is: unreserved, sub-delims, ":", "@"
)

var class = func() (c [256]uint8) {
	for b := 'a'; b <= 'z'; b++ {
		c[b] = unreserved | plain
	}
	for b := 'A'; b <= 'Z'; b++ {
		c[b] = unreserved | plain
	}
	for b := '0'; b <= '9'; b++ {
		c[b] = unreserved | plain
	}
	for _, b := range "-._~" {
		c[b] = unreserved | plain
	}
	for _, b := range "!$&'()*+,;=:@" {
		c[b] = plain
	}
	return c
}()

// cut returns the path without its query and fragment, and whether it
// needs no work: it starts with "/" and holds plain bytes and slashes only,
// no empty segment and no segment that starts with a dot. The test is fast
// and conservative: a path it turns away may still be normal. One pass
// serves the common case.
func cut(raw string) (p string, normal bool) {
	if raw == "" || raw[0] != '/' {
		return cutSlow(raw), false
	}
	for i := 1; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '?' || c == '#':
			return raw[:i], true
		case c == '/':
			if raw[i-1] == '/' {
				return cutSlow(raw), false
			}
		case class[c]&plain == 0 || c == '.' && raw[i-1] == '/':
			return cutSlow(raw), false
		}
	}
	return raw, true
}

func cutSlow(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		return raw[:i]
	}
	return raw
}

const upperHex = "0123456789ABCDEF"

// normalize is Normalize's slow path. p starts with "/".
func normalize(p string) (string, error) {
	var outBuf [256]byte // most paths fit: no allocation but the result
	out := append(outBuf[:0], '/')
	var startsBuf [32]int
	starts := startsBuf[:0] // where each kept segment starts in out
	trailing := false       // the path ends with a slash
	prevEmpty := false      // the previous segment was empty ("//")
	rest := p[1:]
	for {
		seg, more := rest, false
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg, rest, more = rest[:i], rest[i+1:], true
		}
		start := len(out)
		encodedDot := false
		params := -1 // where ";" starts in the written segment, if it has one
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			switch {
			case c == '%':
				if i+2 >= len(seg) || unhex(seg[i+1]) < 0 || unhex(seg[i+2]) < 0 {
					return "", ErrBadEscape
				}
				b := byte(unhex(seg[i+1])<<4 | unhex(seg[i+2]))
				i += 2
				switch {
				case b < ' ' || b == 0x7f:
					return "", ErrControl
				case b == '/' || b == '\\':
					return "", ErrEncodedSlash
				case b == '%' || b == ';' || b == '?' || b == '#':
					return "", ErrEncodedDelimiter
				case class[b]&unreserved != 0:
					out = append(out, b)
					encodedDot = encodedDot || b == '.'
				default:
					out = append(out, '%', upperHex[b>>4], upperHex[b&15])
				}
			case c < ' ' || c == 0x7f:
				return "", ErrControl
			case c == '\\':
				return "", ErrBackslash
			case class[c]&plain != 0:
				if c == ';' && params < 0 {
					params = len(out)
				}
				out = append(out, c)
			default: // bytes a path may hold only percent-encoded
				out = append(out, '%', upperHex[c>>4], upperHex[c&15])
			}
		}
		name := out[start:]
		if params >= 0 {
			name = out[start:params]
		}
		dots := dotSegment(name) // 1 for ".", 2 for "..", else 0
		switch {
		case dots > 0 && encodedDot:
			return "", ErrEncodedDot
		case dots > 0 && params >= 0:
			return "", ErrDotParams
		}
		switch {
		case start == len(out): // an empty segment: merged away, or the trailing slash
			out = out[:start]
			trailing = !more
			prevEmpty = true
		case dots == 1:
			out = out[:start]
			trailing = true
			prevEmpty = false
		case dots == 2:
			if prevEmpty {
				return "", ErrDotAfterEmpty
			}
			if len(starts) == 0 {
				return "", ErrAboveRoot
			}
			out = out[:starts[len(starts)-1]]
			starts = starts[:len(starts)-1]
			trailing = true
			prevEmpty = false
		default:
			starts = append(starts, start)
			out = append(out, '/')
			trailing = false
			prevEmpty = false
		}
		if !more {
			break
		}
	}
	// Every kept segment was written with a slash after it; the last one
	// keeps it only if the path ended with a slash or a dot segment.
	if len(out) > 1 && !trailing {
		out = out[:len(out)-1]
	}
	if len(out) > MaxBytes { // percent-encoding made it grow
		return "", ErrTooLong
	}
	return string(out), nil
}

// dotSegment returns 1 for ".", 2 for "..", and 0 for any other segment.
func dotSegment(b []byte) int {
	for _, c := range b {
		if c != '.' {
			return 0
		}
	}
	if len(b) > 2 {
		return 0
	}
	return len(b)
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
