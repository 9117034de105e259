package main

import (
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
    location /orders/ {
      auth_request /_extauthz;
      auth_request_set $token $upstream_http_authorization;
      auth_request_set $group $upstream_http_x_group;
      proxy_set_header Authorization $token;
      proxy_set_header X-Group $group;
      proxy_pass %[3]s;
    }
    location = /_extauthz {
      internal;
      proxy_pass http://%[4]s/policy/orders;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }
  }
}
`

// startNginx runs nginx in the foreground with conf (which gets the
// directory and a free port) and waits until it accepts connections.
func startNginx(t *testing.T, confArgs ...any) string {
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
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, append([]any{dir, port}, confArgs...)...)), 0o600); err != nil {
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
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("orders-app", testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin"}})
	idp.AddClient("viewer-app", testidp.Client{Secret: "v1ewer", Claims: map[string]any{"grp": "viewer"}})

	var mu sync.Mutex
	var seen []http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		fmt.Fprint(w, "order 1")
	}))
	t.Cleanup(upstream.Close)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
policies:
  orders:
    url: %s
    forwardHeaders: {X-Group: grp}
    claims: Equals(`+"`grp`, `admin`"+`)
`, idp.TokenURL)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	proc, err := harness.Start(binPath, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Kill)
	nginx := startNginx(t, upstream.URL, proc.HTTPAddress)

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
