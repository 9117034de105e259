package config

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte("policies:\n  orders:\n    url: https://idp.example.com/oauth/token\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policies["orders"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"grpcAddress", cfg.Server.GRPCAddress, DefaultGRPCAddress},
		{"httpAddress", *cfg.Server.HTTPAddress, DefaultHTTPAddress},
		{"adminAddress", cfg.Server.AdminAddress, DefaultAdminAddress},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
		{"secrets.dir", cfg.Secrets.Dir, DefaultSecretsDir},
		{"contextExtension", cfg.PolicySelector.ContextExtension, "policy"},
		{"maxEntries", cfg.Store.MaxEntries, DefaultMaxEntries},
		{"authMethod", p.AuthMethod, idp.ClientSecretBasic},
		{"defaultTTL", time.Duration(p.DefaultTTL), 300 * time.Second},
		{"tokenHeader", p.TokenHeader, "Authorization"},
		{"tokenPrefix", p.Compiled.TokenPrefix, "Bearer "},
		{"timeout", p.Compiled.Timeout, 5 * time.Second},
		{"maxRetries", p.Compiled.MaxRetries, 3},
		{"name", p.Compiled.Name, "orders"},
		{"gateway mode", p.Compiled.GatewayMode(), false},
		{"needs claims", p.NeedsClaims(), false},
		{"TLS", p.Compiled.TLS == nil, true},
		{"maxRequestBytes", cfg.Server.GRPC.MaxRequestBytes, 1 << 20},
		{"maxConcurrentStreams", cfg.Server.GRPC.MaxConcurrentStreams, 1024},
		{"maxHeaderBytes", cfg.Server.HTTP.MaxHeaderBytes, 64 << 10},
		{"policyHeader", cfg.Server.HTTP.PolicyHeader, ""},
		{"admin token", cfg.Server.Compiled.AdminToken.Empty(), true},
		{"admin TLS", cfg.Server.Compiled.AdminTLS == nil, true},
		{"maxRejections", p.Compiled.MaxRejections, 5},
		{"rejection window", p.Compiled.RejectionWindow, time.Minute},
		{"maxConcurrentRequests", p.Compiled.MaxConcurrentRequests, 32},
		{"maxQueuedRequests", p.Compiled.MaxQueuedRequests, 256},
		{"maxEndpointRejections", p.Compiled.MaxEndpointRejections, 50},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestExplicitZeroes(t *testing.T) {
	cfg, err := Parse([]byte(`
server: {httpAddress: ""}
policies:
  orders:
    url: https://idp.example.com/oauth/token
    tokenPrefix: ""
    clientConfig: {maxRetries: 0}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policies["orders"].Compiled
	if *cfg.Server.HTTPAddress != "" || p.TokenPrefix != "" || p.MaxRetries != 0 {
		t.Errorf("explicit zero values were replaced by defaults: http %q, prefix %q, retries %d", *cfg.Server.HTTPAddress, p.TokenPrefix, p.MaxRetries)
	}
}

// TestSpecExample loads the configuration shown in the specification, with
// its secrets in a temporary directory.
func TestSpecExample(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, dir, "orders-idp", "clientID", "orders-client\n")
	writeSecret(t, dir, "orders-idp", "clientSecret", "orders-secret\n")
	data, err := os.ReadFile("testdata/spec-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(data), "/var/run/secrets/extauthz", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policies["orders"]
	if p.Compiled.ClientID != "orders-client" || p.Compiled.ClientSecret.Reveal() != "orders-secret" {
		t.Errorf("secrets resolved to %q, %q", p.Compiled.ClientID, p.Compiled.ClientSecret.Reveal())
	}
	if !p.Compiled.GatewayMode() || !p.NeedsClaims() || p.Compiled.Program.String() != "Equals(`grp`, `admin`)" {
		t.Errorf("compiled policy: %+v", p.Compiled)
	}
	if len(p.Compiled.Forward) != 2 || p.Compiled.Forward[0].Name != "Expires-At" || p.Compiled.Forward[1].Claim.String() != "grp" {
		t.Errorf("forward headers %+v", p.Compiled.Forward)
	}
	wantFiles := []string{path, filepath.Join(dir, "orders-idp", "clientID"), filepath.Join(dir, "orders-idp", "clientSecret")}
	if strings.Join(cfg.Files, ",") != strings.Join(wantFiles, ",") {
		t.Errorf("Files = %v, want %v", cfg.Files, wantFiles)
	}
}

func TestRelativeSecretsDir(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, filepath.Join(dir, "secrets"), "idp", "secret", "s")
	path := filepath.Join(dir, "config.yaml")
	yaml := "secrets: {dir: secrets}\npolicies:\n  a: {url: 'https://idp/t', clientID: app, clientSecret: 'urn:k8s:secret:idp:secret'}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Policies["a"].Compiled.ClientSecret.Reveal(); got != "s" {
		t.Errorf("secret %q", got)
	}
}

func TestTLS(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	dir := t.TempDir()
	writeSecret(t, dir, "tls", "ca", certPEM)
	writeSecret(t, dir, "tls", "cert", certPEM)
	writeSecret(t, dir, "tls", "key", keyPEM)
	yaml := `
secrets: {dir: "` + dir + `"}
policies:
  refs:
    url: https://idp.example.com/token
    clientConfig:
      tls: {ca: "urn:k8s:secret:tls:ca", cert: "urn:k8s:secret:tls:cert", key: "urn:k8s:secret:tls:key"}
  inline:
    url: https://idp.example.com/token
    clientConfig:
      tls:
        insecureSkipVerify: true
        ca: |
` + indent(certPEM, "          ")
	cfg, err := Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	refs := cfg.Policies["refs"].Compiled.TLS
	if refs == nil || refs.RootCAs == nil || len(refs.Certificates) != 1 || refs.InsecureSkipVerify {
		t.Errorf("refs TLS = %+v", refs)
	}
	inline := cfg.Policies["inline"].Compiled.TLS
	if inline == nil || inline.RootCAs == nil || !inline.InsecureSkipVerify {
		t.Errorf("inline TLS = %+v", inline)
	}
}

// TestServerSecurity loads the admin API's credentials, the HTTP-mode
// policy header and the failure budgets.
func TestServerSecurity(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	dir := t.TempDir()
	writeSecret(t, dir, "admin", "token", "0123456789abcdef0123456789abcdef\n")
	writeSecret(t, dir, "admin", "tls.crt", certPEM)
	writeSecret(t, dir, "admin", "tls.key", keyPEM)
	writeSecret(t, dir, "admin", "ca.crt", certPEM)
	writeSecret(t, dir, "gw", "secret", "s")
	yaml := `
secrets: {dir: "` + dir + `"}
server:
  http: {policyHeader: X-Extauthz-Policy}
  admin:
    token: urn:k8s:secret:admin:token
    tls: {cert: "urn:k8s:secret:admin:tls.crt", key: "urn:k8s:secret:admin:tls.key", clientCA: "urn:k8s:secret:admin:ca.crt"}
policies:
  app:
    url: https://idp.example.com/token
    failureBudget: {maxRejections: 3, window: 30s}
  off:
    url: https://idp.example.com/token
    failureBudget: {maxRejections: 0}
  gateway:
    url: https://idp.example.com/token
    clientID: gw
    clientSecret: urn:k8s:secret:gw:secret
    failureBudget: {maxRejections: 3}
`
	cfg, err := Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Server.Compiled
	if c.AdminToken.Reveal() != "0123456789abcdef0123456789abcdef" || !c.AdminClientCA {
		t.Errorf("admin: token %q, client CA %v", c.AdminToken.Reveal(), c.AdminClientCA)
	}
	if tc := c.AdminTLS; tc == nil || len(tc.Certificates) != 1 || tc.ClientCAs == nil || tc.ClientAuth != tls.VerifyClientCertIfGiven || !slices.Contains(tc.NextProtos, "h2") {
		t.Errorf("admin TLS = %+v", tc)
	}
	if !slices.Contains(cfg.Files, filepath.Join(dir, "admin", "token")) {
		t.Errorf("the admin token file is not watched: %v", cfg.Files)
	}
	budget := func(name string) (int, time.Duration) {
		p := cfg.Policies[name].Compiled
		return p.MaxRejections, p.RejectionWindow
	}
	if n, w := budget("app"); n != 3 || w != 30*time.Second {
		t.Errorf("app budget %d in %s", n, w)
	}
	if n, _ := budget("off"); n != 0 {
		t.Errorf("off budget %d, want none", n)
	}
	if n, _ := budget("gateway"); n != 0 {
		t.Errorf("gateway budget %d, want none: callers send no credentials", n)
	}
	if !slices.ContainsFunc(cfg.Warnings, func(w string) bool {
		return strings.Contains(w, "policies.gateway.failureBudget: has no effect in gateway mode")
	}) {
		t.Errorf("no warning about the gateway's budget: %q", cfg.Warnings)
	}
}

// problemCase is a configuration and one problem it must have, as printed.
type problemCase struct{ name, give, want string }

func TestProblems(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	dir := t.TempDir()
	writeSecret(t, dir, "empty", "key", "\n")
	tests := []problemCase{
		{"empty file", "", "the file is empty: at least one policy is needed"},
		{"not YAML", "policies: [", "line 1: did not find expected node content"},
		{"two documents", "policies: {}\n---\nx: 1\n", "line 2: more than one YAML document"},
		{"no policies", "server: {grpcAddress: ':9001'}\n", "policies: at least one policy is needed"},
		{"unknown top-level field", "polices:\n  a: {url: 'https://x/t'}\n", `line 1: unknown field "polices" (did you mean "policies"?)`},
		{"unknown policy field", "policies:\n  orders:\n    url: https://x/t\n    clientSecrett: x\n", `line 4: policies.orders: unknown field "clientSecrett" (did you mean "clientSecret"?)`},
		{"wrong case", "policies:\n  orders:\n    url: https://x/t\n    clientId: x\n", `line 4: policies.orders: unknown field "clientId" (did you mean "clientID"?)`},
		{"unknown nested field", "policies:\n  o:\n    url: https://x/t\n    clientConfig:\n      timeout: 3\n", `line 5: policies.o.clientConfig: unknown field "timeout" (did you mean "timeoutSeconds"?)`},
		{"unknown field far from any", "server:\n  zzzzzzzz: 1\npolicies: {a: {url: 'https://x/t'}}\n", `line 2: server: unknown field "zzzzzzzz": want one of admin, adminAddress, grpc, grpcAddress, http, httpAddress`},
		{"wrong type", "policies:\n  o:\n    url: https://x/t\n    scopes: read\n", "line 4: cannot unmarshal !!str `read` into []string"},
		{"duration without unit", "policies:\n  o:\n    url: https://x/t\n    defaultTTL: 300\n", `line 4: "300" is not a duration: write it with a unit, such as 300s or 5m`},
		{"duration too short", "policies:\n  o:\n    url: https://x/t\n    defaultTTL: 10ms\n", "line 4: policies.o.defaultTTL: 10ms is too short: at least 1s"},
		{"missing url", "policies:\n  o: {audience: x}\n", "line 2: policies.o.url: the token endpoint URL is required"},
		{"empty policy", "policies:\n  o:\n", "line 2: policies.o: the policy is empty"},
		{"relative url", "policies:\n  o: {url: /token}\n", `line 2: policies.o.url: "/token" is not an http or https URL`},
		{"url with credentials", "policies:\n  o: {url: 'https://a:b@x/t'}\n", "policies.o.url: the URL must not carry credentials"},
		{"bad policy name", "policies:\n  'bad name': {url: 'https://x/t'}\n", "line 2: policies.bad name: a policy name is 1 to 63 letters"},
		{"clientID without clientSecret", "policies:\n  o: {url: 'https://x/t', clientID: app}\n", "line 2: policies.o.clientSecret: clientID is set, so clientSecret must be too"},
		{"clientSecret without clientID", "policies:\n  o: {url: 'https://x/t', clientSecret: s}\n", "policies.o.clientID: clientSecret is set, so clientID must be too"},
		{"malformed secret reference", "policies:\n  o: {url: 'https://x/t', clientID: app, clientSecret: 'urn:k8s:my-secret:my-secret:clientSecret'}\n",
			`policies.o.clientSecret: malformed secret reference: want urn:k8s:secret:<name>:<key>; it reads urn:k8s:<a>:<b>:<c>, like the Traefik Hub document's example: write urn:k8s:secret:<b>:<c>`},
		{"a literal secret that starts with urn: is never printed", "policies:\n  o: {url: 'https://x/t', clientID: app, clientSecret: 'urn:Sup3r-S3cret!'}\n", "policies.o.clientSecret: malformed secret reference: want"},
		{"unreadable secret", "secrets: {dir: '" + dir + "'}\npolicies:\n  o: {url: 'https://x/t', clientID: app, clientSecret: 'urn:k8s:secret:nope:key'}\n", "policies.o.clientSecret: secret urn:k8s:secret:nope:key: open "},
		{"empty secret", "secrets: {dir: '" + dir + "'}\npolicies:\n  o: {url: 'https://x/t', clientID: app, clientSecret: 'urn:k8s:secret:empty:key'}\n", "policies.o.clientSecret: resolves to an empty value"},
		{"unknown auth method", "policies:\n  o: {url: 'https://x/t', authMethod: mtls}\n", `policies.o.authMethod: "mtls" is not supported`},
		{"private_key_jwt without clientID", "policies:\n  o: {url: 'https://x/t', authMethod: private_key_jwt}\n", "policies.o.clientID: private_key_jwt authenticates the policy's own client: clientID is required"},
		{"private_key_jwt with a secret", "policies:\n  o: {url: 'https://x/t', authMethod: private_key_jwt, clientID: a, clientSecret: s}\n", "policies.o.clientSecret: private_key_jwt uses no client secret"},
		{"private_key_jwt without a key", "policies:\n  o: {url: 'https://x/t', authMethod: private_key_jwt, clientID: a}\n", "policies.o.clientAssertion.key: private_key_jwt needs the signing key"},
		{"private_key_jwt with a bad key", "policies:\n  o: {url: 'https://x/t', authMethod: private_key_jwt, clientID: a, clientAssertion: {key: nope}}\n", "policies.o.clientAssertion.key: no PEM private key found"},
		{"private_key_jwt with a certificate as key", "policies:\n  o:\n    url: https://x/t\n    authMethod: private_key_jwt\n    clientID: a\n    clientAssertion:\n      key: |\n" + indent(certPEM, "        "), `is not a private key this can read`},
		{"EC key for RS256", "policies:\n  o:\n    url: https://x/t\n    authMethod: private_key_jwt\n    clientID: a\n    clientAssertion:\n      algorithm: RS256\n      key: |\n" + indent(keyPEM, "        "), `policies.o.clientAssertion.algorithm: a EC P-256 key cannot sign "RS256"`},
		{"assertion with another method", "policies:\n  o: {url: 'https://x/t', clientAssertion: {key: x}}\n", "policies.o.clientAssertion: is only for authMethod: private_key_jwt"},
		{"tls_client_auth without a certificate", "policies:\n  o: {url: 'https://x/t', authMethod: tls_client_auth, clientID: a}\n", "policies.o.clientConfig.tls: tls_client_auth needs the client certificate"},
		{"bad scope", "policies:\n  o: {url: 'https://x/t', scopes: ['a b']}\n", `policies.o.scopes[0]: "a b" is not a scope`},
		{"reserved extra param", "policies:\n  o: {url: 'https://x/t', extraParams: {grant_type: password}}\n", `policies.o.extraParams.grant_type: "grant_type" is set by extauthz itself`},
		{"claims syntax", "policies:\n  o:\n    url: https://x/t\n    claims: Equals(`grp`, `admin`) & Equals(`a`, `b`)\n",
			"line 4: policies.o.claims: column 24: a single \"&\" is not an operator: use \"&&\"\n\tEquals(`grp`, `admin`) & Equals(`a`, `b`)\n\t                       ^"},
		{"bad forward header name", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {'X Group': grp}}\n", `policies.o.forwardHeaders.X Group: "X Group" cannot be forwarded`},
		{"reserved forward header", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {Host: grp}}\n", `"Host" cannot be forwarded`},
		{"forward header is the token header", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {authorization: grp}}\n", `"authorization" is the header that carries the token`},
		{"forward header twice", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {X-A: a, x-a: b}}\n", `is the same header as`},
		{"bad claim path", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {X-A: 'a..b'}}\n", `policies.o.forwardHeaders.X-A: claim key "a..b": empty segment`},
		{"bad username claim", "policies:\n  o: {url: 'https://x/t', usernameClaim: 'a\\'}\n", `policies.o.usernameClaim: claim key`},
		{"bad token header", "policies:\n  o: {url: 'https://x/t', tokenHeader: 'Content-Length'}\n", `policies.o.tokenHeader: "Content-Length" cannot carry the token`},
		{"timeout out of range", "policies:\n  o: {url: 'https://x/t', clientConfig: {timeoutSeconds: 0}}\n", "policies.o.clientConfig.timeoutSeconds: 0 is out of range: want 1 to 300"},
		{"retries out of range", "policies:\n  o: {url: 'https://x/t', clientConfig: {maxRetries: -1}}\n", "policies.o.clientConfig.maxRetries: -1 is out of range: want 0 to 10"},
		{"bad CA", "policies:\n  o: {url: 'https://x/t', clientConfig: {tls: {ca: 'not a pem'}}}\n", "policies.o.clientConfig.tls.ca: no PEM certificate found"},
		{"cert without key", "policies:\n  o: {url: 'https://x/t', clientConfig: {tls: {cert: 'x'}}}\n", "policies.o.clientConfig.tls: cert and key go together"},
		{"bad cert", "policies:\n  o: {url: 'https://x/t', clientConfig: {tls: {cert: 'x', key: 'y'}}}\n", "policies.o.clientConfig.tls.cert: the certificate and key do not load"},
		{"TLS with http", "policies:\n  o: {url: 'http://x/t', clientConfig: {tls: {insecureSkipVerify: true}}}\n", "policies.o.clientConfig.tls: TLS settings are given but the url is not https"},
		{"route to unknown policy", "routes:\n  - {host: a.example.com, policy: nope}\npolicies:\n  o: {url: 'https://x/t'}\n", `line 2: routes[0].policy: no policy is named "nope" (policies: o)`},
		{"route without policy", "routes:\n  - {host: a.example.com}\npolicies:\n  o: {url: 'https://x/t'}\n", "routes[0].policy: a route needs a policy"},
		{"bad route host", "routes:\n  - {host: 'a*.example.com', policy: o}\npolicies:\n  o: {url: 'https://x/t'}\n", `routes[0].host: "a*.example.com" is not a host`},
		{"bad route path", "routes:\n  - {pathPrefix: api, policy: o}\npolicies:\n  o: {url: 'https://x/t'}\n", `routes[0].pathPrefix: "api" does not start with /`},
		{"unknown default policy", "defaultPolicy: nope\npolicies:\n  o: {url: 'https://x/t'}\n", `line 1: defaultPolicy: no policy is named "nope" (policies: o)`},
		{"bad address", "server: {grpcAddress: '9001'}\npolicies:\n  o: {url: 'https://x/t'}\n", `server.grpcAddress: "9001" is not an address`},
		{"same address twice", "server: {grpcAddress: ':9001', adminAddress: ':9001'}\npolicies:\n  o: {url: 'https://x/t'}\n", `server.adminAddress: ":9001" is also server.grpcAddress`},
		{"bad log level", "log: {level: verbose}\npolicies:\n  o: {url: 'https://x/t'}\n", `log.level: "verbose" is not a level`},
		{"bad log format", "log: {format: xml}\npolicies:\n  o: {url: 'https://x/t'}\n", `log.format: "xml" is not a format`},
		{"bad tracing endpoint", "tracing: {endpoint: collector}\npolicies:\n  o: {url: 'https://x/t'}\n", `tracing.endpoint: "collector" is not host:port`},
		{"bad sample ratio", "tracing: {sampleRatio: 2}\npolicies:\n  o: {url: 'https://x/t'}\n", "tracing.sampleRatio: 2 is out of range: want 0 to 1"},
		{"redis without endpoints", "store: {redis: {username: u}}\npolicies:\n  o: {url: 'https://x/t'}\n", "line 1: store.redis.endpoints: at least one host:port is needed"},
		{"bad redis endpoint", "store: {redis: {endpoints: [redis]}}\npolicies:\n  o: {url: 'https://x/t'}\n", `store.redis.endpoints[0]: "redis" is not host:port`},
		{"single with two endpoints", "store: {redis: {endpoints: ['a:1', 'b:1']}}\npolicies:\n  o: {url: 'https://x/t'}\n", "store.redis.endpoints: a single Redis takes one endpoint; for several, set cluster: true or sentinel.masterSet"},
		{"cluster and sentinel", "store: {redis: {endpoints: ['a:1'], cluster: true, sentinel: {masterSet: m}}}\npolicies:\n  o: {url: 'https://x/t'}\n", "store.redis: cluster and sentinel exclude each other"},
		{"sentinel without master set", "store: {redis: {endpoints: ['a:1'], sentinel: {username: u}}}\npolicies:\n  o: {url: 'https://x/t'}\n", "store.redis.sentinel.masterSet: the name of the master set is required"},
		{"redis timeout", "store: {redis: {endpoints: ['a:1'], timeoutMillis: 60000}}\npolicies:\n  o: {url: 'https://x/t'}\n", "store.redis.timeoutMillis: 60000 is out of range: want 1 to 10000"},
		{"bad encryption key", "store: {encryptionKey: c2hvcnQ=, redis: {endpoints: ['a:1']}}\npolicies:\n  o: {url: 'https://x/t'}\n", "store.encryptionKey: want the base64 of 32 random bytes"},
		{"policy store with maxEntries", "policies:\n  o: {url: 'https://x/t', store: {maxEntries: 5}}\n", "policies.o.store.maxEntries: the in-process tier is one for all policies"},
		{"bad policy store", "policies:\n  o:\n    url: https://x/t\n    store: {redis: {endpoints: ['a:1', 'b:2']}}\n", "line 4: policies.o.store.redis.endpoints: a single Redis takes one endpoint"},
		{"route path not normal", "routes:\n  - {pathPrefix: '/a/../b/', policy: o}\npolicies:\n  o: {url: 'https://x/t'}\n", `routes[0].pathPrefix: "/a/../b/" is not in normal form: requests are matched on normalized paths, write "/b/"`},
		{"route path with lower-case escapes", "routes:\n  - {pathPrefix: '/caf%c3%a9', policy: o}\npolicies:\n  o: {url: 'https://x/t'}\n", `write "/caf%C3%A9"`},
		{"route path no request can have", "routes:\n  - {pathPrefix: '/a%2fb', policy: o}\npolicies:\n  o: {url: 'https://x/t'}\n", `routes[0].pathPrefix: "/a%2fb": the path holds an encoded slash or backslash (%2F, %5C), so no request could match it`},
		{"route path with a query", "routes:\n  - {pathPrefix: '/a?b=1', policy: o}\npolicies:\n  o: {url: 'https://x/t'}\n", `write "/a"`},
		{"policy header is a forwarding header", "server: {http: {policyHeader: X-Forwarded-Host}}\npolicies:\n  o: {url: 'https://x/t'}\n", `server.http.policyHeader: "X-Forwarded-Host" cannot name the policy`},
		{"policy header is Authorization", "server: {http: {policyHeader: authorization}}\npolicies:\n  o: {url: 'https://x/t'}\n", `server.http.policyHeader: "authorization" cannot name the policy`},
		{"policy header not a name", "server: {http: {policyHeader: 'X Policy'}}\npolicies:\n  o: {url: 'https://x/t'}\n", `server.http.policyHeader: "X Policy" cannot name the policy`},
		{"request bytes too small", "server: {grpc: {maxRequestBytes: 100}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.grpc.maxRequestBytes: 100 is out of range: want 4096 to 67108864"},
		{"streams out of range", "server: {grpc: {maxConcurrentStreams: -1}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.grpc.maxConcurrentStreams: -1 is out of range"},
		{"header bytes out of range", "server: {http: {maxHeaderBytes: 1073741824}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.http.maxHeaderBytes: 1073741824 is out of range: want 4096 to 1048576"},
		{"admin token too short", "server: {admin: {token: short}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.admin.token: want 16 to 4096 printable characters without spaces"},
		{"admin token with a space", "server: {admin: {token: 'a long token with spaces'}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.admin.token: want 16 to 4096 printable characters"},
		{"admin token reference", "server: {admin: {token: 'urn:k8s:secret:admin'}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.admin.token: malformed secret reference"},
		{"admin client CA without a certificate", "server: {admin: {tls: {clientCA: x}}}\npolicies:\n  o: {url: 'https://x/t'}\n", "server.admin.tls: cert and key are required to serve the admin address over TLS"},
		{"admin bad client CA", "server:\n  admin:\n    tls:\n      cert: |\n" + indent(certPEM, "        ") + "      key: |\n" + indent(keyPEM, "        ") + "      clientCA: nope\npolicies:\n  o: {url: 'https://x/t'}\n", "server.admin.tls.clientCA: no PEM certificate found"},
		{"negative budget", "policies:\n  o: {url: 'https://x/t', failureBudget: {maxRejections: -1}}\n", "policies.o.failureBudget.maxRejections: -1 is out of range: want 0 (no budget) to 1000"},
		{"budget window too short", "policies:\n  o: {url: 'https://x/t', failureBudget: {window: 10ms}}\n", "policies.o.failureBudget.window: 10ms is out of range: want 1s to 1h0m0s"},
		{"concurrency out of range", "policies:\n  o: {url: 'https://x/t', clientConfig: {maxConcurrentRequests: 0}}\n", "policies.o.clientConfig.maxConcurrentRequests: 0 is out of range: want 1 to 1024"},
		{"one endpoint, two bounds", "policies:\n  a: {url: 'https://x/t', clientConfig: {maxConcurrentRequests: 8}}\n  b: {url: 'https://x/t'}\n",
			"policies.b.clientConfig.maxConcurrentRequests: 32, but policy a sets 8 for the same token endpoint: policies that share an endpoint share one bound"},
		{"queue out of range", "policies:\n  o: {url: 'https://x/t', clientConfig: {maxQueuedRequests: 0}}\n", "policies.o.clientConfig.maxQueuedRequests: 0 is out of range: want 1 to 65536"},
		{"endpoint cap out of range", "policies:\n  o: {url: 'https://x/t', failureBudget: {maxEndpointRejections: 0}}\n", "policies.o.failureBudget.maxEndpointRejections: 0 is out of range: want 1 to 100000"},
		{"one endpoint, two queues", "policies:\n  a: {url: 'https://x/t', clientConfig: {maxQueuedRequests: 8}}\n  b: {url: 'https://x/t'}\n",
			"policies.b.clientConfig.maxQueuedRequests: 256, but policy a sets 8 for the same token endpoint"},
		{"one endpoint, two caps", "policies:\n  a: {url: 'https://x/t', failureBudget: {maxEndpointRejections: 8}}\n  b: {url: 'https://x/t'}\n",
			"policies.b.failureBudget.maxEndpointRejections: 50, but policy a sets 8 for the same token endpoint"},
		{"redis without an encryption key", "store: {redis: {endpoints: ['a:1']}}\npolicies:\n  o: {url: 'https://x/t'}\n", "store.encryptionKey: is required with redis"},
		{"a policy's redis without an encryption key", "policies:\n  o: {url: 'https://x/t', store: {redis: {endpoints: ['a:1']}}}\n", "policies.o.store.encryptionKey: is required with redis"},
		{"forward header x-envoy-*", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {X-Envoy-Original-Path: grp}}\n", `"X-Envoy-Original-Path" cannot be forwarded`},
		{"forward header x-forwarded-for", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {X-Forwarded-For: grp}}\n", `"X-Forwarded-For" cannot be forwarded`},
		{"forward header cookie", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {Cookie: grp}}\n", `"Cookie" cannot be forwarded`},
		{"forward header set-cookie", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {Set-Cookie: grp}}\n", `"Set-Cookie" cannot be forwarded`},
		{"forward header x-request-id", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {X-Request-Id: grp}}\n", `"X-Request-Id" cannot be forwarded`},
		{"forward header x-extauthz-policy", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {X-Extauthz-Policy: grp}}\n", `"X-Extauthz-Policy" cannot be forwarded`},
		{"forward header pseudo-header", "policies:\n  o: {url: 'https://x/t', forwardHeaders: {':authority': grp}}\n", `":authority" cannot be forwarded`},
		{"forward header the configured policy header", "server: {http: {policyHeader: X-Tenant-Policy}}\npolicies:\n  o: {url: 'https://x/t', forwardHeaders: {x-tenant-policy: grp}}\n", `"x-tenant-policy" cannot be forwarded`},
		{"token header cookie", "policies:\n  o: {url: 'https://x/t', tokenHeader: Cookie}\n", `policies.o.tokenHeader: "Cookie" cannot carry the token`},
		{"token header x-forwarded-host", "policies:\n  o: {url: 'https://x/t', tokenHeader: X-Forwarded-Host}\n", `policies.o.tokenHeader: "X-Forwarded-Host" cannot carry the token`},
		{"redis password reference", "policies:\n  o: {url: 'https://x/t', store: {redis: {endpoints: ['a:1'], password: 'urn:k8s:secret:x'}}}\n", "policies.o.store.redis.password: malformed secret reference"},
	}
	tests = append(tests, secretlessProblems(t)...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.give), "")
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var found bool
			for _, p := range problems(err) {
				found = found || strings.Contains(p.Error(), tt.want)
			}
			if !found {
				t.Errorf("problems:\n%v\nwant one containing\n%s", err, tt.want)
			}
		})
	}
}

