package main

import (
	"bufio"
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

	"github.com/extauthz/extauthz/internal/testidp"
)

// nginxConf is nginx's configuration around a server block: %[1]s is the
// working directory, %[2]d the port, and the server block's own text
// follows the listen line.
const nginxConf = `
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s/client;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
%[3]s
  }
}
`

// readmeNginx returns the README's nginx block that contains marker, with
// its upstream and extauthz addresses replaced by the test's.
func readmeNginx(t *testing.T, marker, upstream, extauthz string) string {
	t.Helper()
	return strings.NewReplacer("http://orders", upstream, "http://127.0.0.1:8001", "http://"+extauthz).Replace(readmeBlock(t, "nginx", marker))
}

// startNginx runs nginx in the foreground with server (the text of a
// server block) and waits until it accepts connections.
func startNginx(t *testing.T, server string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("nginx is missing: scripts/deps.sh installs nginx-light")
			}
			t.Skip("nginx is missing: install nginx-light to run this test")
		}
	}
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, port, server)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir, "-c", conf)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Cleanup(func() {
					_ = cmd.Process.Kill()
					<-exited
				})
				return addr
			}
			select {
			case <-exited:
			case <-time.After(10 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
				_ = cmd.Process.Kill()
				<-exited
			}
			break
		}
		if attempt == 4 {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start:\n%s", log)
		}
	}
}

// TestNginxAuthRequest puts extauthz's HTTP mode behind real nginx
// auth_request: client → nginx → extauthz → upstream.
func TestNginxAuthRequest(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		fmt.Fprint(w, "order 1")
	}))
	t.Cleanup(upstream.Close)
	proc, _, idp := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
policies:
  orders:
    url: %[1]s
    forwardHeaders: {X-Group: grp}
    claims: Equals(`+"`grp`, `admin`"+`)
`, nil)
	idp.AddClient("viewer-app", testidp.Client{Secret: "v1ewer", Claims: map[string]any{"grp": "viewer"}})
	nginx := startNginx(t, readmeNginx(t, "/policy/orders", upstream.URL, proc.HTTPAddress))

	get := func(id, secret string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+nginx+"/orders/1", nil)
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

	resp, body := get("orders-app", "s3cret")
	if resp.StatusCode != 200 || body != "order 1" {
		t.Fatalf("allowed request: %d %q", resp.StatusCode, body)
	}
	mu.Lock()
	got := seen[0]
	mu.Unlock()
	if auth := got.Get("Authorization"); !strings.HasPrefix(auth, "Bearer ey") || strings.Count(auth, ".") != 2 {
		t.Errorf("upstream saw Authorization %q, want the Bearer JWT", auth)
	}
	if g := got.Values("X-Group"); len(g) != 1 || g[0] != "admin" {
		t.Errorf("upstream saw X-Group %q, want [admin]", g)
	}

	resp, _ = get("", "")
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="orders"` {
		t.Errorf("no credentials: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := get("orders-app", "wrong"); resp.StatusCode != 401 {
		t.Errorf("wrong secret: %d, want 401", resp.StatusCode)
	}
	if resp, _ := get("viewer-app", "v1ewer"); resp.StatusCode != 403 {
		t.Errorf("claims false: %d, want 403", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Errorf("the upstream saw %d requests, want only the allowed one", len(seen))
	}
}

// TestNginxRoutesResistSpoofing runs the README's nginx block for routes
// in front of the trust-boundaries configuration: the gateway's token under
// /public/, the caller's own under /admin/. Spoofed headers and hostile paths
// never get a request to /admin/ the gateway's token.
func TestNginxRoutesResistSpoofing(t *testing.T) {
	type seen struct{ path, group string }
	var mu sync.Mutex
	var upstreamSaw []seen
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstreamSaw = append(upstreamSaw, seen{r.URL.Path, r.Header.Get("X-Group")})
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(upstream.Close)
	proc, _, idp := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
routes:
  - {pathPrefix: "/public/", policy: partner}
  - {pathPrefix: "/admin/", policy: strict}
defaultPolicy: strict
policies:
  partner: {url: %[1]s, clientID: gw, clientSecret: gw-s3cret, forwardHeaders: {X-Group: grp}}
  strict:  {url: %[1]s, forwardHeaders: {X-Group: grp}, claims: 'Equals(`+"`grp`, `admin`"+`)'}
`, nil)
	idp.AddClient("gw", testidp.Client{Secret: "gw-s3cret", Claims: map[string]any{"grp": "partner"}})
	nginx := startNginx(t, readmeNginx(t, "X-Forwarded-Uri $request_uri", upstream.URL, proc.HTTPAddress))

	spoofed := map[string]string{
		"X-Extauthz-Policy": "partner", "X-Forwarded-Uri": "/public/x", "X-Original-URI": "/public/x",
		"X-Forwarded-Host": "partners.example.com",
	}
	tests := []struct {
		name       string
		path       string
		headers    map[string]string
		basic      bool
		wantStatus int
		wantGroup  string // X-Group upstream, for a 200
	}{
		{name: "the gateway's token under /public/", path: "/public/x", wantStatus: 200, wantGroup: "partner"},
		{name: "the caller's own under /admin/", path: "/admin/users", basic: true, wantStatus: 200, wantGroup: "admin"},
		{name: "no credentials under /admin/", path: "/admin/users", wantStatus: 401},
		{name: "spoofed headers", path: "/admin/users", headers: spoofed, wantStatus: 401},
		{name: "dot segments", path: "/public/../admin/users", wantStatus: 401},
		{name: "dot segments and spoofed headers", path: "/public/../admin/users", headers: spoofed, wantStatus: 401},
		{name: "encoded dot segments", path: "/public/%2e%2e/admin/users", wantStatus: 500},
		{name: "encoded slash", path: "/public/..%2fadmin/users", wantStatus: 500},
		{name: "path parameters", path: "/public/..;/admin/users", wantStatus: 500},
		{name: "double slash", path: "/public//../admin/users", wantStatus: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			upstreamSaw = nil
			mu.Unlock()
			headers := map[string]string{}
			for k, v := range tt.headers {
				headers[k] = v
			}
			if tt.basic {
				headers["Authorization"] = "Basic b3JkZXJzLWFwcDpzM2NyZXQ=" // orders-app:s3cret
			}
			status := rawGet(t, nginx, tt.path, headers)
			if status != tt.wantStatus {
				t.Errorf("status %d, want %d", status, tt.wantStatus)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case tt.wantStatus != 200 && len(upstreamSaw) != 0:
				t.Errorf("the upstream saw %v", upstreamSaw)
			case tt.wantStatus == 200 && (len(upstreamSaw) != 1 || upstreamSaw[0].group != tt.wantGroup):
				t.Errorf("the upstream saw %v, want one request with X-Group %s", upstreamSaw, tt.wantGroup)
			}
		})
	}
}

// rawGet sends GET target through addr exactly as written and returns the status.
func rawGet(t *testing.T, addr, target string, headers map[string]string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + target + " HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n"
	for k, v := range headers {
		req += k + ": " + v + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
