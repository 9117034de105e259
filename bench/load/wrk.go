package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/bench/internal/loadgen"
	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

// Targets of issue 22 for HTTP mode under wrk, against the no-op.
const (
	minWrkThroughputRatio = 0.95
	maxWrkP99Ratio        = 1.2
)

// wrkTemplate is HTTP mode as the Go harness measures it (the web policy: a
// claims expression, one forwarded header), with an admin token so that
// /debug/pprof/ is served on the admin address.
const wrkTemplate = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0", admin: {token: %[2]q}}
log: {level: info}
policies:
  web:
    url: %[1]s
    forwardHeaders: {X-Group: grp}
    claims: Equals(` + "`grp`, `admin`" + `)
`

// wrkPath is what wrk asks for: HTTP mode's route for the web policy.
const wrkPath = "/policy/web/orders/42"

// wrkOptions say how to run the wrk section.
type wrkOptions struct {
	bin, noopBin string
	dir          string // for the configuration and the Lua script
	pin          loadgen.Pinning
	idp          *testidp.Server
	clients      int // cached clients whose credentials the script rotates
	connections  int
	rounds       int
	duration     time.Duration
	profile      string // where the CPU profile goes; empty for none
	noopPID      int    // set once the no-op runs
}

// wrkFigures measures HTTP mode and the no-op that writes the same headers
// as users do: wrk on its own core (-t1 -c32 --latency, a Lua script
// rotating Basic credentials over clients cached beforehand, so every
// request is a cache hit), each server alone on CPU 0 with one P,
// alternating rounds. Then one more extauthz round under a CPU profile.
// It fails only when a server does not start or answer; a wrk that is
// missing or does not run skips the section, with the reason.
func wrkFigures(o wrkOptions) error {
	fmt.Printf("\nwrk: HTTP mode and the no-op as users measure them\n")
	if o.rounds < 1 || o.clients < 1 || o.connections < 1 {
		fmt.Printf("  skipped: -rounds %d, -wrk-clients %d, -wrk-connections %d: each must be 1 or more\n", o.rounds, o.clients, o.connections)
		return nil
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		fmt.Printf("  skipped: wrk is not installed (scripts/deps.sh wrk installs the Debian package)\n")
		return nil
	}
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	adminToken := hex.EncodeToString(token)
	cfg := filepath.Join(o.dir, "wrk.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(wrkTemplate, o.idp.TokenURL, adminToken)), 0o600); err != nil {
		return err
	}
	pinnedBin, err := o.pin.Wrap(o.bin)
	if err != nil {
		return err
	}
	pinnedNoop, err := o.pin.Wrap(o.noopBin)
	if err != nil {
		return err
	}
	// Wrap hands back the binary itself when servers run unpinned.
	pinned := pinnedBin != o.bin
	ext, err := harness.Start(pinnedBin, cfg)
	if err != nil {
		return err
	}
	defer ext.Stop()
	extURL := "http://" + ext.HTTPAddress + wrkPath
	if err := warmHTTP(extURL, o.clients); err != nil {
		return fmt.Errorf("wrk warm-up: %w", err)
	}
	tokenLen, err := httpTokenLength(extURL)
	if err != nil {
		return err
	}
	noopAddrs, noopPID, stopNoop, err := startNoop(pinnedNoop, tokenLen)
	if err != nil {
		return err
	}
	defer stopNoop()
	script := filepath.Join(o.dir, "rotate.lua")
	if err := os.WriteFile(script, []byte(rotateScript(o.clients)), 0o600); err != nil {
		return err
	}

	secs := max(int((o.duration+time.Second-1)/time.Second), 1)
	r := wrkRunner{wrk: wrk, script: script, connections: o.connections}
	where := "servers and wrk unpinned (no taskset, or one CPU): ratios include how the scheduler placed them"
	if pinned {
		if taskset, err := exec.LookPath("taskset"); err == nil {
			r.taskset = taskset
			where = "each server on CPU 0 with GOMAXPROCS=1, wrk on CPU 1 (taskset)"
		}
	}
	fmt.Printf("  wrk -t1 -c%d -d%ds --latency, a Lua script rotating the Basic credentials of %d clients cached beforehand;\n  GET %s (application mode, a claims expression, X-Group forwarded); the no-op writes the same headers (a %d-byte token);\n  %d rounds per server, alternating; %s\n",
		o.connections, secs, o.clients, wrkPath, tokenLen, o.rounds, where)

	noop := wrkTarget{name: "no-op", url: "http://" + noopAddrs.http + wrkPath, pid: noopPID}
	// The no-op's handler on fasthttp, the server extauthz's plain HTTP/1
	// mode uses: the ratio to it is what extauthz's own work costs.
	fastNoop := wrkTarget{name: "fasthttp no-op", url: "http://" + noopAddrs.fasthttp + wrkPath, pid: noopPID}
	extauthz := wrkTarget{name: "extauthz", url: extURL, pid: ext.PID()}
	o.noopPID = noopPID
	// One short run each first: connections, the scheduler and the heap settle.
	for _, t := range []wrkTarget{noop, fastNoop, extauthz} {
		if _, err := r.run(t, 1); err != nil {
			fmt.Printf("  skipped: %v\n", err)
			return nil
		}
	}
	idpBefore := o.idp.Requests()
	var base, fast, other []*wrkResult
	for i := range o.rounds {
		for _, t := range []wrkTarget{noop, fastNoop, extauthz} {
			res, err := r.run(t, secs)
			if err != nil {
				fmt.Printf("  skipped: %v\n", err)
				return nil
			}
			line := fmt.Sprintf("  round %d %-14s %s", i+1, t.name, res)
			switch t.name {
			case noop.name:
				base = append(base, res)
			case fastNoop.name:
				fast = append(fast, res)
			default:
				b := base[len(base)-1]
				other = append(other, res)
				line += fmt.Sprintf("  ratios: rps %.2fx p50 %.2fx p99 %.2fx", res.rps/b.rps, ratio(res.p50, b.p50), ratio(res.p99, b.p99))
			}
			fmt.Println(strings.TrimRight(line, " ") + res.problems())
		}
	}
	if n := o.idp.Requests() - idpBefore; n > 0 {
		fmt.Printf("  note: extauthz asked the IdP for %d tokens during the rounds: not every request was a cache hit\n", n)
	} else {
		fmt.Printf("  every request a cache hit: the IdP was asked for no token during the rounds\n")
	}
	wrkReport(base, fast, other)
	if err := grpcLikeWrk(o, noopAddrs.grpc, ext); err != nil {
		return err
	}

	if o.profile != "" {
		if err := wrkProfile(r, extauthz, ext.AdminAddress, adminToken, secs, o.profile); err != nil {
			fmt.Printf("  profile: none: %v\n", err)
		}
	}
	return nil
}

// grpcLikeWrk measures gRPC Checks against the no-op under the load wrk
// puts on HTTP mode: as many connections, each a closed loop, rotating
// over the same cached clients' Basic credentials (policy web, the same
// process and cache), the generator on its own core. wrk speaks no gRPC:
// the Go generator stands in for it.
func grpcLikeWrk(o wrkOptions, noopAddr string, ext *harness.Process) error {
	fmt.Printf("\n  gRPC under the same load: %d connections, each a closed loop, rotating the Basic credentials of the %d clients (policy web)\n", o.connections, o.clients)
	reqs := make([]*authv3.CheckRequest, o.clients)
	for i := range reqs {
		reqs[i] = request("web", fmt.Sprintf("client-%d", i))
	}
	results, err := loadgen.Compare(o.rounds, o.connections, o.duration,
		rotatingGRPC("no-op", noopAddr, o.noopPID, reqs), rotatingGRPC("extauthz", ext.GRPCAddress, ext.PID(), reqs))
	if err != nil {
		return err
	}
	b, e := results[0], results[1]
	report("server", b, e, "no-op", "extauthz", 0, 0)
	p99 := float64(e.Quantile(0.99)) / float64(b.Quantile(0.99))
	fmt.Printf("target (issue 22): gRPC p99 ratio <= %.2f: %s\n", maxWrkP99Ratio, verdict(p99 <= maxWrkP99Ratio))
	return nil
}

// rotatingGRPC calls addr over one connection per client, each client
// sending reqs in turn from its own starting point.
func rotatingGRPC(name, addr string, pid int, reqs []*authv3.CheckRequest) loadgen.Target {
	return loadgen.Target{Name: name, PID: pid, Client: func(w int) (func() bool, func(), error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		client := authv3.NewAuthorizationClient(conn)
		next := w * 31
		return func() bool {
			next = (next + 1) % len(reqs)
			resp, err := client.Check(context.Background(), reqs[next])
			return err == nil && resp.GetOkResponse() != nil
		}, func() { conn.Close() }, nil
	}}
}

// warmHTTP asks url once for each of n clients, a few at a time, so that
// every client's token is cached before wrk runs.
func warmHTTP(url string, n int) error {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				req, err := http.NewRequest(http.MethodGet, url, nil)
				if err != nil {
					failed.Add(1)
					return
				}
				req.Header.Set("Authorization", loadgen.Basic(fmt.Sprintf("client-%d", i)))
				if !loadgen.Get(client, req) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	client.CloseIdleConnections()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d clients were not answered 200", f, n)
	}
	return nil
}

// rotateScript is a wrk script that sends the requests of n clients in
// turn, each with its own Basic credentials (client-<i>:s3cret, as the
// test IdP knows them). The requests are formatted once, in init: what wrk
// spends per request is a table lookup, not Lua string building.
func rotateScript(n int) string {
	var b strings.Builder
	b.WriteString("-- Generated by bench/load: rotates the Basic credentials of the cached clients.\nlocal credentials = {\n")
	for i := range n {
		fmt.Fprintf(&b, "  %q,\n", loadgen.Basic(fmt.Sprintf("client-%d", i)))
	}
	b.WriteString(`}
