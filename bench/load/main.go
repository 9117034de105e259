// Command load measures extauthz against a no-op ext_authz server with the
// same load generator in the same run: closed-loop gRPC Checks from a fixed
// number of clients, in alternating rounds, each server on the same
// machine. It prints requests per second, p50 and p99 for both and their
// ratios; then the same for a DPoP policy against a Bearer one (gateway
// mode, the same token cache: the difference is the proof signed per
// request); then the memory extauthz holds per cached client, in a fresh
// process each, with the in-process tier alone and with Redis behind it.
// `make bench` runs it.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

// Targets, on the cache-hit path.
const (
	minThroughputRatio = 0.85
	maxP99Ratio        = 1.3
)

func main() {
	bin := flag.String("bin", "bin/extauthz", "the extauthz binary")
	noopBin := flag.String("noop", "bin/noop", "the no-op ext_authz server")
	clients := flag.Int("clients", 8, "concurrent clients, each with its own connection")
	rounds := flag.Int("rounds", 3, "rounds per server, alternating")
	duration := flag.Duration("duration", 5*time.Second, "length of a round")
	cached := flag.Int("cached", 20_000, "application-mode clients to cache for the memory figures; 0 to skip")
	flag.Parse()
	if err := run(*bin, *noopBin, *clients, *rounds, *duration, *cached); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

const configTemplate = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0"}
log: {level: info}
store: {maxEntries: %[1]d}
policies:
  app:                     # application mode, a claims expression, two forwarded headers
    url: %[2]s
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    claims: Equals(` + "`grp`, `admin`" + `) && Contains(` + "`roles`, `write`" + `)
  bearer:                  # gateway mode, Bearer tokens
    url: %[2]s
    clientID: gw
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp}
  bound:                   # the same with DPoP: a proof per request
    url: %[2]s
    clientID: gw
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp}
    dpop: {algorithm: ES256}
