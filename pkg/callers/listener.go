package callers

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of a Listener.
const (
	// DefaultHandshakeTimeout bounds a TLS handshake: a proxy beside
	// extauthz completes one in milliseconds.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultMaxPending bounds the handshakes under way at once; more
	// connections wait in the kernel's backlog.
	DefaultMaxPending = 1024
)

// ListenerOptions configure a Listener.
type ListenerOptions struct {
	// Name is the listener's in logs and metrics: grpc or http.
	Name string
	// NextProtos are the ALPN protocols offered: h2 for gRPC.
	NextProtos []string
	// HandshakeTimeout and MaxPending default to DefaultHandshakeTimeout
	// and DefaultMaxPending.
	HandshakeTimeout time.Duration
	MaxPending       int
}

// Listener accepts TCP connections, completes their TLS handshakes (each in
// its own goroutine, bounded in time and number), and hands out only those
// the guard's policy lets through, as *tls.Conn whose handshake is done:
// net/http serves them as it serves its own TLS connections, and a gRPC
// server with the guard's Credentials reads their state. A refused
// connection is closed, logged once with the peer's address and claimed
// identity, and counted.
type Listener struct {
	inner net.Listener
	o     ListenerOptions
	guard *Guard

	conns   chan net.Conn
	errs    chan error
	pending chan struct{} // one token per handshake under way
	closed  chan struct{}
	once    sync.Once
}

// Listen serves inner through the guard's policy; each new connection is
// handshaken with the policy in service then, so that a reload takes effect
// for the connections that follow. It starts accepting at once; Close
// closes inner.
func (g *Guard) Listen(inner net.Listener, o ListenerOptions) *Listener {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	l := &Listener{inner: inner, o: o, guard: g,
		conns: make(chan net.Conn), errs: make(chan error), pending: make(chan struct{}, o.MaxPending), closed: make(chan struct{})}
	go l.run()
	return l
}

// run accepts connections and starts their handshakes until the listener closes.
func (l *Listener) run() {
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.closed:
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				continue
			}
			return
		}
		select {
		case l.pending <- struct{}{}:
		case <-l.closed:
			raw.Close()
			return
		}
		go l.handshake(raw)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// handshake completes raw's TLS handshake and hands the connection to
// Accept, or refuses it.
func (l *Listener) handshake(raw net.Conn) {
	defer func() { <-l.pending }()
	conn := tls.Server(raw, l.guard.Policy().config(l.o.NextProtos))
	ctx, cancel := context.WithTimeout(context.Background(), l.o.HandshakeTimeout)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.refuse(raw.RemoteAddr(), err)
		_ = raw.Close()
		return
	}
	l.guard.count(l.o.Name, Accepted)
	if ce := l.guard.log.Check(zap.DebugLevel, "caller accepted"); ce != nil {
		ce.Write(zap.String("listener", l.o.Name), zap.Stringer("peer", raw.RemoteAddr()), zap.String("identity", identity(conn.ConnectionState())))
	}
	select {
	case l.conns <- conn:
	case <-l.closed:
		_ = conn.Close()
	}
}

// refuse logs and counts a connection whose handshake failed or was refused.
func (l *Listener) refuse(peer net.Addr, err error) {
	result, claimed := classify(err)
	l.guard.refused(l.o.Name, peer, result, claimed, err)
}

// classify names why a handshake failed, and what identity the caller's
// certificate claimed, if it sent one.
func classify(err error) (result, claimed string) {
	var refusal *Refusal
	var verification *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &refusal):
		return refusal.Result, refusal.Identity
	case errors.As(err, &verification):
		if len(verification.UnverifiedCertificates) > 0 {
			claimed = Describe(verification.UnverifiedCertificates[0])
		}
		return UntrustedCertificate, claimed
	case errors.As(err, &header):
		return NotTLS, ""
	}
	return HandshakeFailed, ""
}

// identity names the verified caller of a connection, for the debug log.
func identity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return "none"
	}
	return Describe(cs.PeerCertificates[0])
}

// Accept returns the next connection the policy let through.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the listener beneath; connections
// already handed out are their server's to close.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.closed)
		err = l.inner.Close()
	})
	return err
}

// Addr is the address beneath.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }
