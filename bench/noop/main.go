// Command noop is an ext_authz v3 server that allows every request and
// does nothing else: the physical limit extauthz is measured against, built
// with the same grpc-go. It serves HTTP mode's no-op too: a net/http
// handler that answers 200 with the three headers extauthz's HTTP mode
// writes for the load's policy (Cache-Control: no-store, a token of -token
// bytes, and X-Group), and the same handler on fasthttp, the server
// extauthz's plain HTTP/1 mode uses. It prints "listening <gRPC address>
// <HTTP address> <fasthttp address>" once it serves.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/valyala/fasthttp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

type noop struct{}

var allow = &authv3.CheckResponse{
	Status:       &rpcstatus.Status{},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

func (noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return allow, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "gRPC address to listen on")
	httpAddr := flag.String("http", "127.0.0.1:0", "HTTP address to listen on")
	fastAddr := flag.String("fasthttp", "127.0.0.1:0", "fasthttp address to listen on")
	tokenBytes := flag.Int("token", 300, "length of the token the HTTP no-op answers with")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	httpLis, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fastLis, err := net.Listen("tcp", *fastAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, noop{})
	token := "Bearer " + strings.Repeat("t", *tokenBytes)
	// Values shared by every answer, as extauthz's are.
	noStore, authorization, group := []string{"no-store"}, []string{token}, []string{"admin"}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Cache-Control"] = noStore
		h["Authorization"] = authorization
		h["X-Group"] = group
		w.WriteHeader(http.StatusOK)
	})}
	// fasthttp with the options of extauthz's plain HTTP/1 server that
	// shape an answer and its cost (httpdeadline.Watch.FastServer), but
	// no slow-client watch: the bare server, as net/http's no-op is.
	fs := &fasthttp.Server{Handler: func(fc *fasthttp.RequestCtx) {
		h := &fc.Response.Header
		h.Set("Cache-Control", noStore[0])
		h.Set("Authorization", token)
		h.Set("X-Group", group[0])
	}, StreamRequestBody: true, ReduceMemoryUsage: true, NoDefaultServerHeader: true, NoDefaultContentType: true}
	fmt.Printf("listening %s %s %s\n", lis.Addr(), httpLis.Addr(), fastLis.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		gs.Stop()
		hs.Close()
		_ = fs.Shutdown()
	}()
	go func() { _ = hs.Serve(httpLis) }()
	go func() { _ = fs.Serve(fastLis) }()
	if err := gs.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