local requests = {}
local i = 0

function init(args)
  for k, c in ipairs(credentials) do
    requests[k] = wrk.format("GET", nil, {["Authorization"] = c, ["User-Agent"] = "wrk"})
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
`)
	return b.String()
}

// wrkTarget is a server wrk drives.
type wrkTarget struct {
	name, url string
	pid       int // for the server's CPU time
}

// wrkRunner runs wrk, pinned with taskset when set.
type wrkRunner struct {
	wrk, taskset, script string
	connections          int
}

// run runs wrk against t for secs seconds and parses what it printed.
func (r wrkRunner) run(t wrkTarget, secs int) (*wrkResult, error) {
	args := []string{"-t1", fmt.Sprintf("-c%d", r.connections), fmt.Sprintf("-d%ds", secs), "--latency", "-s", r.script, t.url}
	name := r.wrk
	if r.taskset != "" {
		name, args = r.taskset, append([]string{"-c", "1", r.wrk}, args...)
	}
	cmd := exec.Command(name, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	user, sys := loadgen.CPUTimes(t.pid)
	calls := loadgen.Syscalls(t.pid)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("wrk against %s: %w: %s%s", t.name, err, stderr.String(), out.String())
	}
	res, err := parseWrk(out.String())
	if err != nil {
		return nil, fmt.Errorf("wrk against %s: %w:\n%s", t.name, err, out.String())
	}
	if user+sys > 0 && res.requests > 0 {
		u, s := loadgen.CPUTimes(t.pid)
		res.cpuPerCall = (u + s - user - sys) / time.Duration(res.requests)
		res.userPerCall = (u - user) / time.Duration(res.requests)
	}
	if calls > 0 && res.requests > 0 {
		res.syscallsPerCall = float64(loadgen.Syscalls(t.pid)-calls) / float64(res.requests)
	}
	// A wrk near 100% of its core would be measuring itself.
	res.wrkCPU = float64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()) / float64(time.Duration(secs)*time.Second)
	return res, nil
}

// wrkResult is what one wrk run reported.
type wrkResult struct {
	rps        float64
	p50, p99   time.Duration
	requests   int64
	non2xx     int64
	sockErrors int64
	cpuPerCall time.Duration // the server's, from /proc; 0 if unknown
	// userPerCall is the part of cpuPerCall spent outside the kernel.
	userPerCall time.Duration
	// syscallsPerCall is the server's reads and writes per request (from
	// /proc/<pid>/io); 0 if unknown.
	syscallsPerCall float64
	wrkCPU          float64 // wrk's CPU time over the run's length
}

func (w *wrkResult) String() string {
	s := fmt.Sprintf("%9.0f rps  p50 %-9v p99 %-9v", w.rps, w.p50, w.p99)
	if w.cpuPerCall > 0 {
		s += fmt.Sprintf(" CPU per call %-7v (user %-7v)", w.cpuPerCall.Round(100*time.Nanosecond), w.userPerCall.Round(100*time.Nanosecond))
	}
	if w.syscallsPerCall > 0 {
		s += fmt.Sprintf(" syscalls per call %.2f", w.syscallsPerCall)
	}
	return s + fmt.Sprintf(" wrk CPU %3.0f%%", 100*w.wrkCPU)
}

// problems says what went wrong in the run, if anything did.
func (w *wrkResult) problems() string {
	var p []string
	if w.non2xx > 0 {
		p = append(p, fmt.Sprintf("%d answers not 2xx", w.non2xx))
	}
	if w.sockErrors > 0 {
		p = append(p, fmt.Sprintf("%d socket errors", w.sockErrors))
	}
	if len(p) == 0 {
		return ""
	}
	return "  WARNING: " + strings.Join(p, ", ")
}

var (
	wrkRPS       = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkRequests  = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkQuantile  = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.0+)?%\s+([0-9.]+[a-z]+)\s*$`)
	wrkNon2xx    = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocketErr = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk's report: Requests/sec, the 50% and 99% lines of its
