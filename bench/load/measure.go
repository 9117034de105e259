package main

import (
	"context"
	"fmt"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/bench/internal/loadgen"
)

// grpcTarget sends req over one connection per client.
func grpcTarget(name, addr string, pid int, req *authv3.CheckRequest) loadgen.Target {
	return loadgen.Target{Name: name, PID: pid, Client: func(int) (func() bool, func(), error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		client := authv3.NewAuthorizationClient(conn)
		return func() bool {
			resp, err := client.Check(context.Background(), req)
			return err == nil && resp.GetOkResponse() != nil
		}, func() { conn.Close() }, nil
	}}
}

// report prints two results and their ratios, and whether the targets (0
// for none) are met.
func report(label string, base, other *loadgen.Result, baseName, otherName string, minTput, maxP99 float64) {
	tput, p50, p99 := other.RPS()/base.RPS(), float64(other.Quantile(0.5))/float64(base.Quantile(0.5)), float64(other.Quantile(0.99))/float64(base.Quantile(0.99))
	cpu := ""
	if base.CPUPerCall() > 0 && other.CPUPerCall() > 0 {
		cpu = fmt.Sprintf(" %14s", "CPU per call")
	}
	fmt.Printf("%-9s %10s %10s %10s%s\n", label, "rps", "p50", "p99", cpu)
	row := func(name string, r *loadgen.Result) {
		if cpu != "" {
			fmt.Printf("%-9s %10.0f %10v %10v %14v\n", name, r.RPS(), r.Quantile(0.5), r.Quantile(0.99), r.CPUPerCall().Round(10*time.Nanosecond))
			return
		}
		fmt.Printf("%-9s %10.0f %10v %10v\n", name, r.RPS(), r.Quantile(0.5), r.Quantile(0.99))
	}
	row(baseName, base)
	row(otherName, other)
	if cpu != "" {
		fmt.Printf("%-9s %9.2fx %9.2fx %9.2fx %13.2fx\n", "ratio", tput, p50, p99, float64(other.CPUPerCall())/float64(base.CPUPerCall()))
	} else {
		fmt.Printf("%-9s %9.2fx %9.2fx %9.2fx\n", "ratio", tput, p50, p99)
	}
	if minTput > 0 {
		fmt.Printf("targets: throughput ratio >= %.2f: %s; p99 ratio <= %.2f: %s\n", minTput, verdict(tput >= minTput), maxP99, verdict(p99 <= maxP99))
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// request is a Check as Envoy sends it for policy: with client's Basic
// credentials (application mode), or none when client is empty.
func request(policy, client string) *authv3.CheckRequest {
	headers := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/orders/42", ":scheme": "https",
		"user-agent": "load/1.0", "accept": "application/json", "x-request-id": "6f1b3d2e-8c2a-4f0e-9b1d-1a2b3c4d5e6f",
		"x-forwarded-proto": "https", "x-envoy-expected-rq-timeout-ms": "15000",
	}
	if client != "" {
		headers["authorization"] = loadgen.Basic(client)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": policy},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1234567890", Method: "GET", Host: "api.example.com", Path: "/orders/42", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: headers,
		}},
	}}
}

func checkOnce(addr string, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), req)
	if err == nil && resp.GetOkResponse() == nil {
		err = fmt.Errorf("denied: %s", resp.GetDeniedResponse().GetBody())
	}
	return resp, err
}

func dial(addr string, n int) ([]*grpc.ClientConn, error) {
	var conns []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		c.Close()
	}
}