`

func run(bin, noopBin string, clients, rounds int, duration time.Duration, cached int) error {
	idp, err := testidp.New(testidp.Options{
		FastSigning: true,
		AnyClient: &testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin", "roles": []any{"read", "write"},
			// about 700 bytes of token, as IdPs issue them
			"scope": strings.Repeat("orders.read ", 22) + "orders.write"}},
	})
	if err != nil {
		return err
	}
	defer idp.Close()
	dir, err := os.MkdirTemp("", "extauthz-load")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(configTemplate, max(2*cached, 1000), idp.TokenURL)), 0o600); err != nil {
		return err
	}
	ext, err := harness.Start(bin, cfg)
	if err != nil {
		return err
	}
	defer ext.Stop()
	noop, stopNoop, err := startNoop(noopBin)
	if err != nil {
		return err
	}
	defer stopNoop()

	// Warm extauthz's cache for the clients the load uses.
	for _, policy := range []string{"app", "bearer", "bound"} {
		if _, err := checkOnce(ext.GRPCAddress, request(policy, "client-0")); err != nil {
			return fmt.Errorf("warm-up of %s: %w", policy, err)
		}
	}
	fmt.Printf("load: %d clients, %d rounds of %v per server, alternating; %s, %d CPUs, GOMAXPROCS %d\n",
		clients, rounds, duration, runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	results, err := compare(rounds, clients, duration,
		target{"no-op", noop, request("app", "client-0")}, target{"extauthz", ext.GRPCAddress, request("app", "client-0")})
	if err != nil {
		return err
	}
	n, e := results[0], results[1]
	tput, p99 := e.rps()/n.rps(), float64(e.quantile(0.99))/float64(n.quantile(0.99))
	fmt.Printf("\n%-9s %10s %10s %10s\n", "server", "rps", "p50", "p99")
	fmt.Printf("%-9s %10.0f %10v %10v\n", "no-op", n.rps(), n.quantile(0.5), n.quantile(0.99))
	fmt.Printf("%-9s %10.0f %10v %10v\n", "extauthz", e.rps(), e.quantile(0.5), e.quantile(0.99))
	fmt.Printf("%-9s %9.2fx %9.2fx %9.2fx\n", "ratio", tput, float64(e.quantile(0.5))/float64(n.quantile(0.5)), p99)
	fmt.Printf("targets: throughput ratio >= %.2f: %s; p99 ratio <= %.2f: %s\n",
		minThroughputRatio, verdict(tput >= minThroughputRatio), maxP99Ratio, verdict(p99 <= maxP99Ratio))
	if errs := e.errors.Load() + n.errors.Load(); errs > 0 {
		return fmt.Errorf("%d checks failed or were denied", errs)
	}

	fmt.Printf("\nDPoP against Bearer, gateway mode, cache hits:\n")
	results, err = compare(rounds, clients, duration,
		target{"bearer", ext.GRPCAddress, request("bearer", "")}, target{"dpop", ext.GRPCAddress, request("bound", "")})
	if err != nil {
		return err
	}
	b, d := results[0], results[1]
	fmt.Printf("%-9s %10s %10s %10s\n", "policy", "rps", "p50", "p99")
	fmt.Printf("%-9s %10.0f %10v %10v\n", "bearer", b.rps(), b.quantile(0.5), b.quantile(0.99))
	fmt.Printf("%-9s %10.0f %10v %10v\n", "dpop", d.rps(), d.quantile(0.5), d.quantile(0.99))
	fmt.Printf("%-9s %9.2fx %9.2fx %9.2fx\n", "ratio", d.rps()/b.rps(), float64(d.quantile(0.5))/float64(b.quantile(0.5)), float64(d.quantile(0.99))/float64(b.quantile(0.99)))
	fmt.Printf("DPoP signs one proof per Check: its throughput is bounded by signatures per second per core (make bench: BenchmarkES256Sign).\n")
	if errs := b.errors.Load() + d.errors.Load(); errs > 0 {
		return fmt.Errorf("%d checks failed or were denied", errs)
	}
	if cached > 0 {
		return memoryFigures(bin, dir, idp.TokenURL, cached, clients)
	}
	return nil
}

// Memory: a policy as most application-mode users write one — a claims
// expression, one forwarded claim, a username for access logs — and a
// token of about 700 bytes (the padding claim), in a process of its own.
const memoryTemplate = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0"}
log: {level: info}
store:
  maxEntries: %[1]d
%[3]s
policies:
  mem:
    url: %[2]s
    forwardHeaders: {X-Group: grp}
    claims: Equals(` + "`grp`, `admin`" + `)
    usernameClaim: sub
`

// memoryTarget is the resident memory a cached client may cost.
const memoryTarget = 2048

// memoryFigures caches n application-mode clients in a fresh extauthz, once
// with the in-process tier alone and once with Redis behind it when
// redis-server is installed, and reports resident bytes per cached client.
func memoryFigures(bin, dir, tokenURL string, n, clients int) error {
	fmt.Printf("\nmemory: %d application-mode clients, no GOGC or GOMEMLIMIT set, resident-set growth per cached client:\n", n)
	perClient, tokenLen, err := memory(bin, filepath.Join(dir, "memory.yaml"), fmt.Sprintf(memoryTemplate, 2*n, tokenURL, ""), n, clients)
	if err != nil {
		return err
	}
	fmt.Printf("  memory tier          %6d bytes per client (a %d-byte JWT); target <= %d: %s\n", perClient, tokenLen, memoryTarget, verdict(perClient <= memoryTarget))
	goDefault, _, err := memory(bin, filepath.Join(dir, "memory.yaml"), fmt.Sprintf(memoryTemplate, 2*n, tokenURL, ""), n, clients, "GOGC=100")
	if err != nil {
		return err
	}
	fmt.Printf("  the same, GOGC=100   %6d bytes per client (Go's default; extauthz's own is 25)\n", goDefault)
	redisAddr, stop, err := startRedis(dir)
	if err != nil {
		fmt.Printf("  memory + Redis       skipped: %v\n", err)
		return nil
	}
	defer stop()
	redisYAML := "  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n  redis: {endpoints: [\"" + redisAddr + "\"], timeoutMillis: 1000}"
	perClient, _, err = memory(bin, filepath.Join(dir, "memory-redis.yaml"), fmt.Sprintf(memoryTemplate, 2*n, tokenURL, redisYAML), n, clients)
	if err != nil {
		return err
	}
	fmt.Printf("  memory + Redis       %6d bytes per client in extauthz (Redis holds the sealed copies)\n", perClient)
	return nil
}

