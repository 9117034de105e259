package authz

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/extauthz/extauthz/pkg/tokencache"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseBasic(t *testing.T) {
	tests := []struct {
		name       string
		give       string
		wantID     string
		wantSecret string
		wantErr    error
	}{
		{"plain", "Basic " + b64("app:s3cret"), "app", "s3cret", nil},
		{"scheme in any case", "bASIC " + b64("app:s3cret"), "app", "s3cret", nil},
		{"extra spaces", "Basic   " + b64("app:s3cret") + "  ", "app", "s3cret", nil},
		{"no padding", "Basic " + strings.TrimRight(b64("app:s3cre"), "="), "app", "s3cre", nil},
		{"split at the first colon", "Basic " + b64("app:s3:cr:et"), "app", "s3:cr:et", nil},
		{"form-urlencoded", "Basic " + b64("my%3Aapp:p%40ss+word%25"), "my:app", "p@ss word%", nil},
		{"unicode", "Basic " + b64("%C3%A4pp:s%C3%A9cret"), "äpp", "sécret", nil},
		{"empty", "", "", "", errNoCredentials},
		{"bearer", "Bearer abc.def.ghi", "", "", errNotBasic},
		{"scheme only", "Basic", "", "", errNoColon},
		{"scheme without space", "Basic" + b64("app:s3cret"), "", "", errNotBasic},
		{"bad base64", "Basic %%%", "", "", errBadBase64},
		{"no colon", "Basic " + b64("apps3cret"), "", "", errNoColon},
		{"empty id", "Basic " + b64(":s3cret"), "", "", errEmptyID},
		{"empty secret", "Basic " + b64("app:"), "", "", errEmptySecret},
		{"bad escape", "Basic " + b64("app%zz:s3cret"), "", "", errBadEncoding},
		{"bad escape in secret", "Basic " + b64("app:s3%"), "", "", errBadEncoding},
		{"newline in id", "Basic " + b64("app%0A:s3cret"), "", "", errControlCharacter},
		{"NUL in secret", "Basic " + b64("app:s3\x00cret"), "", "", errControlCharacter},
		{"id not UTF-8", "Basic " + b64("app%FF:s3cret"), "", "", errBadUTF8},
		{"too long", "Basic " + b64("app:"+strings.Repeat("x", 4096)), "", "", errCredentialsTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, secret, err := parseBasic(tt.give)
			if !errors.Is(err, tt.wantErr) || id != tt.wantID || secret != tt.wantSecret {
				t.Errorf("parseBasic(%q) = %q, %q, %v; want %q, %q, %v", tt.give, id, secret, err, tt.wantID, tt.wantSecret, tt.wantErr)
			}
		})
	}
}

var credentialErrors = []error{errNoCredentials, errNotBasic, errCredentialsTooLong, errBadBase64, errNoColon,
	errBadEncoding, errEmptyID, errEmptySecret, errControlCharacter, errBadUTF8}

// FuzzParseBasic checks that the credential parser never panics, that its
// errors never carry the credentials, and that what it accepts is safe to
// log and to put in a header.
func FuzzParseBasic(f *testing.F) {
	for _, seed := range []string{"Basic " + b64("app:s3cret"), "Basic " + b64("a%3Ab:c%zz"), "basic x", "Basic " + b64("\xff:\x00"), "", "BAsiC ic "} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		id, secret, err := parseBasic(header)
		if err != nil {
			if id != "" || secret != "" {
				t.Fatalf("error %v with credentials", err)
			}
			// Only the fixed sentinels: an error can never carry the header.
			if !slices.ContainsFunc(credentialErrors, func(e error) bool { return err == e }) {
				t.Fatalf("error %v is not one of the fixed credential errors", err)
			}
			return
		}
		if id == "" || secret == "" || hasControl(id) || hasControl(secret) || !utf8.ValidString(id) {
			t.Fatalf("accepted unsafe credentials %q, %q from %q", id, secret, header)
		}
	})
}

func TestCredentialCache(t *testing.T) {
	f := newFixture(t, "")
	p := f.srv.state.Load().policies["orders"]
	h := "Basic " + b64("app:s3cret")
	first, fresh, err := p.callers.get(h, p.endpoint)
	if err != nil || !fresh || first.id != "app" || first.secret.Reveal() != "s3cret" || first.key != p.endpoint.Key(first.creds(p)) {
		t.Fatalf("first: %+v %v %v", first, fresh, err)
	}
	if n := p.callers.len(); n != 0 {
		t.Errorf("%d headers remembered before their credentials got a token", n)
	}
	p.callers.remember(h, first)
	again, fresh, _ := p.callers.get(h, p.endpoint)
	if again.key != first.key || fresh {
		t.Error("the remembered header was parsed again")
	}
	if other, _, _ := p.callers.get("Basic "+b64("app:other"), p.endpoint); other.key == first.key {
		t.Error("another secret got the same key")
	}
	if _, _, err := p.callers.get("Basic !!!", p.endpoint); err == nil {
		t.Fatal("a malformed header was accepted")
	}
	// Respellings of the same credentials are parsed, but never remembered.
	for _, h := range []string{"basic " + b64("app:s3cret"), "Basic  " + b64("app:s3cret"), "Basic " + strings.TrimRight(b64("app:s3cret"), "="), "BASIC " + b64("app:s3cret")} {
		cr, fresh, err := p.callers.get(h, p.endpoint)
		if err != nil || cr.key != first.key || !fresh {
			t.Errorf("%q: %+v %v; want the same key, parsed", h, cr, err)
		}
		p.callers.remember(h, cr)
	}
	if n := p.callers.len(); n != 1 {
		t.Errorf("%d headers remembered, want only the canonical one", n)
	}
	for i := range credentialCacheSize + 10 {
		h := "Basic " + b64(fmt.Sprintf("app%d:s", i))
		cr, _, _ := p.callers.get(h, p.endpoint)
		p.callers.remember(h, cr)
	}
	if n := p.callers.len(); n > credentialCacheSize {
		t.Errorf("%d remembered headers, want at most %d", n, credentialCacheSize)
	}
}

// TestWrongCredentialsCostNoMemory floods a policy with 10,000 large,
// well-formed headers whose secrets the IdP never accepted: none is
// remembered, while the client with the right secret is.
func TestWrongCredentialsCostNoMemory(t *testing.T) {
	f := newFixtureFrom(t, policiesYAML, tokencache.Options{})
	p := f.srv.state.Load().policies["orders"]
	if r := read(t, f.check(checkRequest("orders", "h", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}))); r.status != 200 {
		t.Fatalf("the right secret: %d %v", r.status, r.body)
	}
	big := strings.Repeat("x", 2900) // a 4 KiB header once in base64
	for i := range 10_000 {
		h := "Basic " + b64(fmt.Sprintf("orders-app:%s%d", big, i))
		if r := read(t, f.check(checkRequest("orders", "h", "/", map[string]string{"authorization": h}))); r.status != 401 {
			t.Fatalf("a wrong secret: %d", r.status)
		}
	}
	if n := p.callers.len(); n != 1 {
		t.Errorf("%d headers remembered, want only the accepted one", n)
	}
	if n := f.idp.Requests(); n != 1+5 {
		t.Errorf("%d token requests, want the accepted one and the failure budget's 5", n)
	}
}
