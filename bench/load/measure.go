package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// result is one server's measurements.
type result struct {
	latencies []time.Duration
	elapsed   time.Duration
	errors    atomic.Int64
	cpu       time.Duration // the server's CPU time (user and system) over the round; 0 if unknown
}

func (r *result) add(o *result) {
	r.latencies = append(r.latencies, o.latencies...)
	r.elapsed += o.elapsed
	r.cpu += o.cpu
	r.errors.Add(o.errors.Load())
	slices.Sort(r.latencies)
}

// cpuPerCall is the server's CPU time per call: what a call costs it,
// whatever else the machine did meanwhile.
func (r *result) cpuPerCall() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.cpu / time.Duration(len(r.latencies))
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// Linux everywhere).
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time process pid has used, or 0 when it cannot
// be read (not Linux, or pid 0).
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	_, rest, ok := strings.Cut(string(data), ") ")
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * clockTick
}

func (r *result) rps() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

func (r *result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(int(q*float64(len(r.latencies))), len(r.latencies)-1)].Round(time.Microsecond)
}

// target is a server and how one client of the load calls it: client(w)
// returns client w's call, which reports whether it was allowed, and what
// to close when the round ends.
type target struct {
	name   string
	client func(w int) (call func() bool, closer func(), err error)
	pid    int // the server's process, for its CPU time; 0 if not measured
}

// grpcTarget sends req over one connection per client.
func grpcTarget(name, addr string, pid int, req *authv3.CheckRequest) target {
	return target{name: name, pid: pid, client: func(int) (func() bool, func(), error) {
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

// httpTarget sends GET url over one keep-alive connection per client, with
// client w's own Basic credentials.
func httpTarget(name, url string, pid int) target {
	return target{name: name, pid: pid, client: func(w int) (func() bool, func(), error) {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
		client := &http.Client{Transport: tr}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "client-%d:s3cret", w)))
		req.Header.Set("User-Agent", "load/1.0")
		return func() bool {
			resp, err := client.Do(req)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, tr.CloseIdleConnections, nil
	}}
}

// measure runs closed-loop calls of t from n clients for d.
func measure(t target, n int, d time.Duration) (*result, error) {
	calls := make([]func() bool, n)
	for w := range n {
		call, closer, err := t.client(w)
		if err != nil {
			return nil, err
		}
		defer closer()
		// One call first, so that connecting is not measured.
		if !call() {
			return nil, fmt.Errorf("%s: the first call failed", t.name)
		}
		calls[w] = call
	}
	res := &result{}
	per := make([][]time.Duration, n)
	cpu := cpuTime(t.pid)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(deadline) {
				began := time.Now()
				ok := calls[w]()
				lat = append(lat, time.Since(began))
				if !ok {
					res.errors.Add(1)
				}
			}
			per[w] = lat
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	if cpu > 0 {
		res.cpu = cpuTime(t.pid) - cpu
	}
	for _, l := range per {
		res.latencies = append(res.latencies, l...)
	}
	slices.Sort(res.latencies)
	return res, nil
}

// compare measures the targets in alternating rounds and returns their
// results in order.
func compare(rounds, clients int, duration time.Duration, targets ...target) ([]*result, error) {
	results := make([]*result, len(targets))
	for i := range results {
		results[i] = &result{}
	}
	for r := range rounds {
		for i, t := range targets {
			res, err := measure(t, clients, duration)
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
			}
			results[i].add(res)
			fmt.Printf("  round %d %-9s %9.0f rps  p50 %-9v p99 %v\n", r+1, t.name, res.rps(), res.quantile(0.5), res.quantile(0.99))
		}
	}
	for i, r := range results {
		if errs := r.errors.Load(); errs > 0 {
			return nil, fmt.Errorf("%s: %d calls failed or were denied", targets[i].name, errs)
		}
	}
	return results, nil
}

// report prints two results and their ratios, and whether the targets (0
// for none) are met.
func report(label string, base, other *result, baseName, otherName string, minTput, maxP99 float64) {
	tput, p50, p99 := other.rps()/base.rps(), float64(other.quantile(0.5))/float64(base.quantile(0.5)), float64(other.quantile(0.99))/float64(base.quantile(0.99))
	cpu := ""
	if base.cpuPerCall() > 0 && other.cpuPerCall() > 0 {
		cpu = fmt.Sprintf(" %14s", "CPU per call")
	}
	fmt.Printf("%-9s %10s %10s %10s%s\n", label, "rps", "p50", "p99", cpu)
	row := func(name string, r *result) {
		if cpu != "" {
			fmt.Printf("%-9s %10.0f %10v %10v %14v\n", name, r.rps(), r.quantile(0.5), r.quantile(0.99), r.cpuPerCall().Round(10*time.Nanosecond))
			return
		}
		fmt.Printf("%-9s %10.0f %10v %10v\n", name, r.rps(), r.quantile(0.5), r.quantile(0.99))
	}
	row(baseName, base)
	row(otherName, other)
	if cpu != "" {
		fmt.Printf("%-9s %9.2fx %9.2fx %9.2fx %13.2fx\n", "ratio", tput, p50, p99, float64(other.cpuPerCall())/float64(base.cpuPerCall()))
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
		headers["authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(client+":s3cret"))
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
