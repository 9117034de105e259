package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/pkg/secret"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// Timeouts and bounds of the admin address.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second // a purge scans Redis
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
)

// Auth says who may call the admin gRPC API and /debug/pprof/ over TCP: a
// caller that sends "authorization: Bearer <Token>", or one whose TLS
// client certificate the listener verified against the configured CA. With
// neither configured, no one: an address proves nothing (a sidecar proxy
// makes every mesh caller loopback). Callers on the admin socket, which
// only the process's own user can open, need nothing. /metrics, /healthz
// and /readyz are always open.
type Auth struct {
	Token    secret.Value
	ClientCA bool
	// TLS is the listener's configuration for new connections, when the
	// address serves TLS: certificates and CA are swapped in with a reload.
	TLS *tls.Config
}

// Open reports whether no credential is configured: the admin API is then
// served on the socket alone.
func (a *Auth) Open() bool { return a.Token.Empty() && !a.ClientCA }

// Options configure a Server.
type Options struct {
	Backend  Backend
	Registry *prometheus.Registry
	// Ready reports whether the process takes traffic (/readyz).
	Ready  func() bool
	Logger *zap.Logger
	Auth   Auth
}

// Server serves the admin address: /metrics, /healthz and /readyz for
// Prometheus and the kubelet, and the admin gRPC API (with reflection)
// over HTTP/2 on the same address — unencrypted, or over TLS when Auth.TLS
// is set — and, with ServeSocket, everything on a Unix socket too.
type Server struct {
	http *http.Server
	auth atomic.Pointer[Auth]
	tls  bool
	log  *zap.Logger
}

// NewServer returns the admin server for o.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s := &Server{log: o.Logger, tls: o.Auth.TLS != nil}
	s.auth.Store(&o.Auth)
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.unaryRecover, s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamRecover, s.streamAuth),
	)
	adminv1.RegisterAdminServer(gs, New(o.Backend, o.Logger))
	reflection.Register(gs)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// Profiles reveal memory, and cost CPU: they are the admin API's.
	mux.Handle("/debug/pprof/", s.requireAuth(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", s.requireAuth(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", s.requireAuth(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", s.requireAuth(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", s.requireAuth(http.HandlerFunc(pprof.Trace)))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !o.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // gRPC on the plain address and on the socket
	protocols.SetHTTP2(s.tls)
	s.http = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(o.Logger.Named("admin-http")),
		// Calls on the socket are marked: its file mode is their credential.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if _, ok := c.(*net.UnixConn); ok {
				return context.WithValue(ctx, onSocket{}, true)
			}
			return ctx
		},
	}
	if s.tls {
		s.http.TLSConfig = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.auth.Load().TLS, nil
		}}
	}
	return s
}

// Update puts new credentials into service, for calls and TLS handshakes
// that start from now on. Whether the address serves TLS is fixed at
// start: an Auth that changes it keeps the current TLS configuration, and
// Update reports false.
func (s *Server) Update(a Auth) bool {
	ok := (a.TLS != nil) == s.tls
	if !ok {
		a.TLS = s.auth.Load().TLS
	}
	s.auth.Store(&a)
	return ok
}

// Serve serves l, the admin address, until Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	if s.tls {
		return s.http.ServeTLS(l, "", "")
	}
	return s.http.Serve(l)
}

// ServeSocket serves l, from ListenSocket, until Shutdown or Close: the
// admin API and profiles answer whoever can open the socket.
func (s *Server) ServeSocket(l *net.UnixListener) error { return s.http.Serve(l) }

// onSocket marks the context of a request that came in on the admin socket.
type onSocket struct{}

// ListenSocket creates the Unix socket path, readable and writable by this
// process's user alone (0600), replacing a socket a previous run left
// there. It is bound under a temporary name and renamed into place once its
// mode is set, so that it is never open to others, even for a moment.
// Closing the listener removes it.
func ListenSocket(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("%s exists and is not a socket", path)
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d", filepath.Base(path), os.Getpid()))
	_ = os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false) // the name it was bound to is gone: Close removes path
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	return l, nil
}