// latency distribution (--latency), the request count, and the answers
// and socket errors it counted.
func parseWrk(out string) (*wrkResult, error) {
	res := &wrkResult{}
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return nil, errors.New("no Requests/sec line")
	}
	var err error
	if res.rps, err = strconv.ParseFloat(m[1], 64); err != nil {
		return nil, err
	}
	if m := wrkRequests.FindStringSubmatch(out); m != nil {
		res.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	quantiles := wrkQuantile.FindAllStringSubmatch(out, -1)
	for _, q := range quantiles {
		d, err := parseWrkDuration(q[2])
		if err != nil {
			return nil, err
		}
		if q[1] == "50" {
			res.p50 = d
		} else {
			res.p99 = d
		}
	}
	if res.p50 == 0 || res.p99 == 0 {
		return nil, errors.New("no 50% and 99% lines (wrk's --latency)")
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		res.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSocketErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			res.sockErrors += n
		}
	}
	return res, nil
}

// wrkUnits are the units wrk prints times in, longest suffix first.
var wrkUnits = []struct {
	suffix string
	unit   time.Duration
}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}

// parseWrkDuration reads a time as wrk prints it: 812.00us, 1.24ms, 2.01s.
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range wrkUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk's time %q: %w", s, err)
			}
			return time.Duration(v * float64(u.unit)).Round(time.Microsecond), nil
		}
	}
	return 0, fmt.Errorf("wrk's time %q has no unit", s)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// wrkReport prints the rounds' totals: throughput over every round, the
