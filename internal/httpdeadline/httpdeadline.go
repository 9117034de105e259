// Package httpdeadline bounds how long an HTTP/1 connection spends in each
// phase — reading a request's headers, being served, idling between
// requests — with one sweeper per Watch instead of deadline timers armed
// and disarmed several times for every request (as net/http's
// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout do).
// A phase's deadline is a store into the connection, read from a clock the
// sweeper keeps; the sweeper closes a connection whose phase has run past
// its limit, which ends whatever read or write the server is blocked in.
// Deadlines are kept to within a Tick.
//
// A request with a body has its body reads bounded as net/http's
// ReadTimeout would, with a read deadline of its own: the rare case pays a
// timer, the common one does not.
//
// It is for plain-text HTTP/1 served by fasthttp (FastServer): TLS and
// HTTP/2 are net/http's, with its own timeouts. A connection also tells a
// handler when its peer hangs up (WatchHangUp), as net/http's request
// contexts do.
package httpdeadline

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Tick is how often the sweeper reads the time and looks at connections.
const Tick = 250 * time.Millisecond

// Limits are how long each phase may last.
type Limits struct {
	// Header runs from a connection's accept, or the first byte of a
	// request after an idle time, until the request's headers are read.
	Header time.Duration
	// Body bounds reading a request's body, from its headers read.
	Body time.Duration
	// Request runs from a request's headers read until its response is
	// written: the handler's work and the write.
	Request time.Duration
	// Idle runs between requests on a kept-alive connection.
	Idle time.Duration
	// Reading bounds the connections reading a request at once, from its
	// first byte until its handler runs (fasthttp reads the first
	// kilobytes of a body before); 0 for no bound. A connection whose
	// request starts beyond it is closed: fasthttp holds a buffer as large
	// as the headers may be, and the headers parsed, for each of them.
	Reading int
}

