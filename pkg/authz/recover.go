package authz

import (
	"context"
	"fmt"
	"net/http"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryInterceptor keeps the gRPC server serving through a panic in a
// call: a Check that panics is denied 500 server_error (fail closed), any
// other call fails with INTERNAL, and the panic is logged at error with its
// stack.
func (s *Server) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		s.logPanic(info.FullMethod, v)
		if _, ok := req.(*authv3.CheckRequest); ok {
			d := decision{outcome: denyInternal, cause: panicError(v)}
			s.record(&d, start)
			resp, err = d.deniedResponse(), nil
			return
		}
		resp, err = nil, status.Error(codes.Internal, "internal error")
	}()
	return handler(ctx, req)
}

// StreamInterceptor is UnaryInterceptor for streaming calls (health
// watches, reflection): a panic fails the stream with INTERNAL.
func (s *Server) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.logPanic(info.FullMethod, v)
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(srv, ss)
}

// recoverHTTP answers an HTTP-mode check that panicked with 500
// server_error. Deferred by ServeHTTP.
func (s *Server) recoverHTTP(w http.ResponseWriter, start time.Time) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler { // net/http's own way to abort a response
		panic(v)
	}
	s.logPanic("HTTP mode", v)
	d := decision{outcome: denyInternal, cause: panicError(v)}
	s.record(&d, start)
	writeHTTP(w, &d)
}

// recoverFast is recoverHTTP for fasthttp: what the handler set of its
// answer is dropped, and the check denied.
func (s *Server) recoverFast(fc *fasthttp.RequestCtx, start time.Time) {
	v := recover()
	if v == nil {
		return
	}
	s.logPanic("HTTP mode", v)
	d := decision{outcome: denyInternal, cause: panicError(v)}
	s.record(&d, start)
	fc.Response.Reset()
	writeFast(fc, &d)
}

func (s *Server) logPanic(where string, v any) {
	s.log.Error("panic while answering; denied, and serving on", zap.String("method", where),
		zap.Error(panicError(v)), zap.Stack("stack"))
}

func panicError(v any) error {
	if err, ok := v.(error); ok {
		return fmt.Errorf("panic: %w", err)
	}
	return fmt.Errorf("panic: %v", v)
}
