// Command demo shows extauthz at work: it starts the test IdP and the built
// binary on free loopback ports, sends Checks with grpcurl as a user would,
// prints what comes back, and stops everything. `make demo` runs it.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

const configTemplate = `# Written by the demo: four policies against a local test IdP.
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
log: {level: info}
secrets: {dir: secrets}
policies:
  orders:                      # application mode: callers send their own client credentials
    url: %[1]s
    audience: https://api.example.com
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    claims: Equals(` + "`grp`, `admin`" + `)
    usernameClaim: sub
  partner-api:                 # gateway mode: the policy holds the credentials
    url: %[1]s
    clientID: urn:k8s:secret:partner-idp:clientID
    clientSecret: urn:k8s:secret:partner-idp:clientSecret
    forwardHeaders: {X-Client: client_id}
  inventory:                   # gateway mode with DPoP: tokens bound to a key made at start
    url: %[1]s
    clientID: urn:k8s:secret:partner-idp:clientID
    clientSecret: urn:k8s:secret:partner-idp:clientSecret
    dpop: {algorithm: ES256}
  agent-api:                   # token exchange (RFC 8693): the caller's bearer token in, one for this API out
    url: %[1]s
    grant: token_exchange
    clientID: urn:k8s:secret:partner-idp:clientID
    clientSecret: urn:k8s:secret:partner-idp:clientSecret
    audience: https://orders.example.com
    usernameClaim: sub
`

