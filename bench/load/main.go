// Command load measures extauthz against no-op servers with the same load
// generator in the same run: closed-loop calls from a fixed number of
// clients, one connection each, in alternating rounds, every server on the
// same machine — on CPU 0 with one P, the load on the other CPUs, when
// taskset is there (pin.go). It prints requests per second, p50, p99 and
// the server's CPU time per call, and their ratios, for
//   - gRPC Checks, cache hits, against a minimal no-op ext_authz server;
//   - HTTP mode, cache hits, against a net/http no-op that writes the same
//     two headers;
//   - a DPoP policy against a Bearer one (gateway mode, the same token
//     cache: the difference is the proof signed per request);
//   - hits from the Redis tier against hits from memory;
//
// then the memory extauthz holds per cached client, in a fresh process
// each, with the in-process tier alone and with Redis behind it; then HTTP
// mode and its no-op again, driven by wrk as users measure them, with a CPU
// profile of HTTP mode under that load kept in bin/bench, and gRPC Checks
// under the same load from the Go generator (wrk.go). `make bench` runs it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/extauthz/extauthz/bench/internal/loadgen"
	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

// Targets, on the cache-hit path.
const (
	minThroughputRatio     = 0.85
	maxP99Ratio            = 1.3
	minHTTPThroughputRatio = 0.9
	maxHTTPP99Ratio        = 1.2
)

func main() {
	bin := flag.String("bin", "bin/extauthz", "the extauthz binary")
	noopBin := flag.String("noop", "bin/noop", "the no-op ext_authz server")
	clients := flag.Int("clients", 8, "concurrent clients, each with its own connection")
	rounds := flag.Int("rounds", 5, "rounds per server, alternating")
	duration := flag.Duration("duration", 5*time.Second, "length of a round")
	cached := flag.Int("cached", 20_000, "application-mode clients to cache for the memory figures; 0 to skip")
	withWrk := flag.Bool("wrk", true, "drive HTTP mode and the no-op with wrk too, after the other figures (skipped, with the reason, when wrk is missing)")
	wrkOnly := flag.Bool("wrk-only", false, "run the wrk section alone")
	wrkClients := flag.Int("wrk-clients", 1000, "cached application-mode clients whose Basic credentials wrk rotates")
	wrkConns := flag.Int("wrk-connections", 32, "wrk's keep-alive connections (-c)")
	profile := flag.String("profile", "bin/bench/http-wrk.pprof", "where to write the CPU profile of HTTP mode under wrk's load; empty for none")
	flag.Parse()
	if ran, code := loadgen.PinSelf(); ran {
		os.Exit(code)
	}
	o := options{
		bin: *bin, noopBin: *noopBin, clients: *clients, rounds: *rounds, duration: *duration, cached: *cached,
		wrk: *withWrk || *wrkOnly, wrkOnly: *wrkOnly, wrkClients: *wrkClients, wrkConns: *wrkConns, profile: *profile,
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

const configTemplate = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
log: {level: info}
policies:
  app:                     # application mode, a claims expression, two forwarded headers
    url: %[1]s
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    claims: Equals(` + "`grp`, `admin`" + `) && Contains(` + "`roles`, `write`" + `)
  web:                     # HTTP mode: a claims expression, one forwarded header
    url: %[1]s
    forwardHeaders: {X-Group: grp}
    claims: Equals(` + "`grp`, `admin`" + `)
  bearer:                  # gateway mode, Bearer tokens
    url: %[1]s
    clientID: gw
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp}
  bound:                   # the same with DPoP: a proof per request
    url: %[1]s
    clientID: gw
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp}
    dpop: {algorithm: ES256}
