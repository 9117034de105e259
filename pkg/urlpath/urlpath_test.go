package urlpath

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    string
		wantErr error
	}{
		{name: "root", give: "/", want: "/"},
		{name: "empty", give: "", want: "/"},
		{name: "plain", give: "/orders/1", want: "/orders/1"},
		{name: "trailing slash kept", give: "/orders/", want: "/orders/"},
		{name: "query dropped", give: "/orders/1?x=/../admin", want: "/orders/1"},
		{name: "fragment dropped", give: "/orders/1#/../admin", want: "/orders/1"},
		{name: "query only", give: "?x=1", want: "/"},
		{name: "dot dot", give: "/public/../admin/users", want: "/admin/users"},
		{name: "dot", give: "/public/./users", want: "/public/users"},
		{name: "trailing dot dot", give: "/a/b/..", want: "/a/"},
		{name: "trailing dot", give: "/a/b/.", want: "/a/b/"},
		{name: "dot dot to root", give: "/a/..", want: "/"},
		{name: "merged slashes", give: "//public///users//", want: "/public/users/"},
		{name: "merged slashes then dot dot", give: "/a//b/../c", want: "/a/c"},
		{name: "unreserved decoded", give: "/%61dmin/%7Eme/%2D%5F", want: "/admin/~me/-_"},
		{name: "encoded dot inside a name", give: "/file%2Ejson/%2e%2ex", want: "/file.json/..x"},
		{name: "other encodings upper case", give: "/caf%c3%a9/a%2cb/%20", want: "/caf%C3%A9/a%2Cb/%20"},
		{name: "raw non-ASCII encoded", give: "/café", want: "/caf%C3%A9"},
		{name: "raw bytes a path may not hold encoded", give: "/a b/<x>/{y}|^`\"[z]", want: "/a%20b/%3Cx%3E/%7By%7D%7C%5E%60%22%5Bz%5D"},
		{name: "sub-delims kept", give: "/a;v=1/b:c@d!$&'()*+,=", want: "/a;v=1/b:c@d!$&'()*+,="},
		{name: "params on a name segment", give: "/public;x/../admin", want: "/admin"},
		{name: "dot-led names", give: "/.well-known/..x/.x", want: "/.well-known/..x/.x"},

		{name: "encoded dot dot", give: "/public/%2e%2e/admin/users", wantErr: ErrEncodedDot},
		{name: "encoded dot dot upper", give: "/public/%2E%2E/admin/users", wantErr: ErrEncodedDot},
		{name: "half encoded dot dot", give: "/public/.%2e/admin/users", wantErr: ErrEncodedDot},
		{name: "encoded dot", give: "/public/%2e/admin", wantErr: ErrEncodedDot},
		{name: "encoded slash", give: "/public/..%2fadmin/users", wantErr: ErrEncodedSlash},
		{name: "encoded dot dot slash", give: "/public/%2e%2e%2fadmin/users", wantErr: ErrEncodedSlash},
		{name: "encoded slash upper", give: "/a%2Fb", wantErr: ErrEncodedSlash},
		{name: "encoded backslash", give: "/public/..%5cadmin", wantErr: ErrEncodedSlash},
		{name: "backslash", give: `/public\..\admin`, wantErr: ErrBackslash},
		{name: "dot dot params", give: "/public/..;/admin/users", wantErr: ErrDotParams},
		{name: "dot params", give: "/public/.;x/admin", wantErr: ErrDotParams},
		{name: "double slash dot dot", give: "/public//../admin/users", wantErr: ErrDotAfterEmpty},
		{name: "leading double slash dot dot", give: "//../admin", wantErr: ErrDotAfterEmpty},
		{name: "dot then empty then dot dot", give: "/a/.//../b", wantErr: ErrDotAfterEmpty},
		{name: "above the root", give: "/../admin", wantErr: ErrAboveRoot},
		{name: "above the root later", give: "/a/../../admin", wantErr: ErrAboveRoot},
		{name: "NUL", give: "/a\x00b", wantErr: ErrControl},
		{name: "encoded NUL", give: "/a%00b", wantErr: ErrControl},
		{name: "CR LF", give: "/a\r\nX-Injected: 1", wantErr: ErrControl},
		{name: "encoded LF", give: "/a%0Ab", wantErr: ErrControl},
		{name: "DEL", give: "/a%7fb", wantErr: ErrControl},
		{name: "tab", give: "/a\tb", wantErr: ErrControl},
		{name: "encoded percent", give: "/a%252e%252e/admin", wantErr: ErrEncodedDelimiter},
		{name: "encoded semicolon", give: "/a/..%3b/admin", wantErr: ErrEncodedDelimiter},
		{name: "encoded question mark", give: "/admin%3f/public", wantErr: ErrEncodedDelimiter},
		{name: "encoded hash", give: "/admin%23/public", wantErr: ErrEncodedDelimiter},
		{name: "truncated escape", give: "/a%2", wantErr: ErrBadEscape},
		{name: "bad escape", give: "/a%zz", wantErr: ErrBadEscape},
		{name: "lone percent", give: "/100%", wantErr: ErrBadEscape},
		{name: "not absolute", give: "admin/users", wantErr: ErrNotAbsolute},
		{name: "asterisk", give: "*", wantErr: ErrNotAbsolute},
		{name: "absolute form", give: "http://evil.example/admin", wantErr: ErrNotAbsolute},
		{name: "too long", give: "/" + strings.Repeat("a", MaxBytes), wantErr: ErrTooLong},
		{name: "too long once encoded", give: "/" + strings.Repeat("é", MaxBytes/4), wantErr: ErrTooLong},
		{name: "long query is fine", give: "/a?" + strings.Repeat("q", 2*MaxBytes), want: "/a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.give)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q, %v", tt.give, got, err, tt.want, tt.wantErr)
			}
			if err == nil {
				if again, err := Normalize(got); again != got || err != nil {
					t.Errorf("not idempotent: Normalize(%q) = %q, %v", got, again, err)
				}
			}
		})
	}
}

