package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

// caddyGlobal keeps Caddy to the test: no admin endpoint, no certificates,
// nothing saved.
const caddyGlobal = "{\n    admin off\n    auto_https off\n    persist_config off\n}\n"

// findCaddy returns the caddy make tools installs: $CADDY or bin/tools/caddy.
func findCaddy(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CADDY"); p != "" {
		return p
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "bin", "tools", "caddy")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("caddy is missing (make tools installs it): %v", err)
		}
		t.Skip("caddy is missing; make tools installs it")
	}
	return p
}

// readmeCaddy returns the README's Caddyfile blocks but those that present
// a client certificate (tls_client_auth), each site address
// replaced by a loopback one of its own, extauthz's address by the test's
// and each upstream by the one given for it.
func readmeCaddy(t *testing.T, extauthz string, upstreams map[string]string) (string, map[string]string) {
	t.Helper()
	sites := map[string]string{}
	var out strings.Builder
	out.WriteString(caddyGlobal)
	for _, block := range readmeBlocks(t, "caddyfile") {
		if strings.Contains(block, "tls_client_auth") {
			continue // needs certificate files: TestCaddyMutualTLS runs it
		}
		site, _, _ := strings.Cut(block, " {")
		addr := freeAddress(t)
		sites[site] = addr
		r := []string{site + " {", "http://" + addr + " {", "127.0.0.1:8001", extauthz}
		for from, to := range upstreams {
			r = append(r, from, to)
		}
		out.WriteString(strings.NewReplacer(r...).Replace(block))
	}
	if len(sites) == 0 {
		t.Fatal("the README has no caddyfile block")
	}
	return out.String(), sites
}

// claimsSegment is how a JWT's payload for the client id begins.
func claimsSegment(t *testing.T, clientID string) string {
	t.Helper()
	seg := base64.RawURLEncoding.EncodeToString([]byte(`{"client_id":"` + clientID + `"`))
	return seg[:len(seg)-2] // the last characters depend on what follows
}

func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startCaddy runs caddy with caddyfile until the test ends and waits until
// every address accepts connections.
func startCaddy(t *testing.T, caddyfile string, addrs map[string]string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command(findCaddy(t), "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, &log}, lockedWriter{&mu, &log}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range addrs {
		for {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("caddy exited:\n%s\n%s", log.String(), caddyfile)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("caddy does not listen on %s:\n%s", addr, log.String())
			}
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCaddyForwardAuth runs the README's Caddyfile blocks in front of
// extauthz's HTTP mode: client → Caddy forward_auth → extauthz → upstream,
// in application and gateway mode, with callers that bring headers of
// their own.
func TestCaddyForwardAuth(t *testing.T) {
	type seen struct {
		site   string
		header http.Header
	}
	var mu sync.Mutex
	var requests []seen
	upstream := func(site string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			requests = append(requests, seen{site, r.Header.Clone()})
			mu.Unlock()
			fmt.Fprint(w, site+" 1")
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	proc, _, idp := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
secrets: {dir: secrets}
policies:
  orders:
    url: %[1]s
    forwardHeaders: {X-Group: grp}
    claims: Equals(`+"`grp`, `admin`"+`)
  partner-api:
    url: %[1]s
    clientID: urn:k8s:secret:partner-idp:clientID
    clientSecret: urn:k8s:secret:partner-idp:clientSecret
`, map[string]map[string]string{"partner-idp": {"clientID": "partner-gw\n", "clientSecret": "p4rtner\n"}})
	idp.AddClient("viewer-app", testidp.Client{Secret: "v1ewer", Claims: map[string]any{"grp": "viewer"}})
	idp.AddClient("partner-gw", testidp.Client{Secret: "p4rtner"})
	caddyfile, sites := readmeCaddy(t, proc.HTTPAddress, map[string]string{"orders:8080": upstream("orders"), "partners:8080": upstream("partners")})
	startCaddy(t, caddyfile, sites)

	send := func(site, id, secret string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+sites[site]+"/items/1", nil)
		if id != "" {
			req.SetBasicAuth(id, secret)
		}
		req.Header.Set("X-Group", "spoofed")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	last := func() seen {
		mu.Lock()
		defer mu.Unlock()
		if len(requests) == 0 {
			t.Fatal("the upstream saw nothing")
		}
		return requests[len(requests)-1]
	}
	bearer := func(h http.Header) bool {
		auth := h.Values("Authorization")
		return len(auth) == 1 && strings.HasPrefix(auth[0], "Bearer ey") && strings.Count(auth[0], ".") == 2
	}

	// Application mode: the caller's Basic credentials become the token.
	resp, body := send("api.example.com", "orders-app", "s3cret")
	if resp.StatusCode != 200 || body != "orders 1" {
		t.Fatalf("allowed: %d %q", resp.StatusCode, body)
	}
	if got := last(); !bearer(got.header) || strings.Join(got.header.Values("X-Group"), ",") != "admin" {
		t.Errorf("the upstream saw Authorization %q and X-Group %q; want the Bearer JWT and admin", got.header.Values("Authorization"), got.header.Values("X-Group"))
	}

	// Denials reach the caller as extauthz wrote them, and nothing else
	// reaches the upstream.
	before := len(requests)
	for _, tt := range []struct {
		name, id, secret string
		status           int
		code             string
	}{
		{"no credentials", "", "", 401, "invalid_request"},
		{"a wrong secret", "orders-app", "wrong", 401, "invalid_client"},
		{"claims false", "viewer-app", "v1ewer", 403, "insufficient_claims"},
	} {
		resp, body := send("api.example.com", tt.id, tt.secret)
		var denial struct {
			Error string `json:"error"`
		}
		if resp.StatusCode != tt.status || json.Unmarshal([]byte(body), &denial) != nil || denial.Error != tt.code {
			t.Errorf("%s: %d %q, want %d with error %s", tt.name, resp.StatusCode, body, tt.status, tt.code)
		}
		if tt.status == 401 && resp.Header.Get("WWW-Authenticate") != `Basic realm="orders"` {
			t.Errorf("%s: WWW-Authenticate %q", tt.name, resp.Header.Get("WWW-Authenticate"))
		}
	}
	mu.Lock()
	if len(requests) != before {
		t.Errorf("denied requests reached the upstream: %d", len(requests)-before)
	}
	mu.Unlock()

	// Gateway mode: no credentials asked, and the gateway's token in place
	// of whatever Authorization the caller brings.
	for _, caller := range [][2]string{{"", ""}, {"intruder", "forged"}} {
		resp, body = send("partners.example.com", caller[0], caller[1])
		if resp.StatusCode != 200 || body != "partners 1" {
			t.Fatalf("gateway mode, caller %q: %d %q", caller[0], resp.StatusCode, body)
		}
		if got := last(); got.site != "partners" || !bearer(got.header) || !strings.Contains(got.header.Get("Authorization"), claimsSegment(t, "partner-gw")) {
			t.Errorf("gateway mode, caller %q: the upstream saw Authorization %q; want the gateway's Bearer JWT", caller[0], got.header.Values("Authorization"))
		}
	}
	// orders-app, the wrong secret (rejected), viewer-app and the gateway.
	if n := idp.Requests(); n != 4 {
		t.Errorf("the IdP saw %d token requests, want 4", n)
	}
}