`

// options are the command's flags.
type options struct {
	bin, noopBin    string
	clients, rounds int
	duration        time.Duration
	cached          int
	wrk, wrkOnly    bool
	wrkClients      int
	wrkConns        int
	profile         string
}

func run(o options) error {
	idp, err := testidp.New(testidp.Options{
		FastSigning: true,
		AnyClient:   &testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin", "roles": []any{"read", "write"}}},
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
	pin := loadgen.NewPinning(dir)
	if !o.wrkOnly {
		if err := loadFigures(o, dir, pin, idp); err != nil {
			return err
		}
	}
	if o.wrk {
		return wrkFigures(wrkOptions{
			bin: o.bin, noopBin: o.noopBin, dir: dir, pin: pin, idp: idp,
			clients: o.wrkClients, connections: o.wrkConns, rounds: o.rounds, duration: o.duration, profile: o.profile,
		})
	}
	return nil
}

// loadFigures measures with the Go load generator: gRPC and HTTP mode
// against the no-op servers, DPoP against Bearer, Redis-tier hits, then
// the memory per cached client.
func loadFigures(o options, dir string, pin loadgen.Pinning, idp *testidp.Server) error {
	bin, noopBin, clients, rounds, duration := o.bin, o.noopBin, o.clients, o.rounds, o.duration
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(configTemplate, idp.TokenURL)), 0o600); err != nil {
		return err
	}
	pinnedBin, err := pin.Wrap(bin)
	if err != nil {
		return err
	}
	pinnedNoop, err := pin.Wrap(noopBin)
	if err != nil {
		return err
	}
	ext, err := harness.Start(pinnedBin, cfg)
	if err != nil {
		return err
	}
	defer ext.Stop()

	// Warm extauthz's cache for the clients the load uses.
	for _, policy := range []string{"app", "bearer", "bound"} {
		if _, err := checkOnce(ext.GRPCAddress, request(policy, "client-0")); err != nil {
			return fmt.Errorf("warm-up of %s: %w", policy, err)
		}
	}
	// The HTTP no-op answers with a token as long as extauthz's.
	web, err := loadgen.Measure(loadgen.HTTPTarget("warm-up", "http://"+ext.HTTPAddress+"/policy/web/orders/42", 0), clients, 0)
	if err != nil || web.Errors.Load() > 0 {
		return fmt.Errorf("warm-up of web: %v", err)
	}
	tokenLen, err := httpTokenLength("http://" + ext.HTTPAddress + "/policy/web/orders/42")
	if err != nil {
		return err
	}
	noop, noopPID, stopNoop, err := startNoop(pinnedNoop, tokenLen)
	if err != nil {
		return err
	}
	defer stopNoop()

	fmt.Printf("load: %d clients, %d rounds of %v per server, alternating; %s, %d CPUs; %s\n",
		clients, rounds, duration, runtime.Version(), loadgen.CPUs(), pin.Describe())
	fmt.Printf("\ngRPC, application mode, cache hits:\n")
	results, err := loadgen.Compare(rounds, clients, duration,
		grpcTarget("no-op", noop.grpc, noopPID, request("app", "client-0")), grpcTarget("extauthz", ext.GRPCAddress, ext.PID(), request("app", "client-0")))
	if err != nil {
		return err
	}
	report("server", results[0], results[1], "no-op", "extauthz", minThroughputRatio, maxP99Ratio)

	fmt.Printf("\nHTTP mode, application mode, cache hits (GET /policy/web/..., each client its own Basic credentials):\n")
	results, err = loadgen.Compare(rounds, clients, duration,
		loadgen.HTTPTarget("no-op", "http://"+noop.http+"/policy/web/orders/42", noopPID), loadgen.HTTPTarget("extauthz", "http://"+ext.HTTPAddress+"/policy/web/orders/42", ext.PID()))
	if err != nil {
		return err
	}
	report("server", results[0], results[1], "no-op", "extauthz", minHTTPThroughputRatio, maxHTTPP99Ratio)

	fmt.Printf("\nDPoP against Bearer, gateway mode, cache hits:\n")
	results, err = loadgen.Compare(rounds, clients, duration,
		grpcTarget("bearer", ext.GRPCAddress, ext.PID(), request("bearer", "")), grpcTarget("dpop", ext.GRPCAddress, ext.PID(), request("bound", "")))
	if err != nil {
		return err
	}
	report("policy", results[0], results[1], "bearer", "dpop", 0, 0)
	fmt.Printf("DPoP signs one proof per Check: its throughput is bounded by signatures per second per core (make bench: BenchmarkES256Sign).\n")

	if err := redisHits(pinnedBin, dir, idp.TokenURL, clients, rounds, duration); err != nil {
		return err
	}
	if o.cached > 0 {
		free, err := pin.Free(bin)
		if err != nil {
			return err
		}
		return memoryFigures(free, dir, o.cached, clients)
	}
	return nil
}

// httpTokenLength asks extauthz's HTTP mode once and returns the length of
// the token it answers with.
func httpTokenLength(url string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth("client-0", "s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HTTP mode answered the load's client %d", resp.StatusCode)
	}
	return len(strings.TrimPrefix(resp.Header.Get("Authorization"), "Bearer ")), nil
}

// noopAddrs are the no-op's addresses: gRPC, net/http, fasthttp.
type noopAddrs struct{ grpc, http, fasthttp string }

// startNoop runs the no-op servers, the HTTP ones answering with a token of
// tokenLen bytes, and returns their addresses and its process id.
func startNoop(bin string, tokenLen int) (noopAddrs, int, func(), error) {
	cmd := exec.Command(bin, "-token", strconv.Itoa(tokenLen))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return noopAddrs{}, 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return noopAddrs{}, 0, nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addrs := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "listening "))
	if err != nil || len(addrs) != 3 {
		stop()
		return noopAddrs{}, 0, nil, fmt.Errorf("the no-op server said %q: %v", line, err)
	}
	return noopAddrs{addrs[0], addrs[1], addrs[2]}, cmd.Process.Pid, stop, nil
}
