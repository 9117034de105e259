package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
)

// Identities of the callers test.
const (
	gatewayID  = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
	envoyDNS   = "envoy.gateway.example"
	attackerID = "spiffe://cluster.local/ns/default/sa/attacker"
)

// callersConfig serves a gateway-mode policy on TLS check listeners that
// answer only the gateway (by URI SAN) and Envoy (by DNS SAN).
const callersConfig = `
server:
  grpcAddress: "127.0.0.1:0"
  httpAddress: "127.0.0.1:0"
  adminAddress: "127.0.0.1:0"
  tls:
    cert: urn:k8s:secret:extauthz-tls:tls.crt
    key: urn:k8s:secret:extauthz-tls:tls.key
    clientCA: urn:k8s:secret:extauthz-tls:ca.crt
    allowedCallers: [%s]
secrets: {dir: secrets}
policies:
  partner:
    url: %s
    clientID: urn:k8s:secret:partner-idp:clientID
    clientSecret: urn:k8s:secret:partner-idp:clientSecret
`

// pki is the test's certificates, also written out as files for grpcurl and curl.
type pki struct {
	ca, other *testpki.CA
	dir       string
}

// files writes a pair and returns its certificate and key files.
func (p *pki) files(t *testing.T, name string, pair testpki.Pair) (string, string) {
	t.Helper()
	cert, key := filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	for f, content := range map[string]string{cert: pair.CertPEM, key: pair.KeyPEM} {
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}

// caller is a client of the check listeners: its certificate files (none
// for a caller without one).
type caller struct{ name, cert, key string }

func (c caller) grpcurlArgs(caFile string) []string {
	args := []string{"-cacert", caFile}
	if c.cert != "" {
		args = append(args, "-cert", c.cert, "-key", c.key)
	}
	return args
}

func (c caller) curlArgs(caFile string) []string {
	args := []string{"--cacert", caFile}
	if c.cert != "" {
		args = append(args, "--cert", c.cert, "--key", c.key)
	}
	return args
}

// TestCallerAuthentication: with server.tls, the check listeners answer
// only proxies whose client certificate chains to clientCA and names an
// allowed identity (a URI SAN or a DNS SAN), over gRPC (grpcurl) and HTTP
// mode (curl). Plaintext, TLS without a certificate, a certificate from
// another CA that claims an allowed identity, and an identity not on the
// list are refused before any policy runs, each logged with the peer's
// address and counted. A reload that drops a caller refuses its next
// request on the connection it holds open; a rotated server certificate is
// served to new connections.
func TestCallerAuthentication(t *testing.T) {
	grpcurl := grpcurlPath(t)
	curl := curlPath(t)
	p := &pki{ca: testpki.NewCA(t), other: testpki.NewCA(t), dir: t.TempDir()}
	server := p.ca.Issue(t, "127.0.0.1")
	caFile := filepath.Join(p.dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte(p.ca.CertPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, ca *testpki.CA, sans ...string) (caller, testpki.Pair) {
		pair := ca.Issue(t, name, sans...)
		cert, key := p.files(t, name, pair)
		return caller{name: name, cert: cert, key: key}, pair
	}
	gateway, _ := mk("gateway", p.ca, gatewayID)
	envoy, envoyPair := mk("envoy", p.ca, envoyDNS)
	stranger, _ := mk("stranger", p.ca, attackerID, "evil.example")
	forger, _ := mk("forger", p.other, gatewayID, envoyDNS)
	anonymous := caller{name: "anonymous"}

	allowed := `"` + gatewayID + `", "dns:` + envoyDNS + `"`
	proc, dir, idp := startConfig(t, fmt.Sprintf(callersConfig, allowed, "%[1]s"), map[string]map[string]string{
		"extauthz-tls": {"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": p.ca.CertPEM},
		"partner-idp":  {"clientID": "partner-gw\n", "clientSecret": "partner-s3cret\n"},
	})
	idp.AddClient("partner-gw", testidp.Client{Secret: "partner-s3cret"})
	if strings.Contains(proc.Logs(), "give their token (gateway mode)") {
		t.Error("warned of unauthenticated callers although server.tls.clientCA is set")
	}

	ctx := context.Background()
	grpcCheck := func(c caller, extra ...string) (string, error) {
		args := append(append(c.grpcurlArgs(caFile), extra...), "-d", "@", proc.GRPCAddress, "envoy.service.auth.v3.Authorization/Check")
		out, err := harness.Grpcurl(ctx, grpcurl, harness.CheckJSON("partner", ""), args...)
		return string(out), err
	}
	httpCheck := func(c caller, scheme string) (string, error) {
		args := append(c.curlArgs(caFile), "-sS", "--max-time", "10", "-D", "-", "-o", "/dev/null", scheme+"://"+proc.HTTPAddress+"/policy/partner")
		out, err := exec.Command(curl, args...).CombinedOutput()
		return string(out), err
	}

	for _, c := range []caller{gateway, envoy} {
		if out, err := grpcCheck(c); err != nil || !strings.Contains(out, `"okResponse"`) || !strings.Contains(out, "Bearer ") {
			t.Errorf("gRPC, %s: %v\n%s", c.name, err, out)
		}
		if out, err := httpCheck(c, "https"); err != nil || !strings.HasPrefix(out, "HTTP/") || !strings.Contains(out, " 200") || !strings.Contains(out, "Bearer ") {
			t.Errorf("HTTP mode, %s: %v\n%s", c.name, err, out)
		}
	}
	if out, err := grpcCheck(anonymous, "-plaintext"); err == nil || strings.Contains(out, "Bearer") {
		t.Errorf("gRPC, plaintext: answered\n%s", out)
	}
	if out, err := httpCheck(anonymous, "http"); strings.Contains(out, "Bearer") || strings.Contains(out, " 200") {
		t.Errorf("HTTP mode, plaintext: answered (%v)\n%s", err, out)
	}
	for _, c := range []caller{anonymous, forger, stranger} {
		if out, err := grpcCheck(c); err == nil || strings.Contains(out, "Bearer") {
			t.Errorf("gRPC, %s: answered\n%s", c.name, out)
		}
		if out, err := httpCheck(c, "https"); err == nil || strings.Contains(out, "Bearer") {
			t.Errorf("HTTP mode, %s: answered\n%s", c.name, out)
		}
	}
	for _, want := range []string{`"result":"not_tls"`, `"result":"no_certificate"`, `"result":"untrusted_certificate"`, `"result":"not_allowed"`,
		`"identity":"` + attackerID + `,dns:evil.example"`, `"identity":"` + gatewayID + `,dns:` + envoyDNS + `"`} {
		if !proc.WaitLog(want, 5*time.Second) {
			t.Errorf("no refusal logged with %s", want)
		}
	}
	for _, l := range []string{"grpc", "http"} {
		for _, r := range []string{"accepted", "not_tls", "no_certificate", "untrusted_certificate", "not_allowed"} {
			if n := metric(t, proc.AdminAddress, fmt.Sprintf(`extauthz_caller_connections_total{listener=%q,result=%q}`, l, r)); n < 1 {
				t.Errorf("%s %s: counted %v times", l, r, n)
			}
		}
	}

	// One connection, one line and one count: the stranger's handshake alone.
	series := `extauthz_caller_connections_total{listener="grpc",result="not_allowed"}`
	before := metric(t, proc.AdminAddress, series)
	local := strangerHandshake(t, proc.GRPCAddress, p, stranger)
	waitUntil(t, "the stranger's refusal to be counted", func() bool { return metric(t, proc.AdminAddress, series) == before+1 })
	peer := `"peer":"` + local + `"`
	if !proc.WaitLog(peer, 5*time.Second) || strings.Count(proc.Logs(), peer) != 1 {
		t.Errorf("the stranger's connection from %s was logged %d times, want once", local, strings.Count(proc.Logs(), peer))
	}

	// Envoy keeps its connections open: on them, a reload that drops it
	// refuses its next request, while the gateway goes on.
	envoyGRPC := grpcClient(t, proc.GRPCAddress, p.ca, envoyPair)
	gatewayGRPC := grpcClient(t, proc.GRPCAddress, p.ca, p.ca.Issue(t, "gateway-2", gatewayID))
	envoyHTTP := httpsClient(p.ca, envoyPair)
	var conns atomic.Int32 // connections envoyHTTP opened
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns.Add(1)
		}
	}}
	httpGet := func() int {
		t.Helper()
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "https://"+proc.HTTPAddress+"/policy/partner", nil)
		resp, err := envoyHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := grpcCode(envoyGRPC); code != codes.OK {
		t.Fatalf("Envoy before the reload: %v", code)
	}
	if code := httpGet(); code != 200 {
		t.Fatalf("Envoy over HTTP before the reload: %d", code)
	}
	cfg := filepath.Join(dir, "config.yaml")
	replaceFile(t, cfg, fmt.Sprintf(callersConfig, `"`+gatewayID+`"`, idp.TokenURL))
	waitUntil(t, "the reload", func() bool {
		return metric(t, proc.AdminAddress, `extauthz_config_reloads_total{result="applied"}`) >= 1
	})
	if code := grpcCode(envoyGRPC); code != codes.PermissionDenied {
		t.Errorf("Envoy, dropped, on its open gRPC connection: %v, want PermissionDenied", code)
	}
	if code := httpGet(); code != http.StatusForbidden || conns.Load() != 1 {
		t.Errorf("Envoy, dropped, on its open HTTP connection: %d (%d connections), want 403 on the one it had", code, conns.Load())
	}
	if code := grpcCode(gatewayGRPC); code != codes.OK {
		t.Errorf("the gateway after the reload: %v", code)
	}
	if out, err := grpcCheck(envoy); err == nil {
		t.Errorf("Envoy, dropped, on a new connection: answered\n%s", out)
	}

	// The kubelet rotates the server's certificate: new connections get it.
	rotated := p.ca.Issue(t, "127.0.0.1")
	if err := harness.MountSecret(filepath.Join(dir, "secrets", "extauthz-tls"), 2, map[string]string{"tls.crt": rotated.CertPEM, "tls.key": rotated.KeyPEM, "ca.crt": p.ca.CertPEM}); err != nil {
		t.Fatal(err)
	}
	want := rotated.TLSCertificate(t).Certificate[0]
	waitUntil(t, "the rotated certificate", func() bool {
		conn, err := tls.Dial("tcp", proc.GRPCAddress, &tls.Config{RootCAs: p.ca.Pool(), NextProtos: []string{"h2"},
			Certificates: []tls.Certificate{p.ca.Issue(t, "gateway-3", gatewayID).TLSCertificate(t)}})
		if err != nil {
			return false
		}
		defer conn.Close()
		return bytes.Equal(conn.ConnectionState().PeerCertificates[0].Raw, want)
	})
	if logs := proc.Logs(); strings.Contains(logs, server.KeyPEM[30:60]) || strings.Contains(logs, "partner-s3cret") {
		t.Error("the logs show a key or a secret")
	}
}