// median round's p50 and p99, and their ratios to the no-op, then the
// targets, which are against the net/http no-op (base) as issue 22 sets
// them; the ratios to the fasthttp no-op (fast) follow, for what
// extauthz's own work costs on the server it uses.
func wrkReport(base, fast, other []*wrkResult) {
	type summary struct {
		rps      float64
		p50, p99 time.Duration
		cpu      time.Duration
	}
	sum := func(rs []*wrkResult) summary {
		var s summary
		var requests int64
		var cpu time.Duration
		p50s, p99s := make([]time.Duration, len(rs)), make([]time.Duration, len(rs))
		for i, r := range rs {
			s.rps += r.rps / float64(len(rs)) // rounds are of equal length
			p50s[i], p99s[i] = r.p50, r.p99
			requests += r.requests
			cpu += r.cpuPerCall * time.Duration(r.requests)
		}
		s.p50, s.p99 = median(p50s), median(p99s)
		if requests > 0 {
			s.cpu = cpu / time.Duration(requests)
		}
		return s
	}
	b, f, e := sum(base), sum(fast), sum(other)
	fmt.Printf("  %-14s %10s %10s %10s %14s\n", "server", "rps", "p50", "p99", "CPU per call")
	for _, row := range []struct {
		name string
		s    summary
	}{{"no-op", b}, {"fasthttp no-op", f}, {"extauthz", e}} {
		fmt.Printf("  %-14s %10.0f %10v %10v %14v\n", row.name, row.s.rps, row.s.p50, row.s.p99, row.s.cpu.Round(100*time.Nanosecond))
	}
	ratios := func(name string, b summary) (tput, p50, p99 float64) {
		tput, p50, p99 = e.rps/b.rps, ratio(e.p50, b.p50), ratio(e.p99, b.p99)
		cpu := ""
		if b.cpu > 0 && e.cpu > 0 {
			cpu = fmt.Sprintf(" %13.2fx", ratio(e.cpu, b.cpu))
		}
		fmt.Printf("  %-14s %9.2fx %9.2fx %9.2fx%s\n", name, tput, p50, p99, cpu)
		return tput, p50, p99
	}
	tput, _, p99 := ratios("ratio", b)
	ratios("to fasthttp's", f)
	fmt.Printf("  (mean rps over the rounds; median round's p50 and p99; ratios of extauthz to the net/http no-op, then to the fasthttp no-op)\n")
	var tputs, p99s []float64
	for i := range other {
		tputs = append(tputs, other[i].rps/base[i].rps)
		p99s = append(p99s, ratio(other[i].p99, base[i].p99))
	}
	fmt.Printf("  per round: throughput %.2fx to %.2fx, p99 %.2fx to %.2fx\n", slices.Min(tputs), slices.Max(tputs), slices.Min(p99s), slices.Max(p99s))
	fmt.Printf("  targets (issue 22): throughput ratio >= %.2f: %s; p99 ratio <= %.2f: %s\n",
		minWrkThroughputRatio, verdict(tput >= minWrkThroughputRatio), maxWrkP99Ratio, verdict(p99 <= maxWrkP99Ratio))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// wrkProfile runs one more extauthz round while the admin address records
// a CPU profile of secs seconds, writes the profile to path and prints the
// top of it.
func wrkProfile(r wrkRunner, t wrkTarget, adminAddr, adminToken string, secs int, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	type fetched struct {
		data []byte
		err  error
	}
	done := make(chan fetched, 1)
	go func() {
		// wrk runs a second longer than the profile, which starts once
		// wrk has connected: the profile sees the load only.
		time.Sleep(300 * time.Millisecond)
		data, err := fetchProfile(adminAddr, adminToken, secs)
		done <- fetched{data, err}
	}()
	res, err := r.run(t, secs+1)
	p := <-done
	if err != nil {
		return err
	}
	fmt.Printf("  profiled round %-9s %s%s\n", t.name, res, res.problems())
	if p.err != nil {
		return p.err
	}
	if err := os.WriteFile(path, p.data, 0o644); err != nil {
		return err
	}
	fmt.Printf("\n  CPU profile of HTTP mode under wrk (%ds, that extra round): %s\n  (go tool pprof -top %s, or -http=: to browse it)\n", secs, path, path)
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no go command to print its top: %w", err)
	}
	out, err := exec.Command(goTool, "tool", "pprof", "-top", "-nodecount=15", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		fmt.Print("    ", line)
	}
	return nil
}

// fetchProfile asks the admin address for a CPU profile of secs seconds.
func fetchProfile(adminAddr, adminToken string, secs int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", adminAddr, secs), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the admin address answered %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	return data, nil
}