// Shutdown stops the server once requests under way have finished or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Close stops the server at once.
func (s *Server) Close() error { return s.http.Close() }

// unaryRecover and streamRecover keep the admin address serving through a
// panic in a call: the call fails with INTERNAL and the panic is logged.
func (s *Server) unaryRecover(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer s.recover(info.FullMethod, &err)
	return handler(ctx, req)
}

func (s *Server) streamRecover(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer s.recover(info.FullMethod, &err)
	return handler(srv, ss)
}

func (s *Server) recover(method string, err *error) {
	if v := recover(); v != nil {
		s.log.Error("panic in an admin call", zap.String("method", method), zap.Any("panic", v), zap.Stack("stack"))
		*err = status.Error(codes.Internal, "internal error")
	}
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// caller is what admin authentication reads of a request.
type caller struct {
	addr          string   // host:port, for the log
	socket        bool     // on the admin socket
	verified      bool     // a client certificate the TLS handshake verified
	authorization []string // Authorization values
}

// authorize lets a gRPC call through when its caller has what Auth asks for.
func (s *Server) authorize(ctx context.Context, method string) error {
	c := caller{}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			c.addr = p.Addr.String()
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		c.verified = ok && len(ti.State.VerifiedChains) > 0
	}
	c.socket, _ = ctx.Value(onSocket{}).(bool)
	md, _ := metadata.FromIncomingContext(ctx)
	c.authorization = md.Get("authorization")
	code, msg := s.check(c)
	if code == codes.OK {
		return nil
	}
	s.log.Warn("admin call refused", zap.String("method", method), zap.String("peer", c.addr), zap.String("code", code.String()))
	return status.Error(code, msg)
}

// requireAuth guards an HTTP handler (pprof) as authorize guards calls.
func (s *Server) requireAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := caller{addr: r.RemoteAddr, authorization: r.Header.Values("Authorization")}
		c.socket, _ = r.Context().Value(onSocket{}).(bool)
		c.verified = r.TLS != nil && len(r.TLS.VerifiedChains) > 0
		code, msg := s.check(c)
		switch code {
		case codes.OK:
			h.ServeHTTP(w, r)
			return
		case codes.Unauthenticated:
			w.Header().Set("WWW-Authenticate", `Bearer realm="extauthz-admin"`)
			http.Error(w, msg, http.StatusUnauthorized)
		case codes.Unimplemented:
			http.Error(w, msg, http.StatusNotFound)
		default:
			http.Error(w, msg, http.StatusForbidden)
		}
		s.log.Warn("admin request refused", zap.String("path", r.URL.Path), zap.String("peer", c.addr))
	})
}

// NotServedOverTCP is what a TCP caller of the admin API is told while no
// credential is configured.
const NotServedOverTCP = "the admin API is not served over TCP without server.admin.token or server.admin.tls.clientCA; set one, or server.admin.socket to call it from inside the pod"

// check decides what Auth says of c.
func (s *Server) check(c caller) (codes.Code, string) {
	a := s.auth.Load()
	switch {
	case c.socket:
		return codes.OK, ""
	case a.Open():
		return codes.Unimplemented, NotServedOverTCP
	case a.ClientCA && c.verified:
		return codes.OK, ""
	case !a.Token.Empty():
		if bearerMatches(c.authorization, a.Token) {
			return codes.OK, ""
		}
		return codes.Unauthenticated, "the admin API needs authorization: Bearer <server.admin.token>, or a client certificate"
	}
	return codes.Unauthenticated, "the admin API needs a client certificate signed by server.admin.tls.clientCA"
}

// bearerMatches compares the bearer tokens among values with want in
// constant time (of digests, so that not even the length leaks).
func bearerMatches(values []string, want secret.Value) bool {
	wantSum := sha256.Sum256([]byte(want.Reveal()))
	ok := 0
	for _, v := range values {
		scheme, tok, found := strings.Cut(v, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			continue
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		ok |= subtle.ConstantTimeCompare(sum[:], wantSum[:])
	}
	return ok == 1
}
