package httpdeadline

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// limits are short, so that each phase's bound shows in well under a
// second; they differ, so that a test tells which one closed a connection.
var limits = Limits{Header: 400 * time.Millisecond, Body: 700 * time.Millisecond, Request: time.Second, Idle: 1300 * time.Millisecond}

// serve starts an http.Server on a Watch of limits with h, and returns
// its address.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	addr, _ := serveWatch(t, h)
	return addr
}

func serveWatch(t *testing.T, h http.Handler) (string, *Watch) {
	t.Helper()
	w := New(limits)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: w.Handler(h), ConnState: w.ConnState}
	go func() { _ = srv.Serve(w.Listen(lis)) }()
	t.Cleanup(func() {
		srv.Close()
		w.Close()
	})
	return lis.Addr().String(), w
}

var ok = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	rw.Header().Set("X-Ok", "1")
})

// closedAfter waits for the server to close c, and returns how long after
// start it did; it fails the test if the server answered anything.
func closedAfter(t *testing.T, c net.Conn, start time.Time) time.Duration {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the test's own bound
	b := make([]byte, 1)
	n, err := c.Read(b)
	if n > 0 {
		t.Fatalf("the server answered %q instead of closing", b[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection open for 10 s")
	}
	return time.Since(start)
}

// within fails unless d is the limit, give or take a Tick and some
// scheduling.
func within(t *testing.T, what string, d, limit time.Duration) {
	t.Helper()
	if d < limit-Tick || d > limit+2*Tick+300*time.Millisecond {
		t.Errorf("%s: closed after %v, want %v give or take %v", what, d.Round(time.Millisecond), limit, Tick)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a GET on c and reads its answer.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Ok") != "1" {
		t.Fatalf("answer %d", resp.StatusCode)
	}
}

func TestSlowHeaders(t *testing.T) {
	addr := serve(t, ok)
	t.Run("a connection that sends nothing", func(t *testing.T) {
		start := time.Now()
		within(t, "no request", closedAfter(t, dial(t, addr), start), limits.Header)
	})
	t.Run("headers sent a byte at a time", func(t *testing.T) {
		c := dial(t, addr)
		start := time.Now()
		go func() {
			for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond) // the attack: a trickle that never ends the headers
			}
		}()
		within(t, "a trickle of headers", closedAfter(t, c, start), limits.Header)
	})
	t.Run("the next request's headers on a kept-alive connection", func(t *testing.T) {
		c := dial(t, addr)
		r := bufio.NewReader(c)
		roundTrip(t, c, r)
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil { // no blank line
			t.Fatal(err)
		}
		start := time.Now()
		within(t, "the second request's headers", closedAfter(t, c, start), limits.Header)
	})
}

// TestSlowBody: a body that stops coming is given up after the Body
// limit, whether the handler reads it or leaves it to net/http (as
// extauthz does: net/http then reads what is left before answering); the
// answer says the connection closes, and it does.
func TestSlowBody(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    http.Handler
	}{
		{"read by the handler", ok},
		{"left to net/http", http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.Header().Set("X-Ok", "1") })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := serve(t, tt.h)
			c := dial(t, addr)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := bufio.NewReader(c)
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			within(t, "the answer to a body that stops", time.Since(start), limits.Body)
			if !resp.Close {
				t.Error("the answer keeps the connection open")
			}
			if n, err := r.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("after the answer: %d bytes, %v; want the connection closed", n, err)
			}
		})
	}
}

func TestIdle(t *testing.T) {
	addr, w := serveWatch(t, ok)
	c := dial(t, addr)
	r := bufio.NewReader(c)
	roundTrip(t, c, r)
	start := time.Now()
	within(t, "an idle kept-alive connection", closedAfter(t, c, start), limits.Idle)
	// The connections it closed, and those their clients closed, are let go.
	other := dial(t, addr)
	roundTrip(t, other, bufio.NewReader(other))
	other.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		n := len(w.conns)
		w.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d closed connections still watched", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSlowRequest(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := serve(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select { // a handler that outlives the request's limit, until its client is gone
		case <-release:
		case <-r.Context().Done():
		}
	}))
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	within(t, "a request served too long", closedAfter(t, c, start), limits.Request)
}

// TestBusyConnectionStaysOpen: a connection that keeps sending requests
// lives far longer than every limit, since each phase has its own.
func TestBusyConnectionStaysOpen(t *testing.T) {
	addr := serve(t, ok)
	c := dial(t, addr)
	r := bufio.NewReader(c)
	end := time.Now().Add(limits.Header + limits.Request + limits.Idle)
	n := 0
	for time.Now().Before(end) {
		roundTrip(t, c, r)
		n++
		time.Sleep(50 * time.Millisecond) // a client's pace, shorter than every limit
	}
	// A body sent promptly is read in time too.
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a request with a body after %d others: %v", n, err)
	}
	roundTrip(t, c, r)
}

// TestOtherConnections: a connection the Watch did not accept (TLS, or
// another listener's) is not its to police, and closing a Watch twice is
// fine.
func TestOtherConnections(t *testing.T) {
	w := New(limits)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, s := range []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateClosed} {
		w.ConnState(a, s)
	}
	w.mu.Lock()
	n := len(w.conns)
	w.mu.Unlock()
	if n != 0 {
		t.Errorf("%d connections watched", n)
	}
	w.Close()
	w.Close()
}