// startRedis runs redis-server on a free loopback port, without persistence.
func startRedis(dir string) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errors.New("redis-server is not installed (make deps)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("redis-server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// target is a server and the Check the load sends it.
type target struct {
	name, addr string
	req        *authv3.CheckRequest
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
			res, err := measure(t.addr, t.req, clients, duration)
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
			}
			results[i].add(res)
			fmt.Printf("  round %d %-9s %9.0f rps  p50 %-9v p99 %v\n", r+1, t.name, res.rps(), res.quantile(0.5), res.quantile(0.99))
		}
	}
	return results, nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// memory starts extauthz with config (and env), caches n application-mode
// clients, and returns its resident-set growth per client and the token's
// length.
func memory(bin, cfgPath, config string, n, clients int, env ...string) (int64, int, error) {
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return 0, 0, err
	}
	ext, err := harness.Start(bin, cfgPath, env...)
	if err != nil {
		return 0, 0, err
	}
	defer ext.Stop()
	// One client first: what every process holds once (code paths warmed,
	// a policy compiled, connections made) is not a cached client's.
	first, err := checkOnce(ext.GRPCAddress, request("mem", "cached-0"))
	if err != nil {
		return 0, 0, err
	}
	tokenLen := len(strings.TrimPrefix(first.GetOkResponse().GetHeaders()[0].GetHeader().GetValue(), "Bearer "))
	conns, err := dial(ext.GRPCAddress, clients)
	if err != nil {
		return 0, 0, err
	}
	defer closeAll(conns)
	before, err := rss(ext.PID())
	if err != nil {
		return 0, 0, err
	}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			client := authv3.NewAuthorizationClient(conns[w])
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				resp, err := client.Check(context.Background(), request("mem", fmt.Sprintf("cached-%d", i)))
				if err != nil || resp.GetOkResponse() == nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return 0, 0, fmt.Errorf("%d of %d cold checks failed", f, n)
	}
	after, err := rss(ext.PID())
	if err != nil {
		return 0, 0, err
	}
	return (after - before) / int64(n), tokenLen, nil
}

// rss reads a process's resident set size.
func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func startNoop(bin string) (string, func(), error) {
	cmd := exec.Command(bin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		stop()
		return "", nil, fmt.Errorf("the no-op server said %q: %v", line, err)
	}
	return addr, stop, nil
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

// result is one server's measurements.
type result struct {
	latencies []time.Duration
	elapsed   time.Duration
	errors    atomic.Int64
}

func (r *result) add(o *result) {
	r.latencies = append(r.latencies, o.latencies...)
	r.elapsed += o.elapsed
	r.errors.Add(o.errors.Load())
	slices.Sort(r.latencies)
}

func (r *result) rps() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

func (r *result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(int(q*float64(len(r.latencies))), len(r.latencies)-1)].Round(time.Microsecond)
}

// measure runs closed-loop Checks of req from n clients for d.
func measure(addr string, req *authv3.CheckRequest, n int, d time.Duration) (*result, error) {
	conns, err := dial(addr, n)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	// One call per connection first, so that connecting is not measured.
	for _, c := range conns {
		if _, err := authv3.NewAuthorizationClient(c).Check(context.Background(), req); err != nil {
			return nil, err
		}
	}
	res := &result{}
	per := make([][]time.Duration, n)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			client := authv3.NewAuthorizationClient(conns[w])
			lat := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(deadline) {
				began := time.Now()
				resp, err := client.Check(context.Background(), req)
				lat = append(lat, time.Since(began))
				if err != nil || resp.GetOkResponse() == nil {
					res.errors.Add(1)
				}
			}
			per[w] = lat
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, l := range per {
		res.latencies = append(res.latencies, l...)
	}
	slices.Sort(res.latencies)
	return res, nil
}
