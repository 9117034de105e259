package secret

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, give, want string
	}{
		{"plain", "https://idp.example.com/oauth/token", "https://idp.example.com/oauth/token"},
		{"host and port", "redis.example:6379", "redis.example:6379"},
		{"ipv6", "[::1]:6379", "[::1]:6379"},
		{"empty", "", ""},
		{"user and password", "https://client:s3cret@idp.example.com:8443/token", "https://REDACTED@idp.example.com:8443/token"},
		{"user alone", "https://alice@idp.example.com/", "https://REDACTED@idp.example.com/"},
		{"redis url", "redis://default:s3cret@redis.example:6379/0", "redis://REDACTED@redis.example:6379/0"},
		{"query", "https://idp.example.com/token?client_secret=s3cret&x=1", "https://idp.example.com/token?REDACTED"},
		{"fragment", "https://idp.example.com/jwks#s3cret", "https://idp.example.com/jwks#REDACTED"},
		{"all three", "https://u:p@h.example/p/a%2Fb?api_key=k#f", "https://REDACTED@h.example/p/a%2Fb?REDACTED#REDACTED"},
		{"empty query", "https://h.example/p?", "https://h.example/p"},
		{"@ in the path", "https://h.example/users/@me", "https://h.example/users/@me"},
		{"@ in the password", "https://u:p@ss@h.example/", "https://REDACTED@h.example/"},
		{"no scheme", "//u:p@h.example/x", "//REDACTED@h.example/x"},
		{"stripped password", "https://user:***@h.example/jwks", "https://REDACTED@h.example/jwks"},
		// Values that are not URLs with a host: redacted by their text.
		{"opaque", "default:s3cret@redis:6379", "REDACTED@redis:6379"},
		{"password before host", "s3cret@redis:6379", "REDACTED@redis:6379"},
		{"slash in the password", "https://u:pa/ss@h.example/p", "https://REDACTED@h.example/p"},
		{"space in the password", "https://u:p w@h.example/p?q=1", "https://REDACTED@h.example/p?REDACTED"},
		{"bad scheme", "htt ps://u:p@h .example/t?client_secret=s", "REDACTED@h .example/t?REDACTED"},
		{"bad port, query", "https://h.example:x/t?api_key=s#f", "https://h.example:x/t?REDACTED"},
		{"bad escape, fragment", "https://h.example/%zz#s3cret", "https://h.example/%zz#REDACTED"},
		{"mailto", "mailto:someone@example.com", "REDACTED@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RedactURL(tt.give)
			if got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.give, got, tt.want)
			}
			if again := RedactURL(got); again != got {
				t.Errorf("RedactURL(%q) = %q: redacting twice changed it", got, again)
			}
		})
	}
}

// TestRedactURLNeverLeaks plants secrets in every place a URL carries
// credentials, in forms that parse and forms that do not.
func TestRedactURLNeverLeaks(t *testing.T) {
	const user, pass, query, frag = "PLANTUSER", "PLANTPASS", "PLANTQUERY", "PLANTFRAG"
	var gives []string
	for _, scheme := range []string{"https://", "redis://", "rediss://", "//", "", "htt ps://", "x:"} {
		for _, host := range []string{"h.example", "h.example:6379", "[::1]:6379", "h .example", "h.example:port"} {
			for _, path := range []string{"", "/", "/p/@x", "/a b", "/%zz"} {
				gives = append(gives,
					scheme+user+":"+pass+"@"+host+path+"?client_secret="+query+"#"+frag,
					scheme+user+"@"+host+path+"?api_key="+query,
					scheme+pass+"@"+host+path+"#"+frag,
					scheme+host+path+"?"+query,
				)
			}
		}
	}
	for _, give := range gives {
		got := RedactURL(give)
		for _, s := range []string{user, pass, query, frag} {
			if strings.Contains(got, s) {
				t.Errorf("RedactURL(%q) = %q shows %s", give, got, s)
			}
		}
	}
}

func TestRedactURLs(t *testing.T) {
	tests := []struct {
		name, give, want string
	}{
		{"no URL", "dial tcp 127.0.0.1:1: connect: connection refused", "dial tcp 127.0.0.1:1: connect: connection refused"},
		{"net/http", `Get "https://u:***@h.example/jwks?api_key=k": dial tcp: lookup h.example: no such host`,
			`Get "https://REDACTED@h.example/jwks?REDACTED": dial tcp: lookup h.example: no such host`},
		{"keyfunc", `failed to create HTTP client storage for "https://h.example/jwks?api_key=k": failed to perform first HTTP request`,
			`failed to create HTTP client storage for "https://h.example/jwks?REDACTED": failed to perform first HTTP request`},
		{"two URLs", "from https://a.example/?x=1 to https://b@b.example/ and back",
			"from https://a.example/?REDACTED to https://REDACTED@b.example/ and back"},
		{"ends the text", "see http://u:p@h.example", "see http://REDACTED@h.example"},
		{"clean URL", "JWKS https://h.example/jwks: HTTP 500", "JWKS https://h.example/jwks: HTTP 500"},
		{"in angle brackets", "<https://h.example/?q=1>", "<https://h.example/?REDACTED>"},
		{"no scheme", `"://u:p@h.example/"`, `"REDACTED@h.example/"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactURLs(tt.give); got != tt.want {
				t.Errorf("RedactURLs(%q)\n = %q\nwant %q", tt.give, got, tt.want)
			}
		})
	}
}

// TestRedactURLsQuoted checks that every URL URLText accepts is found and
// redacted as net/http's and keyfunc's errors quote it (%q), and as a
// message writes it bare.
func TestRedactURLsQuoted(t *testing.T) {
	for _, raw := range []string{
		"https://PLANTUSER:PLANTPASS@h.example/p?client_secret=PLANTQUERY#PLANTFRAG",
		"https://h.example/p?a=1&b=PLANTQUERY;c={PLANTQUERY}|^",
		"https://PLANTUSER:Pl%40ntPASS!$&()*+,;=@h.example/",
	} {
		if !URLText(raw) {
			t.Fatalf("URLText(%q) is false", raw)
		}
		ue := &url.Error{Op: "Get", URL: raw, Err: fmt.Errorf("EOF")}
		for _, text := range []string{ue.Error(), fmt.Sprintf("storage for %q: x", raw), "JWKS " + raw + " failed"} {
			got := RedactURLs(text)
			for _, s := range []string{"PLANTUSER", "PLANTPASS", "Pl%40ntPASS", "PLANTQUERY", "PLANTFRAG"} {
				if strings.Contains(got, s) {
					t.Errorf("RedactURLs(%q) = %q shows %s", text, got, s)
				}
			}
		}
	}
	for _, bad := range []string{"https://h/ p", `https://h/"`, "https://h/\\", "https://h/\x00", "https://h/é", "https://h/<", "https://h/'", "https://h/`"} {
		if URLText(bad) {
			t.Errorf("URLText(%q) is true", bad)
		}
	}
}
