package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// Planted credentials, one per place a URL carries them. No output of the
// binary may show any of them.
const (
	plantTokenQuery   = "TOKQRY-4f1c"   // token endpoint url: query
	plantTokenUser    = "TOKUSR-8a2d"   // token endpoint url: userinfo (refused)
	plantTokenPass    = "TOKPW-93be"    // token endpoint url: userinfo (refused)
	plantDownQuery    = "DOWNQRY-17c0"  // an unreachable token endpoint's query
	plantJWKSUser     = "JWKSUSR-5e77"  // jwksURL: userinfo
	plantJWKSPass     = "JWKSPW-c3a9"   // jwksURL: userinfo
	plantJWKSQuery    = "JWKSQRY-0d4e"  // jwksURL: query
	plantJWKSFrag     = "JWKSFRG-b61f"  // jwksURL: fragment
	plantIssuerUser   = "ISSUSR-2b8c"   // issuer: userinfo
	plantIssuerPass   = "ISSPW-e0f3"    // issuer: userinfo
	plantIssuerQuery  = "ISSQRY-7a15"   // issuer: query
	plantRedisUser    = "REDUSR-49d2"   // store.redis.endpoints: userinfo (refused)
	plantRedisPass    = "REDPW-a8e6"    // store.redis.endpoints: userinfo (refused)
	plantRedisBare    = "REDBARE-6c31"  // store.redis.endpoints: "password@host:port" (refused)
	plantRedisQuery   = "REDQRY-f27b"   // store.redis.endpoints: query (refused)
	plantRedisField   = "REDFIELD-1e9a" // store.redis.password, a literal
	plantOTLPUser     = "OTLUSR-3d5c"   // tracing.endpoint: userinfo (refused)
	plantOTLPPass     = "OTLPW-86af"    // tracing.endpoint: userinfo (refused)
	plantOTLPQuery    = "OTLQRY-c90d"   // tracing.endpoint: query (refused)
	plantAudienceUser = "AUDUSR-57b4"   // clientAssertion.audience: userinfo (refused)
	plantAudienceQry  = "AUDQRY-0a6e"   // clientAssertion.audience: query (refused)
	plantSpaceQuery   = "SPCQRY-d3c8"   // a query with a space in it (refused)
)

var planted = []string{
	plantTokenQuery, plantTokenUser, plantTokenPass, plantDownQuery,
	plantJWKSUser, plantJWKSPass, plantJWKSQuery, plantJWKSFrag,
	plantIssuerUser, plantIssuerPass, plantIssuerQuery,
	plantRedisUser, plantRedisPass, plantRedisBare, plantRedisQuery, plantRedisField,
	plantOTLPUser, plantOTLPPass, plantOTLPQuery, plantAudienceUser, plantAudienceQry, plantSpaceQuery,
}

// noneShown fails the test for every planted credential text shows.
func noneShown(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range planted {
		if strings.Contains(text, s) {
			t.Errorf("%s shows the planted %s:\n%s", what, s, text)
		}
	}
}

// unusedAddr is a loopback address where nothing listens.
func unusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// refusedPolicies and refusedStore put planted credentials where the
// configuration refuses them; each problem quotes the value.
func refusedPolicies(addr, key string) string {
	return fmt.Sprintf(`  userinfo:
    url: "https://%[2]s:%[3]s@%[1]s/token?client_secret=%[4]s"
  space:
    url: "https://%[1]s/token?client_secret=%[5]s x"
  scheme:
    url: "ftp://%[2]s:%[3]s@%[1]s/token?api_key=%[4]s"
    jwksURL: "htt ps://%[6]s:%[7]s@%[1]s/jwks?api_key=%[8]s#%[9]s"
    issuer: "ftp://%[10]s:%[11]s@%[1]s?api_key=%[12]s"
  audience:
    url: "https://%[1]s/token"
    authMethod: private_key_jwt
    clientID: c
    clientAssertion:
      audience: "ht tp://%[13]s:x@%[1]s?%[14]s"
      key: %[15]q
`, addr, plantTokenUser, plantTokenPass, plantTokenQuery, plantSpaceQuery,
		plantJWKSUser, plantJWKSPass, plantJWKSQuery, plantJWKSFrag,
		plantIssuerUser, plantIssuerPass, plantIssuerQuery, plantAudienceUser, plantAudienceQry, key)
}

