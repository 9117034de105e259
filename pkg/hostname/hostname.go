// Package hostname normalizes the host a request names, so that routes
// match it however a caller spells it: "API.Example.com.:443",
// "api.example.com" and "xn--…" for an internationalized name all compare
// as one. A host that cannot be read as one name is refused, not guessed.
package hostname

import (
	"errors"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// maxBytes bounds what Normalize reads: a DNS name (253), brackets and a port.
const maxBytes = 300

// Reasons a host is refused.
var (
	ErrTooLong = errors.New("the host is longer than 300 bytes")
	ErrPort    = errors.New("the host's port is not a number from 1 to 65535")
	ErrName    = errors.New("the host is not a domain name or an IP address")
)

// Normalize returns the host in the form routes compare — lower case,
// internationalized names in their ASCII (punycode) form, no trailing dot,
// IPv6 addresses in brackets in their canonical form — and its port as a
// number is written ("0443" is "443"; "" for none), or why it cannot be
// read. An empty host is "", "", nil.
func Normalize(h string) (host, port string, err error) {
	if h == "" {
		return "", "", nil
	}
	if len(h) > maxBytes {
		return "", "", ErrTooLong
	}
	host, port, err = split(h)
	if err != nil {
		return "", "", err
	}
	if strings.HasPrefix(host, "[") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", ErrName
		}
		return "[" + a.String() + "]", port, nil
	}
	host = strings.TrimSuffix(host, ".") // the root label: "example.com." is "example.com"
	if hasUpper(host) {
		host = strings.ToLower(host)
	}
	if plainName(host) {
		return host, port, nil
	}
	if ascii(host) {
		return "", "", ErrName
	}
	name, err := idna.Lookup.ToASCII(host)
	if err != nil || !plainName(name) {
		return "", "", ErrName
	}
	return name, port, nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// split separates the host from its port.
func split(h string) (host, port string, err error) {
	host = h
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", "", ErrName
		}
		host, h = h[:end+1], h[end+1:]
		if h == "" {
			return host, "", nil
		}
		if h[0] != ':' {
			return "", "", ErrName
		}
		port = h[1:]
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
	}
	if port != "" || strings.HasSuffix(h, ":") {
		if port = canonicalPort(port); port == "" {
			return "", "", ErrPort
		}
	}
	return host, port, nil
}

// canonicalPort returns a port as a number is written, without leading
// zeros ("0443" is "443": ports compare as numbers), or "" when p is not
// a number from 1 to 65535.
func canonicalPort(p string) string {
	for len(p) > 1 && p[0] == '0' {
		p = p[1:]
	}
	if len(p) == 0 || len(p) > 5 {
		return ""
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return ""
		}
		n = n*10 + int(p[i]-'0')
	}
	if n < 1 || n > 65535 {
		return ""
	}
	return p
}

// DefaultPort is the port a URL of scheme has when it names none: 443 for
// https, 80 for http, "" for any other scheme.
func DefaultPort(scheme string) string {
	switch {
	case strings.EqualFold(scheme, "https"):
		return "443"
	case strings.EqualFold(scheme, "http"):
		return "80"
	}
	return ""
}

// plainName reports a name already in normal form: lower-case ASCII
// letters, digits, hyphens and underscores in non-empty dot-separated
// labels of at most 63 bytes.
func plainName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}