func main() {
	bin := flag.String("bin", "bin/extauthz", "the extauthz binary")
	grpcurl := flag.String("grpcurl", "", "grpcurl (default: bin/tools/grpcurl, then $PATH)")
	flag.Parse()
	if err := run(*bin, *grpcurl); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(bin, grpcurl string) error {
	if grpcurl == "" {
		var err error
		if grpcurl, err = harness.FindGrpcurl(); err != nil {
			return fmt.Errorf("grpcurl not found (make tools installs it): %w", err)
		}
	}
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		return err
	}
	defer idp.Close()
	idp.AddClient("orders-app", testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin", "roles": []any{"orders.read", "orders.write"}}})
	idp.AddClient("reports-app", testidp.Client{Secret: "r3ports", Claims: map[string]any{"grp": "viewer"}})
	idp.AddClient("partner-gateway", testidp.Client{Secret: "p4rtner"})

	dir, err := os.MkdirTemp("", "extauthz-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for key, value := range map[string]string{"clientID": "partner-gateway\n", "clientSecret": "p4rtner\n"} {
		p := filepath.Join(dir, "secrets", "partner-idp", key)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
			return err
		}
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(configTemplate, idp.TokenURL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	fmt.Printf("== test IdP at %s; extauthz config:\n%s\n", idp.URL, indent(cfg))

	proc, err := harness.Start(bin, cfgPath)
	if err != nil {
		return err
	}
	defer proc.Kill()
	fmt.Printf("== extauthz serving gRPC on %s, admin on %s\n\n", proc.GRPCAddress, proc.AdminAddress)

	scenarios := []struct {
		title         string
		policy        string
		authorization string
		path          string // /orders when empty
	}{
		{"orders-app with its secret: allowed, token fetched (cache miss)", "orders", basic("orders-app", "s3cret"), ""},
		{"the same again: allowed from the cache (hit)", "orders", basic("orders-app", "s3cret"), ""},
		{"orders-app with a wrong secret: the IdP rejects it", "orders", basic("orders-app", "wrong"), ""},
		{"reports-app: its token's grp is viewer, the claims expression wants admin", "orders", basic("reports-app", "r3ports"), ""},
		{"no credentials at all", "orders", "", ""},
		{"gateway mode: the caller needs no credentials", "partner-api", "", ""},
		{"a policy that does not exist: fail closed", "nope", "", ""},
		{"a path whose meaning depends on who decodes it: refused before any policy", "orders", basic("orders-app", "s3cret"), "/orders/%2e%2e/admin"},
		{"DPoP: the token is bound to extauthz's key, and a proof signed for this very request (GET https://api.example.com/orders) goes with it", "inventory", "", ""},
	}
	// A user's access token, as a web front end or an AI agent acting for
	// her holds it, and one that expired.
	alice := idp.Subject("alice", []string{"https://agents.example.com"}, time.Now().Add(time.Hour), nil)
	expired := idp.Subject("bob", []string{"https://agents.example.com"}, time.Now().Add(-time.Minute), nil)
	scenarios = append(scenarios, []struct {
		title         string
		policy        string
		authorization string
		path          string
	}{
		{"token exchange: alice's bearer token is exchanged for a token for the orders API, which replaces hers", "agent-api", "Bearer " + alice, ""},
		{"alice again: her exchanged token from the cache", "agent-api", "Bearer " + alice, ""},
		{"token exchange without a bearer token", "agent-api", "", ""},
		{"an expired user token: the IdP refuses to exchange it", "agent-api", "Bearer " + expired, ""},
	}...)
	ctx := context.Background()
	for i, sc := range scenarios {
		path := sc.path
		if path == "" {
			path = "/orders"
		}
		req := harness.CheckPathJSON(sc.policy, sc.authorization, path)
		fmt.Printf("== %d. %s\n$ grpcurl -plaintext -d '%s' %s envoy.service.auth.v3.Authorization/Check\n", i+1, sc.title, req, proc.GRPCAddress)
		out, err := harness.Grpcurl(ctx, grpcurl, req, "-plaintext", "-d", "@", proc.GRPCAddress, "envoy.service.auth.v3.Authorization/Check")
		if err != nil {
			return err
		}
		if err := describe(out); err != nil {
			return err
		}
		fmt.Println()
	}
	fmt.Printf("== %d checks asked the token endpoint %d times\n", len(scenarios), idp.Requests())
	if err := proc.Stop(); err != nil {
		return fmt.Errorf("stopping extauthz: %w", err)
	}
	fmt.Println("== SIGTERM: extauthz drained and exited with status 0")
	return nil
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// checkResponse is the part of grpcurl's JSON the demo prints.
type checkResponse struct {
	OkResponse *struct {
		Headers []struct {
			Header struct{ Key, Value string }
		}
		HeadersToRemove []string
	}
	DeniedResponse *struct {
		Status  struct{ Code string }
		Headers []struct {
			Header struct{ Key, Value string }
		}
		Body string
	}
	DynamicMetadata map[string]string
}

func describe(out []byte) error {
	var r checkResponse
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("grpcurl output %s: %w", out, err)
	}
	switch {
	case r.OkResponse != nil:
		fmt.Println("   ALLOW: the request goes upstream with")
		for _, h := range r.OkResponse.Headers {
			fmt.Printf("     %s: %s\n", h.Header.Key, shorten(h.Header.Value))
		}
	case r.DeniedResponse != nil:
		fmt.Printf("   DENY: %s\n", r.DeniedResponse.Status.Code)
		for _, h := range r.DeniedResponse.Headers {
			fmt.Printf("     %s: %s\n", h.Header.Key, h.Header.Value)
		}
		fmt.Printf("     %s\n", r.DeniedResponse.Body)
	default:
		return errors.New("neither allowed nor denied: " + string(out))
	}
	keys := make([]string, 0, len(r.DynamicMetadata))
	for k := range r.DynamicMetadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var meta []string
	for _, k := range keys {
		meta = append(meta, k+"="+r.DynamicMetadata[k])
	}
	fmt.Printf("   metadata: %s\n", strings.Join(meta, " "))
	return nil
}

func shorten(v string) string {
	if len(v) <= 48 {
		return v
	}
	return fmt.Sprintf("%s… (%d bytes)", v[:40], len(v))
}

func indent(s string) string {
	return "   " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n   ")
}