func refusedTop(addr string) string {
	return fmt.Sprintf(`tracing: {endpoint: "https://%[2]s:%[3]s@%[1]s/v1/traces?api_key=%[4]s"}
store:
  encryptionKey: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
  redis:
    endpoints: ["redis://%[5]s:%[6]s@%[1]s/0?x=%[7]s", "%[8]s@%[1]s", "%[5]s:%[6]s@%[1]s"]
    cluster: true
    password: %[9]s
`, addr, plantOTLPUser, plantOTLPPass, plantOTLPQuery, plantRedisUser, plantRedisPass, plantRedisQuery, plantRedisBare, plantRedisField)
}

// ecKeyPEM is a signing key, for validation to reach clientAssertion.audience.
func ecKeyPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testpki.PKCS8PEM(t, k)
}

// TestRedactValidate: `extauthz validate` and a refused `serve` print
// every problem of a file full of planted credentials, each URL redacted.
func TestRedactValidate(t *testing.T) {
	dir := t.TempDir()
	addr := "idp.example:8443"
	refused := filepath.Join(dir, "refused.yaml")
	if err := os.WriteFile(refused, []byte(refusedTop("redis.example:6379")+"policies:\n"+refusedPolicies(addr, ecKeyPEM(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binPath, "validate", "--config", refused).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitFailure {
		t.Fatalf("validate: %v, want exit status %d\n%s", err, exitFailure, out)
	}
	noneShown(t, "validate", string(out))
	for _, want := range []string{
		`tracing.endpoint: "https://REDACTED@redis.example:6379/v1/traces?REDACTED" is not host:port`,
		`store.redis.endpoints[0]: "redis://REDACTED@redis.example:6379/0?REDACTED" is not host:port`,
		`store.redis.endpoints[1]: "REDACTED@redis.example:6379" is not host:port`,
		`store.redis.endpoints[2]: "REDACTED@redis.example:6379" is not host:port`,
		"policies.userinfo.url: the URL must not carry credentials",
		`policies.space.url: "https://idp.example:8443/token?REDACTED" holds a space`,
		`policies.scheme.url: "ftp://REDACTED@idp.example:8443/token?REDACTED" is not an http or https URL`,
		`policies.scheme.jwksURL: "REDACTED@idp.example:8443/jwks?REDACTED" holds a space`,
		`policies.scheme.issuer: "ftp://REDACTED@idp.example:8443?REDACTED" is not an http or https URL`,
		`policies.audience.clientAssertion.audience: "REDACTED@idp.example:8443?REDACTED" is not a URL`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate does not say %s:\n%s", want, out)
		}
	}

	// serve refuses to start with it, and says why the same way.
	cmd := exec.Command(binPath, "serve", "--config", refused)
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &exit) || !strings.Contains(string(out), "policies.scheme.issuer") {
		t.Errorf("serve with a refused configuration: %v\n%s", err, out)
	}
	noneShown(t, "serve's refusal", string(out))

	// A valid file that carries credentials where they are allowed: its
	// warnings name no URL.
	valid := filepath.Join(dir, "valid.yaml")
	if err := os.WriteFile(valid, fmt.Appendf(nil, `policies:
  orders:
    url: "https://idp.example/token?api_key=%s"
    jwksURL: "http://%s:%s@idp.example/jwks?api_key=%s#%s"
    issuer: "http://%s:%s@idp.example/?api_key=%s"
`, plantTokenQuery, plantJWKSUser, plantJWKSPass, plantJWKSQuery, plantJWKSFrag, plantIssuerUser, plantIssuerPass, plantIssuerQuery), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(binPath, "validate", "--config", valid).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warning: line 4: policies.orders.jwksURL: is plain HTTP") {
		t.Errorf("validate of a valid file: %v\n%s", err, out)
	}
	noneShown(t, "validate's warnings", string(out))
}

// TestRedactServe runs the binary with credentials in every URL that may
// carry them, against endpoints that answer and endpoints that do not, and
// reloads a configuration that is refused: the logs, the answers to
// Checks, /metrics and ListPolicies (on the socket and over TCP) name the
// URLs redacted.
func TestRedactServe(t *testing.T) {
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("orders-app", testidp.Client{Secret: "s3cret"})
	host := strings.TrimPrefix(idp.URL, "http://")
	down := unusedAddr(t)

	dir := t.TempDir()
	if err := harness.MountSecret(filepath.Join(dir, "secrets", "extauthz-admin"), 1, map[string]string{"token": testAdminToken}); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "admin.sock")
	base := fmt.Sprintf(`server:
  grpcAddress: "127.0.0.1:0"
  httpAddress: "127.0.0.1:0"
  adminAddress: "127.0.0.1:0"
  admin: {token: "urn:k8s:secret:extauthz-admin:token", socket: %[1]q}
log: {level: debug}
secrets: {dir: secrets}
tracing: {endpoint: %[2]q, insecure: true}
store:
  encryptionKey: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
  redis: {endpoints: [%[2]q], password: %[3]s, timeoutMillis: 200}
`, socket, down, plantRedisField)
	creds := "http://" + plantJWKSUser + ":" + plantJWKSPass + "@"
	jwksQuery := "?api_key=" + plantJWKSQuery + "#" + plantJWKSFrag
	policies := fmt.Sprintf(`policies:
  query:
    url: "%[1]s?api_key=%[2]s&sig=%[2]s"
    jwksURL: %[3]q
  down:
    url: "http://%[5]s/token?client_secret=%[6]s"
    jwksURL: %[4]q
  jwksdown:
    url: %[1]q
    jwksURL: %[4]q
  discovery:
    url: %[1]q
    issuer: "http://%[7]s:%[8]s@%[5]s/realm?api_key=%[9]s"
`, idp.TokenURL, plantTokenQuery, strings.Replace(idp.JWKSURL, "http://", creds, 1)+jwksQuery, creds+down+"/jwks"+jwksQuery,
		down, plantDownQuery, plantIssuerUser, plantIssuerPass, plantIssuerQuery)
	cfg := filepath.Join(dir, "config.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(cfg+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfg+".tmp", cfg); err != nil {
			t.Fatal(err)
		}
	}
	write(base + policies)
	proc, err := harness.Start(binPath, cfg)
	if err != nil {
		noneShown(t, "the failed start", err.Error())
		t.Fatal(err)
	}
	t.Cleanup(proc.Kill)

	// Checks: one served, the others failing at the unreachable token
	// endpoint, JWKS and discovery.
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:s3cret"))
	for policy, want := range map[string]int{"query": 200, "down": 503, "jwksdown": 503, "discovery": 503} {
		req, err := http.NewRequest(http.MethodGet, "http://"+proc.HTTPAddress+"/policy/"+policy+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", basic)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("policy %s: HTTP %d, want %d: %s", policy, resp.StatusCode, want, body)
		}
		noneShown(t, "the answer for policy "+policy, fmt.Sprint(resp.Header)+string(body))
	}
	if !proc.WaitLog(`"policy":"discovery"`, 10*time.Second) || !proc.WaitLog("REDACTED", 10*time.Second) {
		t.Errorf("the failed Checks were not logged with redacted URLs:\n%s", proc.Logs())
	}

	// ListPolicies, on the socket and over TCP with the token.
	socketConn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer socketConn.Close()
	tcpConn, err := grpc.NewClient(proc.AdminAddress, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(adminBearer{}))
	if err != nil {
		t.Fatal(err)
	}
	defer tcpConn.Close()
	for name, conn := range map[string]*grpc.ClientConn{"the socket": socketConn, "TCP": tcpConn} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := adminv1.NewAdminClient(conn).ListPolicies(ctx, &adminv1.ListPoliciesRequest{})
		cancel()
		if err != nil {
			t.Fatalf("ListPolicies on %s: %v", name, err)
		}
		text := protojson.Format(list)
		noneShown(t, "ListPolicies on "+name, text)
		urls := map[string]string{}
		for _, p := range list.GetPolicies() {
			urls[p.GetName()] = p.GetTokenUrl()
		}
		if urls["query"] != idp.TokenURL+"?REDACTED" || urls["down"] != "http://"+down+"/token?REDACTED" || urls["jwksdown"] != idp.TokenURL {
			t.Errorf("ListPolicies on %s: token URLs %v", name, urls)
		}
	}
	noneShown(t, "/metrics", scrape(t, proc.AdminAddress))

	// A reload that is refused, then SIGHUP: the refusal names the URLs redacted.
	write(refusedTop(host) + "policies:\n" + refusedPolicies(host, ecKeyPEM(t)))
	refusedSeries := `extauthz_config_reloads_total{result="refused"}`
	waitRefused := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for metric(t, proc.AdminAddress, refusedSeries) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no refused reload %v:\n%s", n, proc.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitRefused(1)
	if err := proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitRefused(2)
	if !proc.WaitLog(`policies.scheme.issuer: \"ftp://REDACTED@`, 10*time.Second) {
		t.Errorf("the refusal does not name the issuer redacted:\n%s", proc.Logs())
	}

	if err := proc.Stop(); err != nil {
		t.Errorf("exit: %v", err)
	}
	logs := proc.Logs()
	noneShown(t, "the logs", logs)
	for _, want := range []string{
		"configuration refused",
		`"redis_endpoints":["` + down + `"]`,
		`discovery \"http://REDACTED@` + down + `/realm?REDACTED\"`,
		`"jwks_url":"http://REDACTED@` + down + `/jwks?REDACTED#REDACTED"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %s:\n%s", want, logs)
		}
	}
}
