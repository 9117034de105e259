package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testpki"
)

// Names in the mutual TLS tests' certificates. extauthzName is the name the
// README's blocks check extauthz's certificate for (proxy_ssl_name,
// tls_server_name); strangerName is a caller from the same CA that
// allowedCallers does not name.
const (
	extauthzName = "extauthz.extauthz.svc"
	strangerName = "stranger.ingress.example"
)

// proxyTLSConfig is an application-mode policy on check listeners that
// answer only the caller named by allowedCallers (%[2]s, a DNS SAN).
const proxyTLSConfig = `
server:
  grpcAddress: "127.0.0.1:0"
  httpAddress: "127.0.0.1:0"
  adminAddress: "127.0.0.1:0"
  tls:
    cert: urn:k8s:secret:extauthz-tls:tls.crt
    key: urn:k8s:secret:extauthz-tls:tls.key
    clientCA: urn:k8s:secret:extauthz-tls:ca.crt
    allowedCallers: ["dns:%[2]s"]
secrets: {dir: secrets}
policies:
  orders:
    url: %[1]s
    forwardHeaders: {X-Group: grp}
`

// mutualTLS is extauthz serving proxyTLSConfig to one proxy, the CA of
// every certificate, and the client certificates of that proxy and of the
// stranger.
type mutualTLS struct {
	proc            *harness.Process
	ca              *testpki.CA
	proxy, stranger testpki.Pair
}

// startMutualTLS runs extauthz with a server certificate for extauthzName
// (and 127.0.0.1, the address the test dials) that lets in only the caller
// whose certificate has the DNS SAN proxyName.
func startMutualTLS(t *testing.T, proxyName string) *mutualTLS {
	t.Helper()
	ca := testpki.NewCA(t)
	server := ca.Issue(t, "127.0.0.1", extauthzName)
	proc, _, _ := startConfig(t, fmt.Sprintf(proxyTLSConfig, "%[1]s", proxyName), map[string]map[string]string{
		"extauthz-tls": {"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": ca.CertPEM},
	})
	return &mutualTLS{proc: proc, ca: ca, proxy: ca.Issue(t, proxyName, proxyName), stranger: ca.Issue(t, strangerName, strangerName)}
}

// files writes pair and the CA as a proxy mounts them (tls.crt, tls.key,
// ca.crt) and returns their folder with a trailing slash.
func (m *mutualTLS) files(t *testing.T, pair testpki.Pair) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"tls.crt": pair.CertPEM, "tls.key": pair.KeyPEM, "ca.crt": m.ca.CertPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir + "/"
}

// extauthzURL is what replaces the README's https://extauthz.extauthz.svc:8001.
func (m *mutualTLS) extauthzURL() string { return "https://" + m.proc.HTTPAddress }

// wantRefused checks that extauthz logged the stranger's connection to HTTP
// mode as refused because allowedCallers does not name it, and that every
// connection of the proxy's own was let in.
func (m *mutualTLS) wantRefused(t *testing.T) {
	t.Helper()
	if !m.proc.WaitLog(`"result":"not_allowed"`, 5*time.Second) {
		t.Fatalf("the stranger's connection was not logged as not_allowed:\n%s", m.proc.Logs())
	}
	var found bool
	for _, line := range strings.Split(m.proc.Logs(), "\n") {
		found = found || strings.Contains(line, "caller refused") && strings.Contains(line, `"listener":"http"`) &&
			strings.Contains(line, `"result":"not_allowed"`) && strings.Contains(line, `"identity":"dns:`+strangerName+`"`)
	}
	if !found {
		t.Errorf("no caller refused line for the stranger on HTTP mode:\n%s", m.proc.Logs())
	}
	if n := metric(t, m.proc.AdminAddress, `extauthz_caller_connections_total{listener="http",result="accepted"}`); n < 1 {
		t.Errorf("accepted connections counted %v times, want the proxy's", n)
	}
	if n := metric(t, m.proc.AdminAddress, `extauthz_caller_connections_total{listener="http",result="not_allowed"}`); n < 1 {
		t.Errorf("not_allowed connections counted %v times, want the stranger's", n)
	}
}

// recorder is an upstream that keeps the headers of every request that
// reaches it.
type recorder struct {
	url  string
	mu   sync.Mutex
	seen []http.Header
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.Header.Clone())
		r.mu.Unlock()
		fmt.Fprint(w, "order 1")
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// requests returns the headers of the requests that reached the upstream.
func (r *recorder) requests() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.seen...)
}