// Watch polices the connections of the listeners it wraps, served by the
// fasthttp server FastServer returns.
type Watch struct {
	limits  Limits
	now     atomic.Int64 // Unix nanoseconds, as of the last tick
	reading atomic.Int64 // connections reading a request's headers
	refused func()       // told of each connection closed for Reading

	mu    sync.Mutex
	conns map[*conn]struct{}

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New starts a Watch with limits; Close stops it. refused, when not nil,
// is called for each connection closed because Reading connections were
// reading headers already.
func New(limits Limits, refused func()) *Watch {
	w := &Watch{limits: limits, refused: refused, conns: map[*conn]struct{}{}, stop: make(chan struct{}), done: make(chan struct{})}
	w.now.Store(time.Now().UnixNano())
	go w.sweep()
	return w
}

// Close stops the sweeper. Connections already accepted are no longer
// policed; the server's Shutdown or Close ends them.
func (w *Watch) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

// Listen returns inner, whose connections w polices from their accept.
func (w *Watch) Listen(inner net.Listener) net.Listener { return &listener{Listener: inner, w: w} }

type listener struct {
	net.Listener
	w *Watch
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &conn{Conn: c, w: l.w}
	cc.awaiting.Store(true)
	cc.deadline.Store(l.w.now.Load() + int64(l.w.limits.Header))
	l.w.mu.Lock()
	l.w.conns[cc] = struct{}{}
	l.w.mu.Unlock()
	return cc, nil
}

// conn is an accepted connection and the deadline of its phase.
type conn struct {
	net.Conn
	w        *Watch
	deadline atomic.Int64 // Unix nanoseconds; 0 for none
	idle     atomic.Bool  // between requests: the next byte read starts one
	awaiting atomic.Bool  // no byte of the next request read yet
	reading  atomic.Bool  // counted in Watch.reading

	// A byte a hang-up watch read, for the server's next read; written by
	// the watch, read by the server once the watch has stopped.
	peek   [1]byte
	peeked bool
	// The request being served has a body (handler): the server's to
	// read after the handler, so not the watch's.
	body bool
}

// errReading closes a connection whose request starts while Limits.Reading
// connections are reading headers.
var errReading = errors.New("httpdeadline: too many connections reading a request's headers")

// Read starts a request's header phase when its first bytes arrive.
func (c *conn) Read(b []byte) (n int, err error) {
	if c.peeked && len(b) > 0 {
		c.peeked = false
		b[0], n = c.peek[0], 1
	} else {
		n, err = c.Conn.Read(b)
	}
	if n > 0 && c.awaiting.Load() {
		c.awaiting.Store(false)
		if c.idle.Swap(false) {
			c.deadline.Store(c.w.now.Load() + int64(c.w.limits.Header))
		}
		if !c.startReading() {
			c.Close()
			return 0, errReading
		}
	}
	return n, err
}

// startReading counts c among the connections reading headers, unless
// Limits.Reading of them are already.
func (c *conn) startReading() bool {
	w := c.w
	if w.limits.Reading <= 0 || c.reading.Swap(true) {
		return true
	}
	if w.reading.Add(1) > int64(w.limits.Reading) {
		c.stopReading()
		if w.refused != nil {
			w.refused()
		}
		return false
	}
	return true
}

// stopReading ends c's count among the connections reading headers.
func (c *conn) stopReading() {
	if c.reading.Swap(false) {
		c.w.reading.Add(-1)
	}
}

// SetReadDeadline passes a read deadline on. One in the future, set while
// a request's headers are read, is fasthttp's for the body that follows
// (headerReceived): those reads are bounded by it, and the request
// phase starts, as it does when the handler does.
func (c *conn) SetReadDeadline(t time.Time) error {
	if t.UnixNano() > c.w.now.Load() {
		// Still counted among those reading (Limits.Reading) until the
		// handler runs: fasthttp holds the headers while it waits.
		c.deadline.Store(c.w.now.Load() + int64(c.w.limits.Request))
	}
	return c.Conn.SetReadDeadline(t)
}

// aLongTimeAgo is a deadline that has passed: it ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// WatchHangUp reads from the connection while a request on it is served,
// as net/http does for its request contexts, and calls cancel if the peer
// closes it (or the sweeper does). A byte that arrives instead, the start
// of a pipelined request, is kept for the server's next read. stop ends
// the watch and returns once it has ended; the server must not read from
// the connection until then. A request with a body (handler says) is
// not watched: what the watch would read is the body's.
func (c *conn) WatchHangUp(cancel context.CancelFunc) (stop func()) {
	if c.body {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := c.Conn.Read(c.peek[:])
		if n > 0 {
			c.peeked = true
			return
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
	return func() {
		_ = c.Conn.SetReadDeadline(aLongTimeAgo)
		<-done
		_ = c.Conn.SetReadDeadline(time.Time{})
	}
}

func (c *conn) Close() error {
	c.w.forget(c)
	return c.Conn.Close()
}

func (w *Watch) forget(c *conn) {
	c.stopReading()
	c.deadline.Store(0)
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// connState moves a connection between phases. fasthttp's StateActive
// comes with a request's first byte (Read starts that phase) and its
// handler starts once the headers are read (handler).
func (w *Watch) connState(nc net.Conn, s fasthttp.ConnState) {
	c, ok := nc.(*conn)
	if !ok || c.w != w {
		return
	}
	switch s {
	case fasthttp.StateIdle:
		c.idling()
	case fasthttp.StateHijacked, fasthttp.StateClosed:
		w.forget(c)
	}
}

// serving starts the request phase: the handler's work and the write.
func (c *conn) serving() {
	c.stopReading()
	c.deadline.Store(c.w.now.Load() + int64(c.w.limits.Request))
}

// idling starts the idle phase, which the next byte read ends.
func (c *conn) idling() {
	c.stopReading()
	c.idle.Store(true)
	c.awaiting.Store(true)
	c.deadline.Store(c.w.now.Load() + int64(c.w.limits.Idle))
}

// headerReceived is fasthttp's HeaderReceived: fasthttp reads a request's
// body, or its first kilobytes, before the handler runs, and those reads of
// a request that has one are bounded by Body.
func (w *Watch) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if hasBody(h) {
		return fasthttp.RequestConfig{ReadTimeout: w.limits.Body}
	}
	return fasthttp.RequestConfig{}
}

// handler starts h's request phase, and bounds the reads of the rest of a
// body (fasthttp drains what h leaves unread once it has answered, then
// clears the deadline).
func (w *Watch) handler(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(fc *fasthttp.RequestCtx) {
		body := hasBody(&fc.Request.Header)
		if c, ok := fc.Conn().(*conn); ok && c.w == w {
			c.serving()
			c.body = body
		}
		if body {
			_ = fc.SetReadDeadline(time.Now().Add(w.limits.Body))
		}
		h(fc)
	}
}

// FastServer returns a fasthttp server that serves h on the connections w
// polices (pass it w.Listen's listener), set as w's phases assume: a body
// streamed, not read whole before h, and no buffer held between requests.
// A request line and headers of more than maxHeaderBytes, plus 4 KiB as
// net/http allows, are answered 431. Answers carry only the headers h sets.
// logger, when not nil, is told of connections that end in error.
func (w *Watch) FastServer(h fasthttp.RequestHandler, maxHeaderBytes int, logger fasthttp.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:        w.handler(h),
		ConnState:      w.connState,
		HeaderReceived: w.headerReceived,
		ReadBufferSize: maxHeaderBytes + 4096,
		// fasthttp drains a body h leaves unread after the answer, up to
		// 256 KiB, and closes the connection after a larger one.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		// A connection between requests holds no buffers: the read buffer
		// is as large as the headers may be.
		ReduceMemoryUsage:     true,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		// Errors are logged without the request's bytes where fasthttp
		// can tell (logger removes what it still quotes).
		SecureErrorLogMessage: true,
		Logger:                logger,
	}
}

// hasBody reports whether a request has a body: a Content-Length above 0,
// or a chunked one (fasthttp's -1; -2 is none).
func hasBody(h *fasthttp.RequestHeader) bool {
	n := h.ContentLength()
	return n > 0 || n == -1
}

// sweep keeps the clock and closes the connections past their deadline.
func (w *Watch) sweep() {
	defer close(w.done)
	t := time.NewTicker(Tick)
	defer t.Stop()
	var late []*conn
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			n := now.UnixNano()
			w.now.Store(n)
			late = late[:0]
			w.mu.Lock()
			for c := range w.conns {
				if d := c.deadline.Load(); d != 0 && n > d {
					late = append(late, c)
				}
			}
			w.mu.Unlock()
			for _, c := range late {
				c.Close() // the server's read or write in progress fails, and it lets go
			}
			clear(late)
		}
	}
}
