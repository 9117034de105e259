// Package httpdeadline bounds how long an HTTP/1 connection spends in each
// phase — reading a request's headers, being served, idling between
// requests — with one sweeper per Watch instead of the deadline timers
// net/http arms and disarms several times for every request when its
// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are set.
// A phase's deadline is a store into the connection, read from a clock the
// sweeper keeps; the sweeper closes a connection whose phase has run past
// its limit, which ends whatever read or write net/http is blocked in.
// Deadlines are kept to within a Tick.
//
// A request with a body has its body reads bounded as net/http's
// ReadTimeout would, with a read deadline of its own (Handler): the rare
// case pays a timer, the common one does not.
//
// It is for plain-text HTTP/1: a connection whose ConnState a Watch does
// not recognize (TLS, HTTP/2) is left to net/http's own timeouts.
package httpdeadline

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
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
}

// Watch polices the connections of the listeners it wraps. Its ConnState
// and Handler are to be set on the http.Server that serves them.
type Watch struct {
	limits Limits
	now    atomic.Int64 // Unix nanoseconds, as of the last tick

	mu    sync.Mutex
	conns map[*conn]struct{}

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New starts a Watch with limits; Close stops it.
func New(limits Limits) *Watch {
	w := &Watch{limits: limits, conns: map[*conn]struct{}{}, stop: make(chan struct{}), done: make(chan struct{})}
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
}

// Read starts a request's header phase when its first bytes arrive.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.idle.Load() {
		c.idle.Store(false)
		c.deadline.Store(c.w.now.Load() + int64(c.w.limits.Header))
	}
	return n, err
}

func (c *conn) Close() error {
	c.w.forget(c)
	return c.Conn.Close()
}

func (w *Watch) forget(c *conn) {
	c.deadline.Store(0)
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// ConnState moves a connection between phases: it is the http.Server's
// ConnState.
func (w *Watch) ConnState(nc net.Conn, s http.ConnState) {
	c, ok := nc.(*conn)
	if !ok || c.w != w {
		return
	}
	switch s {
	case http.StateActive: // the request's headers are read
		c.deadline.Store(w.now.Load() + int64(w.limits.Request))
	case http.StateIdle:
		c.idle.Store(true)
		c.deadline.Store(w.now.Load() + int64(w.limits.Idle))
	case http.StateHijacked, http.StateClosed:
		w.forget(c)
	}
}

// Handler bounds the body reads of h's requests that have a body.
func (w *Watch) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 { // a body, of known length or chunked
			_ = http.NewResponseController(rw).SetReadDeadline(time.Now().Add(w.limits.Body))
		}
		h.ServeHTTP(rw, r)
	})
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
				c.Close() // net/http's read or write in progress fails, and it lets go
			}
			clear(late)
		}
	}
}