// getOrder sends GET /orders/1 to the proxy at addr with Basic credentials
// and a spoofed X-Group, and returns the status and body.
func getOrder(t *testing.T, addr, id, secret string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/orders/1", nil)
	req.SetBasicAuth(id, secret)
	req.Header.Set("X-Group", "spoofed")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// wantAllowedOnce sends orders-app's request through the proxy at addr with
// the right secret, then a wrong one: the first reaches the upstream with
// the token, the second is 401 and reaches nothing.
func wantAllowedOnce(t *testing.T, addr string, up *recorder) {
	t.Helper()
	if status, body := getOrder(t, addr, "orders-app", "s3cret"); status != 200 || body != "order 1" {
		t.Fatalf("allowed request: %d %q", status, body)
	}
	wantToken(t, up)
	if status, _ := getOrder(t, addr, "orders-app", "wrong"); status != 401 {
		t.Errorf("wrong secret: %d, want 401", status)
	}
	wantUpstreamSawOne(t, up)
}

// wantUpstreamSawOne: the allowed request alone reached the upstream.
func wantUpstreamSawOne(t *testing.T, up *recorder) {
	t.Helper()
	if n := len(up.requests()); n != 1 {
		t.Errorf("the upstream saw %d requests, want only the allowed one", n)
	}
}

// wantToken checks that the upstream's last request carried the Bearer JWT
// in place of the caller's credentials, and the claim in place of its
// X-Group.
func wantToken(t *testing.T, up *recorder) {
	t.Helper()
	seen := up.requests()
	if len(seen) == 0 {
		t.Fatal("the upstream saw nothing")
	}
	got := seen[len(seen)-1]
	if auth := got.Values("Authorization"); len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ey") || strings.Count(auth[0], ".") != 2 {
		t.Errorf("the upstream saw Authorization %q, want the Bearer JWT", auth)
	}
	if g := got.Values("X-Group"); len(g) != 1 || g[0] != "admin" {
		t.Errorf("the upstream saw X-Group %q, want [admin]", g)
	}
}

// TestNginxMutualTLS runs the README's nginx block for a TLS check listener
// as written: nginx presents its client certificate to extauthz and checks
// extauthz's, so a caller's Basic credentials become the token; nginx with a
// certificate that allowedCallers does not name gets no answer, and its
// callers get nothing through.
func TestNginxMutualTLS(t *testing.T) {
	const nginxName = "nginx.ingress.example" // as the README's allowedCallers names it
	m := startMutualTLS(t, nginxName)
	up := newRecorder(t)
	// The protected location is the README's first nginx block's; the auth
	// location the TLS block as written, with only addresses and files replaced.
	protected, _, _ := strings.Cut(readmeNginx(t, "/policy/orders", up.url, m.proc.HTTPAddress), "location = /_extauthz")
	server := func(pair testpki.Pair) string {
		auth := readmeNginx(t, "proxy_ssl_certificate ", up.url, m.proc.HTTPAddress)
		return protected + strings.NewReplacer("https://extauthz.extauthz.svc:8001", m.extauthzURL(), "/etc/nginx/extauthz/", m.files(t, pair)).Replace(auth)
	}
	nginx := startNginx(t, server(m.proxy))

	wantAllowedOnce(t, nginx, up)

	// nginx answers 500 when its auth subrequest fails.
	stranger := startNginx(t, server(m.stranger))
	if status, body := getOrder(t, stranger, "orders-app", "s3cret"); status != 500 {
		t.Errorf("through nginx with the stranger's certificate: %d %q, want 500", status, body)
	}
	wantUpstreamSawOne(t, up)
	m.wantRefused(t)
}

// TestCaddyMutualTLS runs the README's Caddyfile block for a TLS check
// listener as written: forward_auth presents Caddy's client certificate to
// extauthz and checks extauthz's; Caddy with a certificate that
// allowedCallers does not name gets no answer, and nothing reaches the
// upstream.
func TestCaddyMutualTLS(t *testing.T) {
	findCaddy(t)
	const caddyName = "caddy.ingress.example"
	m := startMutualTLS(t, caddyName)
	up := newRecorder(t)
	block := readmeBlock(t, "caddyfile", "tls_client_auth")
	site, _, _ := strings.Cut(block, " {")
	caddy := func(pair testpki.Pair) string {
		addr := freeAddress(t)
		startCaddy(t, caddyGlobal+strings.NewReplacer(
			site+" {", "http://"+addr+" {",
			"https://extauthz.extauthz.svc:8001", m.extauthzURL(),
			"/etc/caddy/extauthz/", m.files(t, pair),
			"orders:8080", strings.TrimPrefix(up.url, "http://"),
		).Replace(block), map[string]string{site: addr})
		return addr
	}
	addr := caddy(m.proxy)

	wantAllowedOnce(t, addr, up)

	stranger := caddy(m.stranger)
	if status, body := getOrder(t, stranger, "orders-app", "s3cret"); status < 300 {
		t.Errorf("through Caddy with the stranger's certificate: %d %q, want an error", status, body)
	}
	wantUpstreamSawOne(t, up)
	m.wantRefused(t)
}

// readmeBlocks returns the README's ```lang blocks, in order, as written.
func readmeBlocks(t *testing.T, lang string) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, block := range strings.Split(string(readme), "```"+lang+"\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		blocks = append(blocks, block)
	}
	return blocks
}

// readmeBlock returns the README's first ```lang block that contains marker.
func readmeBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	for _, block := range readmeBlocks(t, lang) {
		if strings.Contains(block, marker) {
			return block
		}
	}
	t.Fatalf("the README has no %s block with %q", lang, marker)
	return ""
}
