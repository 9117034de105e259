package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// startConfig runs the binary with yaml (%[1]s is the test IdP's token URL)
// and the secrets given as name → key → value, mounted as the kubelet
// mounts Secrets under secrets/.
func startConfig(t *testing.T, yaml string, secrets map[string]map[string]string) (*harness.Process, string, *testidp.Server) {
	t.Helper()
	mounts := map[string]map[string]string{}
	for name, data := range secrets {
		mounts[filepath.Join("secrets", name)] = data
	}
	return startWith(t, testidp.Options{}, yaml, mounts)
}

// startWith is startConfig with the test IdP's options, and volumes given
// as a directory under the configuration's → key → value.
func startWith(t *testing.T, o testidp.Options, yaml string, mounts map[string]map[string]string) (*harness.Process, string, *testidp.Server) {
	t.Helper()
	idp, err := testidp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("orders-app", testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin"}})
	proc, dir := startAt(t, idp, yaml, mounts)
	return proc, dir, idp
}

// startAt runs the binary with yaml (%[1]s is idp's token URL), with the
// volumes given as a directory under the configuration's → key → value,
// until the test ends; it returns the process and the configuration's
// directory.
func startAt(t *testing.T, idp *testidp.Server, yaml string, mounts map[string]map[string]string) (*harness.Process, string) {
	t.Helper()
	dir := t.TempDir()
	for sub, data := range mounts {
		if err := harness.MountSecret(filepath.Join(dir, sub), 1, data); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(yaml, idp.TokenURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	proc, err := harness.Start(binPath, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Kill)
	return proc, dir
}

const adminTokenConfig = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0", admin: {token: "urn:k8s:secret:extauthz-admin:token"}}
secrets: {dir: secrets}
policies:
  orders: {url: %[1]s}
`

// TestAdminAPIToken: with server.admin.token, the admin API answers only
// callers with that bearer token, on loopback too, and a rotated token
// replaces the old one without a restart; /metrics and /healthz stay open.
func TestAdminAPIToken(t *testing.T) {
	grpcurl := grpcurlPath(t)
	const first, second = "first-admin-token-0123456789", "second-admin-token-9876543210"
	proc, dir, _ := startConfig(t, adminTokenConfig, map[string]map[string]string{"extauthz-admin": {"token": first + "\n"}})
	ctx := context.Background()
	list := func(args ...string) error {
		args = append(append([]string{"-plaintext"}, args...), proc.AdminAddress, "extauthz.admin.v1.Admin/ListPolicies")
		_, err := harness.Grpcurl(ctx, grpcurl, nil, args...)
		return err
	}
	if err := list(); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Errorf("without credentials: %v, want Unauthenticated", err)
	}
	if err := list("-H", "authorization: Bearer wrong-admin-token-000000"); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Errorf("with a wrong token: %v, want Unauthenticated", err)
	}
	if err := list("-H", "authorization: Basic "+first); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Errorf("with the token as Basic: %v, want Unauthenticated", err)
	}
	if err := list("-H", "authorization: Bearer "+first); err != nil {
		t.Errorf("with the token: %v", err)
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		resp, err := http.Get("http://" + proc.AdminAddress + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s without credentials: %v %v", path, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	// Profiles are the admin API's: the token opens them.
	for _, tt := range []struct {
		bearer string
		want   int
	}{{"", 401}, {"wrong-admin-token-000000", 401}, {first, 200}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+proc.AdminAddress+"/debug/pprof/", nil)
		if tt.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tt.bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("/debug/pprof/ with bearer %q: %d, want %d", tt.bearer, resp.StatusCode, tt.want)
		}
	}

	// The kubelet rotates the Secret: the new token is in service, the old one is not.
	if err := harness.MountSecret(filepath.Join(dir, "secrets", "extauthz-admin"), 2, map[string]string{"token": second + "\n"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for list("-H", "authorization: Bearer "+second) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the rotated token was not taken up:\n%s", proc.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := list("-H", "authorization: Bearer "+first); err == nil {
		t.Error("the old token still works after the rotation")
	}
	if !proc.WaitLog("admin call refused", 5*time.Second) {
		t.Error("refused admin calls were not logged")
	}
	logs := proc.Logs()
	if strings.Contains(logs, first) || strings.Contains(logs, second) {
		t.Error("the logs show an admin token")
	}
}

// TestAdminAPINotServedOverTCP: without a token or a client CA, the admin
// API and profiles are not served over TCP to anyone — not on loopback, not
// to a mesh caller that Istio's sidecar forwards from 127.0.0.6, not from
// elsewhere — and the start says how to turn them on; /metrics, /healthz
// and /readyz stay open to Prometheus and the kubelet.
func TestAdminAPINotServedOverTCP(t *testing.T) {
	grpcurl := grpcurlPath(t)
	proc, _, _ := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: ":0"}
policies:
  orders: {url: %[1]s}
`, nil)
	if !strings.Contains(proc.Logs(), "the admin API and /debug/pprof/ are not served over TCP: set server.admin.token or server.admin.tls.clientCA") {
		t.Errorf("the start did not say how to serve the admin API:\n%s", proc.Logs())
	}
	_, port, err := net.SplitHostPort(proc.AdminAddress)
	if err != nil {
		t.Fatal(err)
	}
	// from dials the admin address from a local address.
	from := func(local, host string) error {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		conn, err := grpc.NewClient(net.JoinHostPort(host, port), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = adminv1.NewAdminClient(conn).PurgeTokens(ctx, &adminv1.PurgeTokensRequest{Policy: "orders"})
		return err
	}
	callers := map[string][2]string{"loopback": {"127.0.0.1", "127.0.0.1"}, "Istio's sidecar": {"127.0.0.6", "127.0.0.1"}}
	if host := nonLoopbackAddress(t); host != "" {
		callers["another host"] = [2]string{host, host}
	}
	for name, c := range callers {
		if err := from(c[0], c[1]); status.Code(err) != codes.Unimplemented {
			t.Errorf("PurgeTokens from %s: %v, want Unimplemented", name, err)
		}
	}
	if _, err := harness.Grpcurl(context.Background(), grpcurl, nil, "-plaintext", proc.AdminAddress, "list"); err == nil {
		t.Error("reflection lists the admin API over TCP")
	}
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/readyz": 200, "/debug/pprof/": 404, "/debug/pprof/cmdline": 404} {
		resp, err := http.Get("http://" + net.JoinHostPort("127.0.0.1", port) + path)
		if err != nil || resp.StatusCode != want {
			t.Errorf("%s: %v %v, want %d", path, resp, err, want)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}

// nonLoopbackAddress returns an address of this host that is not loopback,
// or "" when it has none.
func nonLoopbackAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

// TestAdminAPIClientCertificate: with the admin address on TLS and a
// client CA, a client certificate from that CA opens the admin API,
// others do not, and Prometheus scrapes /metrics without one.
func TestAdminAPIClientCertificate(t *testing.T) {
	grpcurl := grpcurlPath(t)
	ca, otherCA := testpki.NewCA(t), testpki.NewCA(t)
	server, client, stranger := ca.Issue(t, "127.0.0.1"), ca.Issue(t, "operator"), otherCA.Issue(t, "operator")
	proc, dir, _ := startConfig(t, `
server:
  grpcAddress: "127.0.0.1:0"
  httpAddress: ""
  adminAddress: "127.0.0.1:0"
  admin:
    tls: {cert: "urn:k8s:secret:admin-tls:tls.crt", key: "urn:k8s:secret:admin-tls:tls.key", clientCA: "urn:k8s:secret:admin-tls:ca.crt"}
secrets: {dir: secrets}
policies:
  orders: {url: %[1]s}
`, map[string]map[string]string{"admin-tls": {"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": ca.CertPEM}})
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.CertPEM)
	ctx := context.Background()
	list := func(args ...string) error {
		args = append(append([]string{"-cacert", caFile}, args...), proc.AdminAddress, "extauthz.admin.v1.Admin/ListPolicies")
		_, err := harness.Grpcurl(ctx, grpcurl, nil, args...)
		return err
	}
	if err := list("-cert", write("client.pem", client.CertPEM), "-key", write("client.key", client.KeyPEM)); err != nil {
		t.Errorf("with a client certificate from the CA: %v", err)
	}
	if err := list(); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Errorf("without a client certificate: %v, want Unauthenticated", err)
	}
	if err := list("-cert", write("stranger.pem", stranger.CertPEM), "-key", write("stranger.key", stranger.KeyPEM)); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
	if _, err := harness.Grpcurl(ctx, grpcurl, nil, "-plaintext", proc.AdminAddress, "list"); err == nil {
		t.Error("the admin address answered plaintext gRPC")
	}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	for _, path := range []string{"/metrics", "/healthz"} {
		resp, err := https.Get("https://" + proc.AdminAddress + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s over TLS without a client certificate: %v %v", path, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}

// TestServerLimits: the gRPC server bounds CheckRequests, concurrent
// streams and ping floods; HTTP mode bounds headers.
func TestServerLimits(t *testing.T) {
	proc, _, _ := startConfig(t, `
server:
  grpcAddress: "127.0.0.1:0"
  httpAddress: "127.0.0.1:0"
  adminAddress: "127.0.0.1:0"
  grpc: {maxRequestBytes: 16384, maxConcurrentStreams: 100}
  http: {maxHeaderBytes: 8192}
log: {level: debug}
policies:
  orders: {url: %[1]s}
`, nil)
	conn, err := grpc.NewClient(proc.GRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(headerBytes int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: map[string]string{"policy": "orders"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Host: "h", Path: "/", Headers: map[string]string{"x-big": strings.Repeat("a", headerBytes)},
			}},
		}})
		return err
	}
	if err := check(1000); err != nil {
		t.Errorf("a small CheckRequest: %v", err)
	}
	if err := check(32 << 10); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a CheckRequest over maxRequestBytes: %v, want ResourceExhausted", err)
	}

	req, _ := http.NewRequest(http.MethodGet, "http://"+proc.HTTPAddress+"/policy/orders", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("HTTP mode, headers over maxHeaderBytes: %d, want 431", resp.StatusCode)
	}
	req.Header.Set("X-Big", strings.Repeat("a", 6<<10)) // under the bound: a check
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("HTTP mode, headers under maxHeaderBytes: %d, want 401 (no credentials)", resp.StatusCode)
	}
	// Malformed requests carrying a secret are refused; the secret reaches
	// no log line, even at debug, and the refused connections are logged
	// at debug only: a caller cannot flood the log.
	const leaked = "Basic bGVha2VkOmxlYWtlZC1zM2NyZXQ="
	for _, raw := range []string{
		"GET /policy/orders HTTP/1.1\r\nHost: x\r\nAuthorization: " + leaked + "\r\nX-Bad\x00: 1\r\n\r\n",
		"GET /policy/orders HTTP/1.1\r\nHost: x\r\nAuthorization: " + leaked + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"GET /policy/orders HTTP/1.1\r\nHost: x\r\nAuthorization: " + leaked + "\r\nTransfer-Encoding: xchunked\r\n\r\n",
		"GET /policy/orders HTTP/1.1\r\n Authorization: " + leaked + "\r\n\r\n",
		"GET /policy/orders HTTP/1.1\r\nHost: x\r\nAuthorization: " + leaked + "\x00\r\n\r\n",
	} {
		c, err := net.Dial("tcp", proc.HTTPAddress)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("HTTP mode, %q: %v %v, want 400", raw, resp, err)
		}
	}
	if !proc.WaitLog("HTTP mode: a connection ended in error", 5*time.Second) {
		t.Errorf("no refused connection logged at debug:\n%s", proc.Logs())
	}
	for _, line := range strings.Split(proc.Logs(), "\n") {
		if strings.Contains(line, "bGVha2Vk") || strings.Contains(line, "connection") && strings.Contains(line, "error") && !strings.Contains(line, `"level":"debug"`) {
			t.Errorf("a malformed request's log line: %s", line)
		}
	}

	// Over HTTP/2 itself: the server's settings, and a ping flood.
	fr := h2c(t, proc.GRPCAddress)
	streams, goAway := uint32(0), http2.ErrCode(0)
	for i := 0; goAway == 0; i++ {
		if i < 10 { // pings far closer than keepalive enforcement allows
			if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
				break
			}
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				streams = v
			}
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			goAway = f.ErrCode
			if !bytes.Contains(f.DebugData(), []byte("too_many_pings")) {
				t.Errorf("GOAWAY %v %q, want too_many_pings", f.ErrCode, f.DebugData())
			}
		}
	}
	if streams != 100 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 100", streams)
	}
	if goAway != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("a ping flood ended with %v, want ENHANCE_YOUR_CALM", goAway)
	}
}

