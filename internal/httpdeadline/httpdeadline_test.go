package httpdeadline

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// limits are short, so that each phase's bound shows in well under a
// second; they differ, so that a test tells which one closed a connection.
var limits = Limits{Header: 400 * time.Millisecond, Body: 700 * time.Millisecond, Request: time.Second, Idle: 1300 * time.Millisecond}

// handler is what a test's server does with a request.
type handler int

const (
	readBody   handler = iota // reads the body, answers X-Ok: 1
	ignoreBody                // answers X-Ok: 1, leaving the body to the server
	hold                      // answers when released, or when its client hangs up
)

// serve starts a server on a Watch of limits with h, and returns its
// address.
func serve(t *testing.T, h handler) string {
	t.Helper()
	addr, _ := serveWatch(t, h, nil)
	return addr
}

func serveWatch(t *testing.T, h handler, release <-chan struct{}) (string, *Watch) {
	t.Helper()
	return serveWith(t, New(limits, nil), h, release)
}

func serveWith(t *testing.T, w *Watch, h handler, release <-chan struct{}) (string, *Watch) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := w.FastServer(fastHandler(h, release), 64<<10, nil)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(w.Listen(lis)) }()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-served
		w.Close()
	})
	return lis.Addr().String(), w
}

func fastHandler(h handler, release <-chan struct{}) fasthttp.RequestHandler {
	return func(fc *fasthttp.RequestCtx) {
		switch h {
		case readBody:
			if s := fc.RequestBodyStream(); s != nil {
				_, _ = io.Copy(io.Discard, s)
			}
		case hold:
			ctx, cancel := context.WithCancel(context.Background())
			stop := fc.Conn().(*conn).WatchHangUp(cancel)
			select {
			case <-release:
			case <-ctx.Done():
			}
			stop()
			cancel()
		}
		fc.Response.Header.Set("X-Ok", "1")
	}
}

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
	addr := serve(t, readBody)
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
// limit, whether the handler reads it or leaves it to the server (as
// extauthz does: fasthttp reads a small body before the handler and
// answers 408); the answer says the connection closes, and it does.
func TestSlowBody(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    handler
	}{
		{"read by the handler", readBody},
		{"left to the server", ignoreBody},
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
			_, _ = io.Copy(io.Discard, resp.Body)
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
	addr, w := serveWatch(t, readBody, nil)
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
	// A handler that outlives the request's limit, until its client is gone.
	addr, _ := serveWatch(t, hold, release)
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
	addr := serve(t, readBody)
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
	w := New(limits, nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, s := range []fasthttp.ConnState{fasthttp.StateNew, fasthttp.StateActive, fasthttp.StateIdle, fasthttp.StateClosed} {
		w.connState(a, s)
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

// TestWatchHangUp: a fasthttp handler that waits learns that its client
// hung up, as net/http's request context tells; a client that sends its
// next request meanwhile has not hung up, and that request, its first
// byte read by the watch, is answered after the first.
func TestWatchHangUp(t *testing.T) {
	w := New(limits, nil)
	defer w.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	waiting, ended := make(chan struct{}), make(chan string, 1)
	release := make(chan struct{})
	srv := w.FastServer(func(fc *fasthttp.RequestCtx) {
		if string(fc.Path()) != "/wait" {
			fc.Response.Header.Set("X-Path", string(fc.Path()))
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		stop := fc.Conn().(*conn).WatchHangUp(cancel)
		waiting <- struct{}{}
		select {
		case <-ctx.Done():
			ended <- "hung up"
		case <-release:
			ended <- "released"
		}
		stop()
		cancel()
		fc.Response.Header.Set("X-Path", "/wait")
	}, 64<<10, nil)
	go func() { _ = srv.Serve(w.Listen(lis)) }()
	defer srv.Shutdown()
	addr := lis.Addr().String()

	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-waiting
	c.Close()
	select {
	case got := <-ended:
		if got != "hung up" {
			t.Errorf("a client that hung up: the handler was %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never learnt that its client hung up")
	}

	c = dial(t, addr)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-waiting
	if _, err := io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The watch has read the next request's first byte: nothing else
	// tells the test that it has, so it waits for the handler to say.
	select {
	case got := <-ended:
		t.Fatalf("a pipelined request ended the wait: %s", got)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if got := <-ended; got != "released" {
		t.Fatalf("the handler was %s", got)
	}
	r := bufio.NewReader(c)
	for _, want := range []string{"/wait", "/next"} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Path") != want {
			t.Errorf("answer %d for %q, want 200 for %q", resp.StatusCode, resp.Header.Get("X-Path"), want)
		}
	}
}

// probe sends a GET on a connection of its own and returns the answer's
// status, or why none came within 2 s (the connection closed, refused).
func probe(t *testing.T, addr string) (int, error) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestReading: with Reading 2, two connections that stop halfway through
// their headers hold the bound, a third request's connection is closed at
// once and counted, and once one of the two has sent its request, and one
// has gone, requests are served again; requests that complete their
// headers never count against it.
func TestReading(t *testing.T) {
	l := limits
	l.Reading = 2
	// The slow connections must outlive the test: the sweeper's clock lags
	// by up to a Tick, which makes the short limits shorter still.
	l.Header = 5 * time.Second
	var refused atomic.Int32
	addr, w := serveWith(t, New(l, func() { refused.Add(1) }), readBody, nil)
	busy := dial(t, addr)
	r := bufio.NewReader(busy)
	for range 5 { // served requests end their header phase
		roundTrip(t, busy, r)
	}
	slow := []net.Conn{dial(t, addr), dial(t, addr)}
	for _, c := range slow {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing else is reading: both count once the server has read their
	// first bytes, which nothing outside tells.
	deadline := time.Now().Add(5 * time.Second)
	for w.reading.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections reading, want the 2 slow ones", w.reading.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A third request's connection is refused, and so is a kept-alive
	// connection's next request.
	if status, err := probe(t, addr); err == nil || refused.Load() != 1 {
		t.Fatalf("a request while two were reading headers: %d, %d refused", status, refused.Load())
	}
	if _, err := io.WriteString(busy, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(r, nil); err == nil {
		t.Fatalf("a request while the bound was held: %d", resp.StatusCode)
	}
	// One finishes its headers, the other hangs up: the bound is free.
	if _, err := io.WriteString(slow[0], "1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(slow[0]), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the slow request, finished: %v", err)
	}
	slow[1].Close()
	deadline = time.Now().Add(5 * time.Second)
	for {
		status, err := probe(t, addr)
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests still refused after the bound was freed: %v", err)
		}
	}
}

// TestReadingBody: on fasthttp, a connection whose body has not come yet
// holds its headers, and counts against Reading until its handler runs.
func TestReadingBody(t *testing.T) {
	l := limits
	l.Reading = 1
	l.Body = 5 * time.Second // the waiting connection must outlive the test
	var refused atomic.Int32
	addr, w := serveWith(t, New(l, func() { refused.Add(1) }), ignoreBody, nil)
	waiting := dial(t, addr)
	if _, err := io.WriteString(waiting, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Its headers are read once its phase is the request's (the body's
	// read deadline set): nothing else tells.
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		read := false
		for c := range w.conns {
			read = read || c.deadline.Load() > w.now.Load()+int64(l.Header)
		}
		w.mu.Unlock()
		if read {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the POST's headers were never read")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if status, err := probe(t, addr); err == nil {
		t.Errorf("a request while one waited for its body: %d", status)
	}
	if refused.Load() != 1 {
		t.Errorf("%d connections refused, want 1", refused.Load())
	}
}