func TestNormalizeDoesNotAllocateForNormalPaths(t *testing.T) {
	for _, p := range []string{"/", "/orders/1", "/api/v1/orders/42/items?expand=all", "/a;b=c/@x:y"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Normalize(p) }); n != 0 {
			t.Errorf("Normalize(%q) allocates %v times", p, n)
		}
	}
}

// FuzzNormalize checks what routing relies on: the result is normal
// (Normalize returns it unchanged, and it holds no dot segment, empty
// segment or refused encoding), and the only way out of a prefix is an
// explicit ".." segment, never an encoding of one.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"/public/../admin", "/public/%2e%2e/admin", "/public/.%2e/admin", "/public/..%2fadmin",
		"/public/..;/admin", "/public//../admin", "/a/./b/", "/caf%c3%a9", "/%41%2F", "/a?b#c",
		"/..", "/a/b/../../..", `/a\b`, "/a%00", "/x;y/z", "//", "/%25", "/é/%7e",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := Normalize(raw)
		if err != nil {
			if got != "" {
				t.Fatalf("Normalize(%q) = %q with error %v", raw, got, err)
			}
			return
		}
		if again, err := Normalize(got); again != got || err != nil {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q, %v", raw, got, got, again, err)
		}
		if !strings.HasPrefix(got, "/") || len(got) > MaxBytes {
			t.Fatalf("Normalize(%q) = %q: not rooted or too long", raw, got)
		}
		segs := strings.Split(got[1:], "/")
		for i, s := range segs {
			if s == "." || s == ".." || s == "" && i != len(segs)-1 || strings.HasPrefix(s, ".;") || strings.HasPrefix(s, "..;") {
				t.Fatalf("Normalize(%q) = %q holds segment %q", raw, got, s)
			}
		}
		lower := strings.ToLower(got)
		for _, bad := range []string{"%2f", "%5c", "%25", "%3b", "%3f", "%23", "%00", "%2e", "\\", "?", "#"} {
			if strings.Contains(lower, bad) {
				t.Fatalf("Normalize(%q) = %q holds %q", raw, got, bad)
			}
		}
		// Under a prefix, only an explicit ".." segment leaves it.
		const prefix = "/base/"
		under, err := Normalize(prefix + raw)
		if err == nil && !strings.HasPrefix(under, prefix) && under != "/base" {
			path, _, _ := strings.Cut(raw, "?")
			path, _, _ = strings.Cut(path, "#")
			if !hasDotDot(path) {
				t.Fatalf("Normalize(%q) = %q left %s without a .. segment", prefix+raw, under, prefix)
			}
		}
	})
}

func hasDotDot(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == ".." {
			return true
		}
	}
	return false
}

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"normal", "/api/v1/orders/42/items?expand=all"},
		{"dot segments and escapes", "/api/v1/./orders//42/../43/%7Eitems?expand=all"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Normalize(bc.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
