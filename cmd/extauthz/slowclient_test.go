package main

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/httpdeadline"
	"github.com/extauthz/extauthz/internal/testidp"
)

const slowClientYAML = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
policies:
  orders:
    url: %[1]s
`

// TestHTTPSlowClients: on plain HTTP, served by fasthttp, the built binary
// gives up on a client that trickles its headers after 5 s and on a body
// that stops after 10 s, as net/http's ReadHeaderTimeout and ReadTimeout
// did before one sweeper replaced them, while a kept-alive connection that
// sends its requests goes on being answered.
func TestHTTPSlowClients(t *testing.T) {
	proc, _, _ := startWith(t, testidp.Options{}, slowClientYAML, nil)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:s3cret"))
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", proc.HTTPAddress)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // the test's own bound
		return c
	}
	within := func(t *testing.T, what string, d, limit time.Duration) {
		t.Helper()
		if d < limit-httpdeadline.Tick || d > limit+2*time.Second {
			t.Errorf("%s: after %v, want %v", what, d.Round(time.Millisecond), limit)
		}
	}
	check := func(t *testing.T, c net.Conn, r *bufio.Reader) {
		t.Helper()
		if _, err := io.WriteString(c, "GET /policy/orders HTTP/1.1\r\nHost: x\r\nAuthorization: "+basic+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("a check: %d, close %v", resp.StatusCode, resp.Close)
		}
	}

	t.Run("headers that never end", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		r := bufio.NewReader(c)
		check(t, c, r) // a kept-alive connection, then a request that stops
		if _, err := io.WriteString(c, "GET /policy/orders HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		n, err := r.Read(make([]byte, 1))
		var ne net.Error
		if n > 0 || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server answered or kept the connection: %d, %v", n, err)
		}
		within(t, "closed", time.Since(start), httpLimits.Header)
	})
	t.Run("a body that stops", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		if _, err := io.WriteString(c, "POST /policy/orders HTTP/1.1\r\nHost: x\r\nAuthorization: "+basic+"\r\nContent-Length: 100\r\n\r\nhalf"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		// fasthttp reads a small body before the check and answers 408
		// when it stops; net/http answered the check, then gave up on the
		// body. Either way the answer comes when the body's time is up.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		within(t, "answered", time.Since(start), httpLimits.Body)
		if !resp.Close {
			t.Error("the answer keeps the connection open")
		}
		if n, err := r.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("after the answer: %d bytes, %v; want the connection closed", n, err)
		}
	})
	t.Run("a kept-alive connection in use", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		r := bufio.NewReader(c)
		end := time.Now().Add(httpLimits.Header + time.Second)
		for time.Now().Before(end) {
			check(t, c, r)
			time.Sleep(100 * time.Millisecond) // a client's pace
		}
	})
}
