package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/bench/internal/loadgen"
	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

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
func memoryFigures(bin, dir string, n, clients int) error {
	idp, err := testidp.New(testidp.Options{
		FastSigning: true, NoLog: true,
		AnyClient: &testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin",
			// about 700 bytes of token, as IdPs issue them
			"scope": strings.Repeat("orders.read ", 22) + "orders.write"}},
	})
	if err != nil {
		return err
	}
	defer idp.Close()
	tokenURL := idp.TokenURL
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
	fmt.Printf("  the same, GOGC=100   %6d bytes per client (Go's default, set in the environment: extauthz's own tuning steps aside)\n", goDefault)
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
	// Each client twice: its token fetched, then served from memory, as a
	// client in use is.
	for _, pass := range []string{"cold", "warm"} {
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
			return 0, 0, fmt.Errorf("%d of %d %s checks failed", f, n, pass)
		}
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

// redisTemplate serves application mode from a Redis tier with an
// in-process tier of one entry: the load's clients take turns evicting one
// another, so every Check reads Redis.
const redisTemplate = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0"}
log: {level: info}
store:
  maxEntries: %[1]d
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["%[3]s"], timeoutMillis: 1000}
policies:
  app:
    url: %[2]s
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    claims: Equals(` + "`grp`, `admin`" + `) && Contains(` + "`roles`, `write`" + `)
`

// redisHits measures Checks served from the Redis tier (the in-process
// tier cold) against the same Checks served from memory, each client with
// its own credentials.
func redisHits(bin, dir, tokenURL string, clients, rounds int, duration time.Duration) error {
	fmt.Printf("\nRedis-tier hits (the in-process tier holds one token, so every Check reads Redis) against memory-tier hits:\n")
	addr, stopRedis, err := startRedis(dir)
	if err != nil {
		fmt.Printf("  skipped: %v\n", err)
		return nil
	}
	defer stopRedis()
	start := func(name string, maxEntries int) (*harness.Process, error) {
		cfg := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(redisTemplate, maxEntries, tokenURL, addr)), 0o600); err != nil {
			return nil, err
		}
		return harness.Start(bin, cfg)
	}
	cold, err := start("redis-cold", 1)
	if err != nil {
		return err
	}
	defer cold.Stop()
	warm, err := start("redis-warm", 1000)
	if err != nil {
		return err
	}
	defer warm.Stop()
	perClient := func(name string, p *harness.Process) loadgen.Target {
		return loadgen.Target{Name: name, PID: p.PID(), Client: func(w int) (func() bool, func(), error) {
			return grpcTarget("", p.GRPCAddress, 0, request("app", fmt.Sprintf("client-%d", w))).Client(w)
		}}
	}
	redisT, memoryT := perClient("redis", cold), perClient("memory", warm)
	results, err := loadgen.Compare(rounds, clients, duration, memoryT, redisT)
	if err != nil {
		return err
	}
	report("tier", results[0], results[1], "memory", "redis", 0, 0)
	return nil
}
