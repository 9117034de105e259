package authz

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/httpdeadline"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/config"
)

func TestHTTPMode(t *testing.T) {
	f := newFixture(t, "defaultPolicy: gateway\nserver: {http: {policyHeader: X-Extauthz-Policy}}\n")
	modes := httpModes(t, f.srv)

	tests := []struct {
		name       string
		path       string
		headers    map[string]string
		behavior   testidp.Behavior
		wantStatus int
		wantHeader map[string]string
		wantError  string
	}{
		{
			name: "policy from the path", path: "/policy/orders/anything?x=1",
			headers:    map[string]string{"Authorization": basic("orders-app", "s3cret"), "X-Group": "spoofed"},
			wantStatus: 200, wantHeader: map[string]string{"X-Group": "admin", "X-Areas": "office,home", "Cache-Control": "no-store"},
		},
		{
			name: "policy from the configured header", path: "/",
			headers:    map[string]string{"X-Extauthz-Policy": "orders", "Authorization": basic("orders-app", "s3cret")},
			wantStatus: 200, wantHeader: map[string]string{"X-Group": "admin"},
		},
		{
			name: "the path wins over the header", path: "/policy/gateway",
			headers:    map[string]string{"X-Extauthz-Policy": "orders"},
			wantStatus: 200, wantHeader: map[string]string{"X-Client": "gw-client"},
		},
		{
			name: "route from X-Forwarded-Host and X-Forwarded-Uri", path: "/auth",
			headers:    map[string]string{"X-Forwarded-Host": "api.example.com", "X-Forwarded-Uri": "/reports/1", "Authorization": basic("reports-app", "r3ports")},
			wantStatus: 200,
		},
		{
			name: "route from X-Original-URI", path: "/auth",
			headers:    map[string]string{"X-Forwarded-Host": "api.example.com", "X-Original-URI": "/reports/1"},
			wantStatus: 401, wantError: "invalid_request",
			wantHeader: map[string]string{"WWW-Authenticate": `Basic realm="reports"`},
		},
		{
			name: "default policy", path: "/anything",
			wantStatus: 200, wantHeader: map[string]string{"X-Client": "gw-client"},
		},
		{
			name: "unknown policy", path: "/policy/nope",
			wantStatus: 403, wantError: "no_policy",
		},
		{
			name: "wrong secret", path: "/policy/orders",
			headers:    map[string]string{"Authorization": basic("orders-app", "nope")},
			wantStatus: 401, wantError: "invalid_client",
			wantHeader: map[string]string{"WWW-Authenticate": `Basic realm="orders"`, "Content-Type": "application/json"},
		},
		{
			name: "endpoint rate limiting", path: "/policy/post",
			headers:    map[string]string{"Authorization": basic("orders-app", "s3cret")},
			behavior:   testidp.Behavior{FailStatus: 429, RetryAfter: "30"},
			wantStatus: 503, wantError: "temporarily_unavailable",
			wantHeader: map[string]string{"Retry-After": "30"},
		},
	}
	for _, m := range modes {
		for _, tt := range tests {
			t.Run(m.name+" "+tt.name, func(t *testing.T) {
				f.idp.SetBehavior(tt.behavior)
				req, err := http.NewRequest(http.MethodGet, m.url+tt.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range tt.headers {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status %d %s, want %d", resp.StatusCode, body, tt.wantStatus)
				}
				for k, v := range tt.wantHeader {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if tt.wantStatus == 200 {
					if !strings.HasPrefix(resp.Header.Get("Authorization"), "Bearer ey") || len(body) != 0 {
						t.Errorf("allow: Authorization %q, body %q", resp.Header.Get("Authorization"), body)
					}
					return
				}
				var e map[string]string
				if err := json.Unmarshal(body, &e); err != nil || e["error"] != tt.wantError || e["error_description"] == "" {
					t.Errorf("body %s, want error %q", body, tt.wantError)
				}
			})
		}
	}
}

// TestHTTPModeRemovesTheCallersCredentials: when the token travels in
// another header, the answer asks Envoy to remove the caller's
// Authorization, which holds its client secret.
func TestHTTPModeRemovesTheCallersCredentials(t *testing.T) {
	f := newFixture(t, "")
	for _, m := range httpModes(t, f.srv) {
		for _, tt := range []struct {
			policy, wantRemove string
		}{{"custom-header", "authorization"}, {"orders", ""}} {
			req, _ := http.NewRequest(http.MethodGet, m.url+"/policy/"+tt.policy, nil)
			req.Header.Set("Authorization", basic("orders-app", "s3cret"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Envoy-Auth-Headers-To-Remove") != tt.wantRemove {
				t.Errorf("%s %s: %d, X-Envoy-Auth-Headers-To-Remove %q, want %q", m.name, tt.policy, resp.StatusCode, resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), tt.wantRemove)
			}
		}
	}
}

// TestKeptAnswers: a client's next check serves what its last one got
// from memory without the token cache's lookup, but never once the token
// left the cache (a purge, here) nor after a reload changed the answer's
// shape, in application and gateway mode alike.
func TestKeptAnswers(t *testing.T) {
	for i := range 2 {
		f := newFixture(t, "")
		m := httpModes(t, f.srv)[i]
		t.Run(m.name, func(t *testing.T) { testKeptAnswers(t, f, m) })
	}
}

func testKeptAnswers(t *testing.T, f *fixture, m httpMode) {
	get := func(policy string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, m.url+"/policy/"+policy, nil)
		req.Header.Set("Authorization", basic("orders-app", "s3cret"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Authorization"), resp.Header.Get("X-Group")
	}
	for _, policy := range []string{"orders", "gateway"} {
		before := f.idp.Requests()
		_, first, _ := get(policy)
		for range 3 {
			if status, tok, _ := get(policy); status != 200 || tok != first {
				t.Fatalf("%s: a hit answered %d with another token", policy, status)
			}
		}
		if n := f.idp.Requests() - before; n != 1 {
			t.Errorf("%s: %d token requests for four checks, want 1", policy, n)
		}
		client := "orders-app"
		if policy == "gateway" {
			client = "gw-client"
		}
		if _, err := f.builder.Purge(t.Context(), policy, client); err != nil {
			t.Fatal(err)
		}
		if status, tok, _ := get(policy); status != 200 || tok == first {
			t.Errorf("%s: after the purge: %d, the purged token again: %v", policy, status, tok == first)
		}
		// gRPC checks keep the same way, and see the same purge.
		if r := read(t, f.check(checkRequest(policy, "", "/", map[string]string{"authorization": basic("orders-app", "s3cret")}))); r.status != 200 || r.headers["authorization"] == first {
			t.Errorf("%s: a gRPC check after the purge: %d, the purged token again: %v", policy, r.status, r.headers["authorization"] == first)
		}
	}

	// A reload that changes the claims expression changes the answer.
	if status, _, group := get("orders"); status != 200 || group != "admin" {
		t.Fatalf("before the reload: %d, X-Group %q", status, group)
	}
	yaml := strings.Replace(f.yaml, "claims: Equals(`grp`, `admin`)", "claims: Equals(`grp`, `viewer`)", 1)
	cfg, err := config.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.builder.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := get("orders"); status != 403 {
		t.Errorf("after a reload that refuses the client's claims: %d, want 403", status)
	}
}

// httpMode is one of the two servers extauthz serves HTTP mode with.
type httpMode struct{ name, url, addr string }

// httpModes serves s's HTTP mode through net/http (as extauthz does with
// TLS) and through the fasthttp server of a slow-client watch (plain
// HTTP/1, as cmd/extauthz serves it), each on its own loopback address:
// every HTTP-mode test runs against both.
func httpModes(t testing.TB, s *Server) []httpMode {
	t.Helper()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	watch := httpdeadline.New(httpdeadline.Limits{Header: 5 * time.Second, Body: 10 * time.Second, Request: 35 * time.Second, Idle: time.Minute}, nil)
	fs := watch.FastServer(s.ServeFastHTTP, 64<<10, nil)
	served := make(chan struct{})
	go func() { defer close(served); _ = fs.Serve(watch.Listen(ln)) }()
	t.Cleanup(func() {
		_ = fs.Shutdown()
		<-served
		watch.Close()
	})
	addr := ln.Addr().String()
	return []httpMode{
		{"net/http", hs.URL, hs.Listener.Addr().String()},
		{"fasthttp", "http://" + addr, addr},
	}
}

// TestHTTPModeFraming sends requests whose framing or fields a proxy in
// front could read otherwise than the server, each followed by a request
// for a token: no answer gives a token, whichever server serves HTTP mode,
// and the connection is closed after the refusal.
func TestHTTPModeFraming(t *testing.T) {
	f := newFixture(t, "")
	hidden := "GET /policy/gateway HTTP/1.1\r\nHost: x\r\n\r\n" // a token for anyone who asks
	creds := "Authorization: " + basic("orders-app", "s3cret") + "\r\n"
	for _, tt := range []struct {
		name string
		raw  string
		want int // net/http's; fasthttp refuses some itself with a 400
	}{
		{"Transfer-Encoding: identity", "GET /policy/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" + hidden, 501},
		{"Transfer-Encoding: gzip, chunked", "POST /policy/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + hidden, 501},
		{"a space in a field name", "GET /policy/orders HTTP/1.1\r\nHost: x\r\nContent Length: " + fmt.Sprint(len(hidden)) + "\r\n\r\n" + hidden, 400},
		{"HTTP/2.0 on the request line", "GET /policy/gateway HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"HTTP/3.0 on the request line", "GET /policy/gateway HTTP/3.0\r\nHost: x\r\n\r\n", 505},
		{"an expectation not served", "GET /policy/gateway HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417},
		{"two Authorization headers", "GET /policy/orders HTTP/1.1\r\nHost: x\r\n" + creds + "Authorization: " + basic("other-app", "x") + "\r\nConnection: close\r\n\r\n", 400},
		{"two X-Forwarded-Host", "GET /check HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: api.example.com\r\nX-Forwarded-Host: other.example.com\r\nConnection: close\r\n\r\n", 400},
	} {
		for _, m := range httpModes(t, f.srv) {
			t.Run(m.name+" "+tt.name, func(t *testing.T) {
				c, err := net.Dial("tcp", m.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, tt.raw); err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReader(c)
				for i := 0; ; i++ {
					resp, err := http.ReadResponse(r, nil)
					if err == nil && i == 0 && !resp.Close {
						t.Errorf("the refusal keeps the connection open")
					}
					if err != nil {
						if i == 0 {
							t.Fatalf("no answer: %v", err)
						}
						break // closed
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if i == 0 && resp.StatusCode != tt.want && !(m.name == "fasthttp" && resp.StatusCode == 400) {
						t.Errorf("answered %d, want %d", resp.StatusCode, tt.want)
					}
					if resp.StatusCode == 200 || resp.Header.Get("Authorization") != "" {
						t.Errorf("answer %d gave a token: %d %q", i+1, resp.StatusCode, resp.Header.Get("Authorization"))
					}
				}
			})
		}
	}
}

// TestRawHeaderProblem: the header block checks of plain HTTP/1, line by
// line as it came.
func TestRawHeaderProblem(t *testing.T) {
	for _, tt := range []struct {
		raw  string
		want int
	}{
		{"Host: x\r\nAuthorization: Basic eA==\r\n\r\n", 0},
		{"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
		{"Host: x\r\nTransfer-Encoding:  Chunked \r\n\r\n", 0},
		{"Host: x\r\nExpect: 100-Continue\r\n\r\n", 0},
		{"Host: x\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"Host: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"Host: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501},
		{"Host: x\r\nExpect: 200-ok\r\n\r\n", 417},
		{"Host: x\r\nContent Length: 5\r\n\r\n", 400},
		{"Host: x\r\nContent-Length : 5\r\n\r\n", 400},
		{"Host: x\r\nX-A\x00: 1\r\n\r\n", 400},
		{"Host: x\r\n: empty name\r\n\r\n", 400},
		{"Host: x\r\nno colon\r\n\r\n", 400},
		{"Host: x\r\nAuthorization: Basic\r\n eA==\r\n\r\n", 400},
		{"Host: x\r\nAuthorization: Basic\r\n\teA==\r\n\r\n", 400},
	} {
		if got, _ := rawHeaderProblem([]byte(tt.raw)); got != tt.want {
			t.Errorf("%q: %d, want %d", tt.raw, got, tt.want)
		}
	}
}
