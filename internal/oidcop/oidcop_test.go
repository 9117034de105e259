package oidcop

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestDiscovery(t *testing.T) {
	s, err := New(Options{ClientID: "app", ClientSecret: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get(s.DiscoveryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		JWKSURI       string   `json:"jwks_uri"`
		GrantTypes    []string `json:"grant_types_supported"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Issuer != s.Issuer || doc.TokenEndpoint != s.TokenURL || doc.JWKSURI != s.JWKSURL ||
		!slices.Contains(doc.GrantTypes, "urn:ietf:params:oauth:grant-type:token-exchange") ||
		!slices.Contains(doc.GrantTypes, "urn:ietf:params:oauth:grant-type:jwt-bearer") {
		t.Errorf("discovery %+v", doc)
	}
}

// TestNotInBinary keeps the library a test-only dependency: the binary
// must not link it.
func TestNotInBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/extauthz/extauthz/cmd/extauthz").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/zitadel/") || strings.HasSuffix(pkg, "/internal/oidcop") {
			t.Errorf("the binary links %s", pkg)
		}
	}
}