// TestWarnings: what loads but should not go unsaid.
func TestWarnings(t *testing.T) {
	cfg, err := Parse([]byte(`
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["10.0.0.1:6379"], tls: {insecureSkipVerify: true}}
policies:
  plain: {url: "http://idp.example.com/token", jwksURL: "http://idp.example.com/jwks"}
  local: {url: "http://127.0.0.1:8080/token", issuer: "http://localhost:8080"}
  skip: {url: "https://idp.example.com/token", clientConfig: {tls: {insecureSkipVerify: true}}}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"policies.plain.url: is plain HTTP",
		"policies.plain.jwksURL: is plain HTTP",
		"policies.skip.clientConfig.tls.insecureSkipVerify: the token endpoint's certificate is not checked",
		"store.redis.tls.insecureSkipVerify: Redis's certificate is not checked",
	} {
		if !slices.ContainsFunc(cfg.Warnings, func(got string) bool { return strings.Contains(got, w) }) {
			t.Errorf("warnings %q lack %q", cfg.Warnings, w)
		}
	}
	for _, got := range cfg.Warnings {
		if strings.Contains(got, "policies.local") {
			t.Errorf("a loopback IdP is warned about: %s", got)
		}
	}
}

// TestTrustID: policies whose token endpoints are trusted differently
// never share tokens.
func TestTrustID(t *testing.T) {
	certPEM, _ := selfSigned(t)
	otherPEM, _ := selfSigned(t)
	cfg, err := Parse([]byte(`
policies:
  system: {url: "https://idp.example.com/token"}
  ca:
    url: https://idp.example.com/token
    clientConfig:
      tls:
        ca: |
`+indent(certPEM, "          ")+`
  other-ca:
    url: https://idp.example.com/token
    clientConfig:
      tls:
        ca: |
`+indent(otherPEM, "          ")+`
  skip: {url: "https://idp.example.com/token", clientConfig: {tls: {insecureSkipVerify: true}}}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, name := range []string{"system", "ca", "other-ca", "skip"} {
		id := cfg.Policies[name].Compiled.TrustID
		if other, ok := seen[id]; ok {
			t.Errorf("%s and %s share the trust id %q", name, other, id)
		}
		seen[id] = name
	}
}

// TestProblemsShowNoSecret: a literal secret that happens to start with
// "urn:" is refused as a malformed reference, and never printed.
func TestProblemsShowNoSecret(t *testing.T) {
	_, err := Parse([]byte("policies:\n  o: {url: 'https://x/t', clientID: app, clientSecret: 'urn:Sup3r-S3cret!'}\n"), "")
	if err == nil || strings.Contains(err.Error(), "Sup3r") {
		t.Errorf("problems: %v", err)
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	yaml := `
server: {grpcAddress: nope}
defaultPolicy: missing
routes:
  - {policy: also-missing}
policies:
  a:
    url: ftp://x/t
    claims: Equals(` + "`a`" + `)
    unknownField: 1
  b:
    url: https://x/t
    clientID: app
`
	_, err := Parse([]byte(yaml), "")
	// The unknown field stops decoding before validation, so it is reported alone.
	if ps := problems(err); len(ps) != 1 || !strings.Contains(ps[0].Error(), `unknown field "unknownField"`) {
		t.Fatalf("problems: %v", err)
	}
	_, err = Parse([]byte(strings.Replace(yaml, "    unknownField: 1\n", "", 1)), "")
	ps := problems(err)
	want := []string{"server.grpcAddress", "policies.a.url", "policies.a.claims", "policies.b.clientSecret", "routes[0].policy", "defaultPolicy"}
	if len(ps) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for i, p := range ps {
		var prob *Problem
		if !errors.As(p, &prob) || prob.Path != want[i] || prob.Line == 0 {
			t.Errorf("problem %d = %v, want path %s with a line", i, p, want[i])
		}
	}
}

func problems(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func writeSecret(t *testing.T, dir, name, key, value string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, key), []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+prefix) + "\n"
}

// selfSigned returns a certificate and its key, as PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	pair := testpki.NewCA(t).Issue(t, "test")
	return pair.CertPEM, pair.KeyPEM
}

func TestStores(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, dir, "redis", "password", "pw\n")
	writeSecret(t, dir, "redis", "key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
	cfg, err := Parse([]byte(`
secrets: {dir: "`+dir+`"}
store:
  keyPrefix: "team-a:"
  encryptionKey: urn:k8s:secret:redis:key
  redis:
    endpoints: ["10.0.0.1:6379", "10.0.0.2:6379"]
    cluster: true
    database: 3
    password: urn:k8s:secret:redis:password
policies:
  a: {url: "https://x/t"}
  b: {url: "https://x/t"}
  c:
    url: https://x/t
    store:
      encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
      redis:
        endpoints: ["10.0.0.9:26379"]
        sentinel: {masterSet: main, password: sentinel-pw}
        timeoutMillis: 80
  d:
    url: https://x/t
    store: {}
  e:
    url: https://x/t
    store: {encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	a, b, c, d := cfg.Policies["a"].Compiled.Store, cfg.Policies["b"].Compiled.Store, cfg.Policies["c"].Compiled.Store, cfg.Policies["d"].Compiled.Store
	if a != b || a.Redis == nil || a.KeyPrefix != "team-a:" || len(a.EncryptionKey.Reveal()) != 32 {
		t.Fatalf("top-level store: %+v", a)
	}
	if r := a.Redis; r.Mode != tokencache.RedisCluster || r.Database != 0 || r.Password.Reveal() != "pw" || r.Timeout != DefaultRedisTimeout {
		t.Errorf("cluster: %+v", r)
	}
	if r := c.Redis; r.Mode != tokencache.RedisSentinel || r.MasterSet != "main" || r.SentinelPassword.Reveal() != "sentinel-pw" || r.Timeout != 80*time.Millisecond || c.KeyPrefix != DefaultKeyPrefix {
		t.Errorf("sentinel: %+v", r)
	}
	if a.Redis.Identity == "" || a.Redis.Identity == c.Redis.Identity || strings.Contains(a.Redis.Identity, "pw") {
		t.Errorf("identities %q and %q", a.Redis.Identity, c.Redis.Identity)
	}
	if d.Redis != nil {
		t.Error("an empty policy store has Redis")
	}
	want := []string{
		"line 9: store.redis.database: Redis Cluster has only database 0: database 3 is ignored",
		"policies.e.store.encryptionKey: has no effect without redis: the in-process tier never leaves the process",
	}
	for _, w := range want {
		if !slices.ContainsFunc(cfg.Warnings, func(got string) bool { return strings.Contains(got, w) }) {
			t.Errorf("warnings %q lack %q", cfg.Warnings, w)
		}
	}
}

// TestCallers compiles server.tls: who may call the check listeners.
func TestCallers(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	dir := t.TempDir()
	writeSecret(t, dir, "tls", "tls.crt", certPEM)
	writeSecret(t, dir, "tls", "tls.key", keyPEM)
	writeSecret(t, dir, "tls", "ca.crt", certPEM)
	cfg, err := Parse([]byte(`
secrets: {dir: "`+dir+`"}
server:
  grpc: {maxHeaderBytes: 8192}
  admin: {socket: /run/extauthz/admin.sock}
  tls:
    cert: urn:k8s:secret:tls:tls.crt
    key: urn:k8s:secret:tls:tls.key
    clientCA: urn:k8s:secret:tls:ca.crt
    allowedCallers: ["spiffe://cluster.local/ns/istio-system/sa/gateway", "dns:Envoy.Example."]
policies:
  gw: {url: "https://idp.example.com/token", clientID: gw, clientSecret: s}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Server.Compiled
	if c.Callers == nil || !c.Callers.RequireCertificate || !c.CallersAuthenticated() {
		t.Errorf("callers = %+v", c.Callers)
	}
	if cfg.Server.GRPC.MaxHeaderBytes != 8192 || cfg.Server.Admin.Socket != "/run/extauthz/admin.sock" {
		t.Errorf("server = %+v", cfg.Server)
	}
	for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if !slices.Contains(cfg.Files, filepath.Join(dir, "tls", f)) {
			t.Errorf("%s is not watched: %v", f, cfg.Files)
		}
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings %q: callers are authenticated", cfg.Warnings)
	}

	// Defaults: plaintext listeners, no one authenticated.
	cfg, err = Parse([]byte("policies:\n  o: {url: 'https://x/t'}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Compiled.Callers != nil || cfg.Server.GRPC.MaxHeaderBytes != DefaultMaxGRPCHeaderBytes {
		t.Errorf("defaults: callers %+v, maxHeaderBytes %d", cfg.Server.Compiled.Callers, cfg.Server.GRPC.MaxHeaderBytes)
	}

	for _, tt := range []problemCase{
		{"clientCA without a certificate", "server: {tls: {clientCA: x}}\npolicies: {o: {url: 'https://x/t'}}\n", "server.tls: clientCA and allowedCallers need the listeners to serve TLS: set cert and key"},
		{"allowed callers without a CA", "secrets: {dir: '" + dir + "'}\nserver: {tls: {cert: 'urn:k8s:secret:tls:tls.crt', key: 'urn:k8s:secret:tls:tls.key', allowedCallers: [dns:a]}}\npolicies: {o: {url: 'https://x/t'}}\n",
			"server.tls.allowedCallers: needs clientCA"},
		{"a key without a certificate", "secrets: {dir: '" + dir + "'}\nserver: {tls: {key: 'urn:k8s:secret:tls:tls.key'}}\npolicies: {o: {url: 'https://x/t'}}\n", "server.tls: cert and key go together"},
		{"not an identity", "secrets: {dir: '" + dir + "'}\nserver: {tls: {cert: 'urn:k8s:secret:tls:tls.crt', key: 'urn:k8s:secret:tls:tls.key', clientCA: 'urn:k8s:secret:tls:ca.crt', allowedCallers: [istio-ingressgateway]}}\npolicies: {o: {url: 'https://x/t'}}\n",
			`server.tls.allowedCallers[0]: "istio-ingressgateway": want a URI SAN such as spiffe://`},
		{"an empty DNS name", "secrets: {dir: '" + dir + "'}\nserver: {tls: {cert: 'urn:k8s:secret:tls:tls.crt', key: 'urn:k8s:secret:tls:tls.key', clientCA: 'urn:k8s:secret:tls:ca.crt', allowedCallers: ['dns:']}}\npolicies: {o: {url: 'https://x/t'}}\n",
			`server.tls.allowedCallers[0]: "dns:": "dns:" is not dns:<name>`},
		{"a CA that is no certificate", "secrets: {dir: '" + dir + "'}\nserver: {tls: {cert: 'urn:k8s:secret:tls:tls.crt', key: 'urn:k8s:secret:tls:tls.key', clientCA: 'urn:k8s:secret:tls:tls.key'}}\npolicies: {o: {url: 'https://x/t'}}\n",
			"server.tls.clientCA: no PEM certificate found"},
		{"header list too small", "server: {grpc: {maxHeaderBytes: 100}}\npolicies: {o: {url: 'https://x/t'}}\n", "server.grpc.maxHeaderBytes: 100 is out of range: want 4096 to 1048576"},
		{"relative socket", "server: {admin: {socket: admin.sock}}\npolicies: {o: {url: 'https://x/t'}}\n", `server.admin.socket: "admin.sock" is not an absolute path`},
		{"long socket", "server: {admin: {socket: /" + strings.Repeat("s", 110) + "}}\npolicies: {o: {url: 'https://x/t'}}\n", "is longer than a Unix socket's path may be"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.give), "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestUnauthenticatedCallersWarning: a policy that hands out its token or a
// DPoP proof to whoever calls is warned about unless callers must present
// a certificate from server.tls.clientCA.
func TestUnauthenticatedCallersWarning(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	dir := t.TempDir()
	writeSecret(t, dir, "tls", "tls.crt", certPEM)
	writeSecret(t, dir, "tls", "tls.key", keyPEM)
	writeSecret(t, dir, "tls", "ca.crt", certPEM)
	const policies = `
policies:
  app: {url: "https://idp.example.com/token"}
  gw: {url: "https://idp.example.com/token", clientID: gw, clientSecret: s}
  bound: {url: "https://idp.example.com/token", dpop: {}}
`
	const warning = "server.tls: policies bound, gw give their token (gateway mode) or a DPoP proof for the method and URL a caller names to whoever reaches server.grpcAddress"
	for _, tt := range []struct {
		name, server string
		want         bool
	}{
		{"plaintext", "", true},
		{"plaintext, HTTP mode off", "server: {httpAddress: ''}\n", true},
		{"TLS without a client CA", "server: {tls: {cert: 'urn:k8s:secret:tls:tls.crt', key: 'urn:k8s:secret:tls:tls.key'}}\n", true},
		{"callers authenticated", "server: {tls: {cert: 'urn:k8s:secret:tls:tls.crt', key: 'urn:k8s:secret:tls:tls.key', clientCA: 'urn:k8s:secret:tls:ca.crt'}}\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte("secrets: {dir: '"+dir+"'}\n"+tt.server+policies), "")
			if err != nil {
				t.Fatal(err)
			}
			got := slices.ContainsFunc(cfg.Warnings, func(w string) bool { return strings.Contains(w, warning) })
			if got != tt.want {
				t.Errorf("warned %v, want %v: %q", got, tt.want, cfg.Warnings)
			}
		})
	}
	cfg, err := Parse([]byte("policies:\n  app: {url: 'https://idp.example.com/token'}\n"), "")
	if err != nil || len(cfg.Warnings) != 0 {
		t.Errorf("application mode alone: %v %q", err, cfg.Warnings)
	}
}