// strangerHandshake opens one TLS connection to addr with the stranger's
// certificate, sees it refused, and returns its local address.
func strangerHandshake(t *testing.T, addr string, p *pki, stranger caller) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(stranger.cert, stranger.key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.ca.Pool(), Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}})
	if err != nil { // TLS 1.2: the handshake itself fails
		t.Fatalf("the handshake failed on the client's side before it sent its certificate: %v", err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("the stranger's connection: %v, want a certificate alert", err)
	}
	return local
}

// grpcClient connects to addr over TLS with pair as client certificate.
func grpcClient(t *testing.T, addr string, ca *testpki.CA, pair testpki.Pair) authv3.AuthorizationClient {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair.TLSCertificate(t)}})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// grpcCode is the status of a Check for the partner policy: OK when it was
// answered, whatever the answer.
func grpcCode(c authv3.AuthorizationClient) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{ContextExtensions: map[string]string{"policy": "partner"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/"}}}})
	return status.Code(err)
}

// httpsClient keeps one connection to HTTP mode, with pair as client certificate.
func httpsClient(ca *testpki.CA, pair testpki.Pair) *http.Client {
	cert, _ := tls.X509KeyPair([]byte(pair.CertPEM), []byte(pair.KeyPEM))
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1,
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}}}
}

// replaceFile swaps path's content at once, as an editor or the kubelet does.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond until it holds, failing the test after 15 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// curlPath finds curl; without it the test is skipped, or fails under CI.
func curlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("curl is missing (make deps installs it): %v", err)
		}
		t.Skipf("curl is missing: %v", err)
	}
	return p
}

// TestUnauthenticatedCallersAreWarnedOf: validate and serve both say that a
// gateway-mode or DPoP policy is served to whoever reaches the listeners,
// and the configuration still loads.
func TestUnauthenticatedCallersAreWarnedOf(t *testing.T) {
	const config = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
policies:
  partner: {url: %[1]s, clientID: partner-gw, clientSecret: partner-s3cret}
  bound: {url: %[1]s, dpop: {}}
  app: {url: %[1]s}
`
	const warning = "policies bound, partner give their token (gateway mode) or a DPoP proof for the method and URL a caller names to whoever reaches server.grpcAddress and server.httpAddress"
	proc, dir, _ := startConfig(t, config, nil)
	if !proc.WaitLog(warning, 5*time.Second) {
		t.Errorf("serve did not warn:\n%s", proc.Logs())
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binPath, "validate", "--config", filepath.Join(dir, "config.yaml"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "valid, 3 policies") {
		t.Fatalf("validate: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "warning: line 2: server.tls: "+warning) {
		t.Errorf("validate did not warn:\n%s", stderr.String())
	}
}
