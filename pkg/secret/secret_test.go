package secret

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValueNeverPrints(t *testing.T) {
	v := New("hunter2")
	for _, got := range []string{
		fmt.Sprint(v), fmt.Sprintf("%s %v %+v %#v %q %x %d", v, v, v, v, v, v, v), v.String(),
		fmt.Sprintf("%v", struct{ S Value }{v}), fmt.Sprintf("%+v", &struct{ S Value }{v}),
	} {
		if strings.Contains(got, "hunter2") {
			t.Errorf("secret printed: %s", got)
		}
	}
	data, err := json.Marshal(map[string]any{"s": v, "p": &v})
	if err != nil || strings.Contains(string(data), "hunter2") || !strings.Contains(string(data), redacted) {
		t.Errorf("JSON %s, %v", data, err)
	}
	if v.Reveal() != "hunter2" || v.Empty() || !New("").Empty() || New("").String() != "" {
		t.Error("Reveal or Empty wrong")
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	write := func(name, key, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, key), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("orders-idp", "clientSecret", "s3cret\n")
	write("orders-idp", "crlf", "s3cret\r\n")
	write("orders-idp", "two.newlines", "s3cret\n\n")
	write("orders-idp", "none", "s3cret")
	write("orders-idp", "big", strings.Repeat("x", MaxFileBytes+1))
	write("namespaces/team-a/orders-idp", "clientSecret", "team-a's\n")

	tests := []struct {
		name    string
		give    string
		want    string
		wantErr string
	}{
		{"literal", "plain-secret", "plain-secret", ""},
		{"literal with colons", "a:b:c", "a:b:c", ""},
		{"reference", "urn:k8s:secret:orders-idp:clientSecret", "s3cret", ""},
		{"CRLF trimmed", "urn:k8s:secret:orders-idp:crlf", "s3cret", ""},
		{"only one newline trimmed", "urn:k8s:secret:orders-idp:two.newlines", "s3cret\n", ""},
		{"no newline", "urn:k8s:secret:orders-idp:none", "s3cret", ""},
		{"missing file", "urn:k8s:secret:orders-idp:nope", "", "secret urn:k8s:secret:orders-idp:nope: open "},
		{"too big", "urn:k8s:secret:orders-idp:big", "", "more than 1048576 bytes"},
		{"reference typo", "urn:k8s:my-secret:my-secret:clientID", "",
			`malformed secret reference: want urn:k8s:secret:<name>:<key>; it reads urn:k8s:<a>:<b>:<c>, like the Traefik Hub document's example: write urn:k8s:secret:<b>:<c>`},
		{"missing key", "urn:k8s:secret:orders-idp", "", "want urn:k8s:secret:<name>:<key>"},
		{"extra part", "urn:k8s:secret:a:b:c", "", "want urn:k8s:secret:<name>:<key>"},
		{"other urn", "urn:vault:x", "", `malformed secret reference: want urn:k8s:secret:<name>:<key> (the value is not repeated`},
		{"path traversal in name", "urn:k8s:secret:..:passwd", "", "a name is a DNS subdomain"},
		{"path traversal in key", "urn:k8s:secret:orders-idp:..", "", "a name is a DNS subdomain"},
		{"slash in key", "urn:k8s:secret:orders-idp:a/b", "", "a name is a DNS subdomain"},
		{"upper case name", "urn:k8s:secret:Orders:key", "", "a name is a DNS subdomain"},
		{"another namespace's", "urn:k8s:secret:team-a/orders-idp:clientSecret", "team-a's", ""},
		{"another namespace's, missing", "urn:k8s:secret:team-b/orders-idp:clientSecret", "", "secret urn:k8s:secret:team-b/orders-idp:clientSecret: open "},
		{"the namespaces folder as a Secret", "urn:k8s:secret:namespaces:team-a", "", `a Secret named "namespaces" would be mounted where the Secrets of other namespaces are`},
		{"path traversal in namespace", "urn:k8s:secret:../orders-idp:clientSecret", "", "a namespace is a DNS label"},
		{"dot in namespace", "urn:k8s:secret:team.a/orders-idp:clientSecret", "", "a namespace is a DNS label"},
		{"empty namespace", "urn:k8s:secret:/orders-idp:clientSecret", "", "a namespace is a DNS label"},
		{"two namespaces", "urn:k8s:secret:a/b/orders-idp:clientSecret", "", "a namespace is a DNS label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{Dir: dir}
			got, err := r.Resolve(tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrMalformedRef) && strings.Contains(err.Error(), strings.TrimPrefix(tt.give, "urn:")) {
					t.Errorf("error %v repeats the value, which may be a secret", err)
				}
				if IsRef(tt.give) && strings.HasPrefix(tt.wantErr, "malformed") && !errors.Is(err, ErrMalformedRef) {
					t.Errorf("error %v is not ErrMalformedRef", err)
				}
				return
			}
			if err != nil || got.Reveal() != tt.want {
				t.Fatalf("Resolve = %q, %v; want %q", got.Reveal(), err, tt.want)
			}
		})
	}

	r := &Resolver{Dir: dir}
	_, _ = r.Resolve("urn:k8s:secret:orders-idp:clientSecret")
	_, _ = r.Resolve("literal")
	if files := r.Files(); len(files) != 1 || files[0] != filepath.Join(dir, "orders-idp", "clientSecret") {
		t.Errorf("Files() = %v", files)
	}
}
