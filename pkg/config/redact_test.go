package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/testpki"
)

// Planted secrets: none may appear in a problem or a warning.
const (
	plantUser  = "PLANTEDUSER"
	plantPass  = "PLANTEDPASS"
	plantQuery = "PLANTEDQUERY"
	plantFrag  = "PLANTEDFRAG"
)

// plantedURLs are values with credentials in their userinfo, query and
// fragment, in forms that parse and forms that do not.
var plantedURLs = []string{
	"https://" + plantUser + ":" + plantPass + "@idp.example/t?client_secret=" + plantQuery + "#" + plantFrag,
	"https://idp.example/t?api_key=" + plantQuery,
	"http://" + plantUser + ":" + plantPass + "@idp.example/t",
	"ftp://" + plantUser + ":" + plantPass + "@idp.example/?api_key=" + plantQuery,
	"https://" + plantUser + ":" + plantPass + " x@idp.example/t?q=" + plantQuery + " y",
	"https://idp.example/t?q=\"" + plantQuery + "\"",
	"https://" + plantUser + ":pa/" + plantPass + "@idp.example/t?api_key=" + plantQuery,
	"https://idp.example:port/t?api_key=" + plantQuery + "#" + plantFrag,
	"htt ps://" + plantUser + ":" + plantPass + "@idp .example?api_key=" + plantQuery,
	"redis://" + plantUser + ":" + plantPass + "@redis.example:6379/0?x=" + plantQuery,
	plantUser + ":" + plantPass + "@redis.example:6379",
	plantPass + "@redis.example:6379",
	"https://idp.example/é?" + plantQuery,
}

// TestProblemsRedactURLs plants credentials in every URL-bearing field and
// scans what Load says about them: problems and warnings quote those URLs
// redacted, and an address that is not host:port is refused.
func TestProblemsRedactURLs(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := strconv.Quote(testpki.PKCS8PEM(t, k))
	const policy = "policies:\n  o:\n    url: https://idp.example/t\n"
	const storeKey = "encryptionKey: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	fields := []struct {
		name    string
		config  string // %[1]s is the value
		address bool   // host:port: any credential in it is refused
	}{
		{"url", "policies:\n  o:\n    url: %[1]s\n", false},
		{"jwksURL", policy + "    jwksURL: %[1]s\n", false},
		{"issuer", policy + "    issuer: %[1]s\n", false},
		{"clientAssertion.audience", policy + "    authMethod: private_key_jwt\n    clientID: c\n    clientAssertion: {key: " + key + ", audience: %[1]s}\n", false},
		{"tracing.endpoint", "tracing: {endpoint: %[1]s}\n" + policy, true},
		{"store.redis.endpoints", "store: {" + storeKey + ", redis: {endpoints: [%[1]s]}}\n" + policy, true},
		{"sentinel endpoints", "store: {" + storeKey + ", redis: {endpoints: [%[1]s, %[1]s], sentinel: {masterSet: m}}}\n" + policy, true},
		{"policy store", policy + "    store: {" + storeKey + ", redis: {endpoints: [%[1]s], cluster: true}}\n", true},
	}
	for _, f := range fields {
		for _, raw := range plantedURLs {
			t.Run(f.name+"/"+raw, func(t *testing.T) {
				cfg, err := Parse(fmt.Appendf(nil, f.config, strconv.Quote(raw)), "")
				var said []string
				if err != nil {
					said = append(said, err.Error())
				} else {
					said = append(said, cfg.Warnings...)
				}
				for _, text := range said {
					for _, s := range []string{plantUser, plantPass, plantQuery, plantFrag} {
						if strings.Contains(text, s) {
							t.Errorf("%s shows %s:\n%s", f.name, s, text)
						}
					}
				}
				if f.address && err == nil && strings.ContainsAny(raw, "@/?#") {
					t.Errorf("%s %q is accepted as host:port", f.name, raw)
				}
			})
		}
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"redis.example:6379", true},
		{"10.0.0.1:6379", true},
		{"[::1]:6379", true},
		{"[fe80::1%eth0]:6379", true},
		{":6379", true},
		{"redis_1.svc:6379", true},
		{"redis", false},
		{"pass@redis:6379", false},
		{"user:pass@redis:6379", false},
		{"redis://redis:6379", false},
		{"redis:6379/0", false},
		{"redis:6379?x=1", false},
		{"re dis:6379", false},
	}
	for _, tt := range tests {
		if got := hostPort(tt.give); got != tt.want {
			t.Errorf("hostPort(%q) = %t, want %t", tt.give, got, tt.want)
		}
	}
}
