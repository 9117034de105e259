package claims

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"
)

func TestText(t *testing.T) {
	doc := mustParse(t, `{
		"s": "plain", "i": 1700000000, "f": 0.50, "b": true, "n": null, "e": "",
		"a": ["x", 1, true, null, {"k": "v"}, ["y", "z"]],
		"o": {"z": 1, "a": {"b": [1, "<&>"]}},
		"u": {"name": "Jo"}, "a.b": "dotted"
	}`)
	tests := []struct {
		key, want string
		wantOK    bool
	}{
		{"s", "plain", true},
		{"i", "1700000000", true},
		{"f", "0.5", true},
		{"b", "true", true},
		{"n", "", false},
		{"e", "", true},
		{"a", `x,1,true,,{"k":"v"},y,z`, true},
		{"o", `{"a":{"b":[1,"<&>"]},"z":1}`, true},
		{"u.name", "Jo", true},
		{`a\.b`, "dotted", true},
		{"missing", "", false},
		{"s.deeper", "", false},
	}
	for _, tt := range tests {
		p, err := ParsePath(tt.key)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := doc.Text(p); got != tt.want || ok != tt.wantOK {
			t.Errorf("Text(%s) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.wantOK)
		}
	}
	if _, err := ParsePath("a..b"); err == nil {
		t.Error("ParsePath accepted an empty segment")
	}
}

func TestParseJWT(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"app","exp":1700000000.5}`))
	tests := []struct {
		name    string
		give    string
		wantErr bool
	}{
		{"JWT", "eyJhbGciOiJSUzI1NiJ9." + payload + ".c2ln", false},
		{"padded payload", "h." + payload + "==.s", false},
		{"unsigned", "h." + payload + ".", false},
		{"opaque", "2YotnFZFEjr1zCsicMWpAA", true},
		{"two parts", "h." + payload, true},
		{"four parts", "h." + payload + ".s.x", true},
		{"not base64", "h.!!!.s", true},
		{"not JSON", "h." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".s", true},
		{"not an object", "h." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".s", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseJWT(tt.give)
			if tt.wantErr {
				if !errors.Is(err, ErrNotJWT) {
					t.Errorf("error %v, want ErrNotJWT", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			exp, ok := c.Expiry()
			if !ok || !exp.Equal(time.Unix(1700000000, 500_000_000)) {
				t.Errorf("Expiry() = %v, %v", exp, ok)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	for _, tt := range []struct {
		doc    string
		wantOK bool
	}{
		{`{"exp": 1700000000}`, true},
		{`{"exp": "1700000000"}`, false},
		{`{"exp": -1}`, false},
		{`{"exp": 1e300}`, false},
		{`{}`, false},
	} {
		if _, ok := mustParse(t, tt.doc).Expiry(); ok != tt.wantOK {
			t.Errorf("Expiry of %s: %v, want %v", tt.doc, ok, tt.wantOK)
		}
	}
}

func TestClient(t *testing.T) {
	for _, tt := range []struct {
		give string
		want string
		ok   bool
	}{
		{`{"client_id": "a", "azp": "b"}`, "a", true},
		{`{"azp": "b", "sub": "b@clients"}`, "b", true},
		{`{"cid": "c"}`, "c", true},
		{`{"appid": "d"}`, "d", true},
		{`{"client_id": 7, "azp": "e"}`, "e", true},
		{`{"sub": "f"}`, "", false},
	} {
		c, err := Parse([]byte(tt.give))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := c.Client(); got != tt.want || ok != tt.ok {
			t.Errorf("Client() of %s = %q, %v; want %q, %v", tt.give, got, ok, tt.want, tt.ok)
		}
	}
}