// TestSlowHeadersAreCut: a client that never finishes its headers holds an
// HTTP-mode connection for the read-header timeout (5 s), not forever.
func TestSlowHeadersAreCut(t *testing.T) {
	t.Parallel()
	proc, _, _ := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
policies:
  orders: {url: %[1]s}
`, nil)
	start := time.Now()
	var conns []net.Conn
	for _, addr := range []string{proc.HTTPAddress, proc.AdminAddress} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /policy/orders HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(start.Add(15 * time.Second))
		conns = append(conns, c)
	}
	for _, c := range conns {
		_, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the connection was still open after 15 s", c.RemoteAddr())
		} else if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: closed after %v, want about 5 s", c.RemoteAddr(), d)
		}
	}
}

// TestShutdownDeadline: checks stuck on an IdP that never answers hold
// neither listener past server.shutdownTimeout: the process exits within
// that one deadline.
func TestShutdownDeadline(t *testing.T) {
	proc, _, idp := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0", shutdownTimeout: 2s}
policies:
  orders: {url: %[1]s}
`, nil)
	idp.SetBehavior(testidp.Behavior{Latency: time.Hour})
	conn, err := grpc.NewClient(proc.GRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { // a gRPC check and an HTTP-mode check, both waiting on the IdP
		_, _ = authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: map[string]string{"policy": "orders"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Host: "h", Path: "/", Headers: map[string]string{"authorization": "Basic b3JkZXJzLWFwcDpzM2NyZXQ="},
			}},
		}})
	}()
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+proc.HTTPAddress+"/policy/orders", nil)
		req.SetBasicAuth("orders-app", "other")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for idp.Requests() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the checks never reached the IdP")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := proc.Stop(); err != nil {
		t.Errorf("exit: %v", err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond || d > 6*time.Second {
		t.Errorf("exited %v after SIGTERM, want about the 2 s shutdownTimeout", d)
	}
}

// TestConnectionsAgeOut: a gRPC connection older than
// server.grpc.maxConnectionAge is told to go (GOAWAY), so that clients
// reconnect and spread over new replicas.
func TestConnectionsAgeOut(t *testing.T) {
	proc, _, _ := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0", grpc: {maxConnectionAge: 1s, maxConnectionAgeGrace: 1s}}
policies:
  orders: {url: %[1]s}
`, nil)
	fr := h2c(t, proc.GRPCAddress)
	start := time.Now()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				t.Errorf("GOAWAY %v, want NO_ERROR", f.ErrCode)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("GOAWAY after %v, want about 1 s", d)
			}
			return
		}
	}
}

// h2c opens a raw HTTP/2 connection (prior knowledge) to addr and sends
// the client preface and settings; the connection closes with the test.
func h2c(t *testing.T, addr string) *http2.Framer {
	t.Helper()
	return h2cWithin(t, addr, 10*time.Second)
}

// h2cWithin is h2c with every read and write of the connection due within d.
func h2cWithin(t *testing.T, addr string, d time.Duration) *http2.Framer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return fr
}
