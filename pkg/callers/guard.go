package callers

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// GuardOptions configure a Guard.
type GuardOptions struct {
	// Policy is the policy in service at start.
	Policy *Policy
	// Connections counts connections by listener and result; none when nil.
	Connections *prometheus.CounterVec
	Logger      *zap.Logger
}

// Guard holds the policy in service for the check listeners. Its listeners
// refuse strangers in the TLS handshake; its interceptors and handler
// refuse, request by request, a connection the policy in service no longer
// trusts (the configuration changed after it was let in). A connection is
// decided again only when the policy changes: on every other request the
// guard compares two pointers.
type Guard struct {
	policy  atomic.Pointer[Policy]
	counted map[[2]string]prometheus.Counter // listener, result
	log     *zap.Logger
}

// NewGuard returns a guard of o.Policy, which must not be nil.
func NewGuard(o GuardOptions) *Guard {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	g := &Guard{counted: map[[2]string]prometheus.Counter{}, log: o.Logger}
	for _, l := range []string{"grpc", "http"} {
		for _, r := range Results {
			if o.Connections != nil {
				g.counted[[2]string{l, r}] = o.Connections.WithLabelValues(l, r)
			}
		}
	}
	g.policy.Store(o.Policy)
	return g
}

// Policy returns the policy in service.
func (g *Guard) Policy() *Policy { return g.policy.Load() }

// Update puts p into service: new connections are handshaken with it, and
// the next request of every open connection is decided again under it.
func (g *Guard) Update(p *Policy) { g.policy.Store(p) }

func (g *Guard) count(listener, result string) {
	if c := g.counted[[2]string{listener, result}]; c != nil {
		c.Inc()
	}
}

// refused logs and counts a connection refused for result.
func (g *Guard) refused(listener string, peer net.Addr, result, claimed string, err error) {
	g.count(listener, result)
	fields := []zap.Field{zap.String("listener", listener), zap.Stringer("peer", peer), zap.String("result", result)}
	if claimed != "" {
		fields = append(fields, zap.String("identity", claimed))
	}
	g.log.Warn("caller refused", append(fields, zap.Error(err))...)
}

// connection is one connection a Listener let in, with the verdict of the
// policy that last decided it.
type connection struct {
	listener string
	peer     net.Addr
	state    tls.ConnectionState
	verdict  atomic.Pointer[verdict]
}

// verdict is what policy said of a connection: nil err to let it through.
type verdict struct {
	policy *Policy
	err    error
}

// noVerdict is where every connection starts: the first request decides it
// under the policy in service then, whichever one let it in.
var noVerdict = &verdict{}

func newConnection(listener string, c *tls.Conn) *connection {
	conn := &connection{listener: listener, peer: c.RemoteAddr(), state: c.ConnectionState()}
	conn.verdict.Store(noVerdict)
	return conn
}

// allow decides a request of c: under the policy in service, decided once
// per connection and policy. A connection the policy refuses is logged and
// counted once.
func (g *Guard) allow(c *connection) error {
	p, v := g.policy.Load(), c.verdict.Load()
	if v.policy == p {
		return v.err
	}
	next := &verdict{policy: p, err: p.recheck(&c.state)}
	if c.verdict.CompareAndSwap(v, next) && next.err != nil {
		result, claimed := classify(next.err)
		g.refused(c.listener, c.peer, result, claimed, next.err)
	}
	return next.err
}

// errUnknownConnection refuses a request on a connection no Listener of
// this guard let in: it is not known who sent it.
var errUnknownConnection = errors.New("the connection did not pass the caller check")

// Credentials are a gRPC server's transport credentials for the
// connections of the guard's Listener, whose handshake is done: they pass
// each connection on with its TLS state, so that peers carry an AuthInfo
// that is a credentials.TLSInfo, as with credentials.NewTLS.
func (g *Guard) Credentials() credentials.TransportCredentials { return handshaken{} }

// AuthInfo is a gRPC peer's AuthInfo on a guarded listener.
type AuthInfo struct {
	credentials.TLSInfo
	conn *connection
}

type handshaken struct{}

func (handshaken) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, errUnknownConnection
	}
	conn := newConnection("grpc", tc)
	info := credentials.TLSInfo{State: conn.state, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	return c, AuthInfo{TLSInfo: info, conn: conn}, nil
}

func (handshaken) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("callers: server credentials only")
}

func (handshaken) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (h handshaken) Clone() credentials.TransportCredentials { return h }

func (handshaken) OverrideServerName(string) error { return nil }

// grpcAllow decides a gRPC call by the connection it came on.
func (g *Guard) grpcAllow(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, errUnknownConnection.Error())
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return status.Error(codes.PermissionDenied, errUnknownConnection.Error())
	}
	if err := g.allow(ai.conn); err != nil {
		return status.Error(codes.PermissionDenied, "this caller is not allowed to call extauthz (server.tls)")
	}
	return nil
}

// UnaryInterceptor refuses calls on connections the policy in service does
// not trust, with PERMISSION_DENIED, before anything else runs.
func (g *Guard) UnaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := g.grpcAllow(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// StreamInterceptor is UnaryInterceptor for streams (health watches, reflection).
func (g *Guard) StreamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := g.grpcAllow(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// connKey is the context key of an HTTP connection's *connection.
type connKey struct{}

// ConnContext is an http.Server's ConnContext for a guarded listener: it
// remembers the connection, for Handler.
func (g *Guard) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		return context.WithValue(ctx, connKey{}, newConnection("http", tc))
	}
	return ctx
}

// forbidden is HTTP mode's answer to a caller the policy does not trust.
const forbidden = `{"error":"access_denied","error_description":"this caller is not allowed to call extauthz (server.tls)"}`

// Handler refuses requests on connections the policy in service does not
// trust, with 403, before h runs. The server must use ConnContext.
func (g *Guard) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*connection)
		if c == nil || g.allow(c) != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(forbidden))
			return
		}
		h.ServeHTTP(w, r)
	})
}
