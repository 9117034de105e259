package secret

import (
	"net/url"
	"strings"
)

// URLRedacted replaces what RedactURL hides: "REDACTED@" for the userinfo,
// "?REDACTED" for the query, "#REDACTED" for the fragment.
const URLRedacted = "REDACTED"

// RedactURL returns raw fit for a message: its userinfo (user and
// password) becomes "REDACTED@", its query "?REDACTED" and its fragment
// "#REDACTED", while scheme, host, port and path stay, so that the message
// still says where the URL leads. Those three parts are where URLs carry
// credentials: redis://default:<password>@host, https://<id>:<secret>@host,
// ?client_secret=…, ?api_key=….
//
// A value that does not parse as a URL with a host — unparsable, or opaque
// the way "default:<password>@redis:6379" parses — is redacted by its text
// alone, conservatively: everything before the last "@" (after "scheme://"
// or "//" when it starts so) and everything from the first "?" or "#" on.
// RedactURL must never return a credential raw held in those places, and
// redacting twice changes nothing.
func RedactURL(raw string) string {
	if !strings.ContainsAny(raw, "@?#") {
		return raw // nothing that could hide a credential
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" {
		return redactText(raw)
	}
	var b strings.Builder
	if u.Scheme != "" {
		b.WriteString(u.Scheme + ":")
	}
	b.WriteString("//")
	if u.User != nil {
		b.WriteString(URLRedacted + "@")
	}
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	if u.RawQuery != "" {
		b.WriteString("?" + URLRedacted)
	}
	if u.Fragment != "" {
		b.WriteString("#" + URLRedacted)
	}
	return b.String()
}

// redactText redacts a value that is not a URL with a host by its text.
func redactText(s string) string {
	tail := ""
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		tail = s[i:i+1] + URLRedacted
		s = s[:i]
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && validScheme(s[:i]) {
		start = i + 3
	} else if strings.HasPrefix(s, "//") {
		start = 2
	}
	if at := strings.LastIndexByte(s, '@'); at >= start {
		s = s[:start] + URLRedacted + s[at:]
	}
	return s + tail
}

// RedactURLs returns text with every "scheme://…" in it passed through
// RedactURL, the URL ending at a space, a control character, a quote, a
// backslash, "<" or ">". It is for text extauthz did not write — errors of
// net/http, keyfunc and other libraries, which quote the URL they were
// given — where a URL cannot be redacted before it is printed. Messages
// extauthz writes call RedactURL on the value instead. The configuration
// refuses URLs that hold those characters, so that none of its URLs ends
// early here.
func RedactURLs(text string) string {
	if !strings.Contains(text, "://") {
		return text
	}
	var b strings.Builder
	for {
		i := strings.Index(text, "://")
		if i < 0 {
			break
		}
		start := i
		for start > 0 && schemeByte(text[start-1]) {
			start--
		}
		end := i + 3
		for end < len(text) && !urlEnd(text[end]) {
			end++
		}
		b.WriteString(text[:start])
		b.WriteString(RedactURL(text[start:end]))
		text = text[end:]
	}
	b.WriteString(text)
	return b.String()
}

// URLText reports whether s can be printed as it is and found again by
// RedactURLs: printable ASCII without spaces, quotes, backslashes, "<" or
// ">". Anything else in a URL must be percent-encoded.
func URLText(s string) bool {
	for i := 0; i < len(s); i++ {
		if urlEnd(s[i]) {
			return false
		}
	}
	return true
}

// urlEnd reports a byte that ends a URL in text: one that a URL holds only
// percent-encoded, and that %q escapes or quotes around.
func urlEnd(c byte) bool {
	switch c {
	case '"', '\'', '`', '\\', '<', '>':
		return true
	}
	return c <= ' ' || c >= 0x7f
}

func schemeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

// validScheme reports an RFC 3986 scheme: a letter, then letters, digits, "+", "-" or ".".
func validScheme(s string) bool {
	if s == "" || !('a' <= s[0] && s[0] <= 'z' || 'A' <= s[0] && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !schemeByte(s[i]) {
			return false
		}
	}
	return true
}
