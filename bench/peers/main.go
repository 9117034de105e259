// Command peers measures extauthz's HTTP mode side by side with Ory
// Oathkeeper's decisions API — the one open-source peer that does
// application mode: its oauth2_client_credentials authenticator exchanges
// the caller's Basic credentials at a token endpoint and caches the token.
// Both run against the same test IdP, each pinned to CPU 0 with GOMAXPROCS
// 1 when taskset is there, the load on the other CPUs, in alternating
// rounds. It prints throughput and latency on cache hits, then the cold
// path: a client's first request, less the IdP's own time. `make
// bench-peers` runs it; it is not part of make test.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/extauthz/extauthz/internal/testidp"
)

func main() {
	bin := flag.String("bin", "bin/extauthz", "the extauthz binary")
	okBin := flag.String("oathkeeper", "bin/tools/oathkeeper", "the Oathkeeper binary (scripts/oathkeeper.sh builds it)")
	clients := flag.Int("clients", 8, "concurrent clients, each with its own connection and credentials")
	rounds := flag.Int("rounds", 3, "rounds per server, alternating")
	duration := flag.Duration("duration", 5*time.Second, "length of a round")
	cold := flag.Int("cold", 200, "clients whose first request measures the cold path")
	flag.Parse()
	if err := run(*bin, *okBin, *clients, *rounds, *duration, *cold); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

// extauthzConfig is application mode in HTTP mode, the policy named by the
// path: what Oathkeeper's rule below does, plus the token forwarded.
const extauthzConfig = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
log: {level: info}
policies:
  web:
    url: %[1]s
    forwardHeaders: {X-User: sub}
`

// oathkeeperConfig enables the oauth2_client_credentials authenticator with
// its token cache, the allow authorizer and a header mutator that sets the
// subject, as the decisions API answers it.
const oathkeeperConfig = `
log: {level: error}
serve:
  api: {host: 127.0.0.1, port: %[2]d}
  proxy: {host: 127.0.0.1, port: %[3]d}
access_rules:
  repositories: ["file://%[4]s"]
authenticators:
  oauth2_client_credentials:
    enabled: true
    config:
      token_url: %[1]s
      cache: {enabled: true, max_tokens: 100000}
authorizers:
  allow: {enabled: true}
mutators:
  header:
    enabled: true
    config:
      headers: {X-User: "{{ print .Subject }}"}
`

const oathkeeperRules = `[{
  "id": "orders",
  "match": {"url": "<http|https>://<.*>/<.*>", "methods": ["GET"]},
  "authenticators": [{"handler": "oauth2_client_credentials"}],
  "authorizer": {"handler": "allow"},
  "mutators": [{"handler": "header"}]
}]`

func run(bin, okBin string, clients, rounds int, duration time.Duration, cold int) error {
	if _, err := os.Stat(okBin); err != nil {
		return fmt.Errorf("%s: %w (scripts/oathkeeper.sh builds it)", okBin, err)
	}
	idp, err := testidp.New(testidp.Options{FastSigning: true, NoLog: true,
		AnyClient: &testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin"}}})
	if err != nil {
		return err
	}
	defer idp.Close()
	dir, err := os.MkdirTemp("", "extauthz-peers")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pin := pinning()

	// extauthz
	cfg := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, extauthzConfig, idp.TokenURL), 0o600); err != nil {
		return err
	}
	ext, err := startServer(pin, "serving", []string{bin, "serve", "--config", cfg})
	if err != nil {
		return err
	}
	defer ext.stop()
	extURL := "http://" + ext.addr + "/policy/web/orders/42"

	// Oathkeeper
	rules := filepath.Join(dir, "rules.json")
	if err := os.WriteFile(rules, []byte(oathkeeperRules), 0o600); err != nil {
		return err
	}
	apiPort, proxyPort := freePort(), freePort()
	okCfg := filepath.Join(dir, "oathkeeper.yaml")
	if err := os.WriteFile(okCfg, fmt.Appendf(nil, oathkeeperConfig, idp.TokenURL, apiPort, proxyPort, rules), 0o600); err != nil {
		return err
	}
	ok, err := startServer(pin, "", []string{okBin, "serve", "--config", okCfg})
	if err != nil {
		return err
	}
	defer ok.stop()
	okURL := fmt.Sprintf("http://127.0.0.1:%d/decisions/orders/42", apiPort)
	if err := waitReady(fmt.Sprintf("http://127.0.0.1:%d/health/ready", apiPort), ok); err != nil {
		return err
	}

	fmt.Printf("peers: %d clients, %d rounds of %v per server, alternating; servers %s\n", clients, rounds, duration, pin.describe())
	fmt.Printf("\ncache hits (each client its own Basic credentials, GET .../orders/42):\n")
	results, err := compare(rounds, clients, duration, target{"oathkeeper", okURL}, target{"extauthz", extURL})
	if err != nil {
		return err
	}
	// Each server asked once per client, in the first request of its
	// first round: every other request was a cache hit.
	if n := idp.Requests(); n != int64(2*clients) {
		return fmt.Errorf("the IdP had %d token requests, want %d: a server did not cache", n, 2*clients)
	}
	o, e := results[0], results[1]
	fmt.Printf("%-11s %10s %10s %10s\n", "server", "rps", "p50", "p99")
	fmt.Printf("%-11s %10.0f %10v %10v\n", "oathkeeper", o.rps(), o.quantile(0.5), o.quantile(0.99))
	fmt.Printf("%-11s %10.0f %10v %10v\n", "extauthz", e.rps(), e.quantile(0.5), e.quantile(0.99))
	fmt.Printf("extauthz does %.1fx Oathkeeper's throughput, at %.2fx its p50 and %.2fx its p99\n",
		e.rps()/o.rps(), float64(e.quantile(0.5))/float64(o.quantile(0.5)), float64(e.quantile(0.99))/float64(o.quantile(0.99)))

	fmt.Printf("\ncold path: the first request of %d new clients each, one at a time, less the IdP's own time:\n", cold)
	idpTime, err := idpLatency(idp.TokenURL, cold)
	if err != nil {
		return err
	}
	for _, s := range []struct{ name, url string }{{"oathkeeper", okURL}, {"extauthz", extURL}} {
		lat, err := firstRequests(s.url, s.name, cold)
		if err != nil {
			return err
		}
		fmt.Printf("%-11s p50 %-9v p99 %-9v beyond the IdP's p50 of %v\n", s.name, (quantile(lat, 0.5) - idpTime).Round(time.Microsecond),
			(quantile(lat, 0.99) - idpTime).Round(time.Microsecond), idpTime.Round(time.Microsecond))
	}
	return nil
}

// pin runs servers on CPU 0 with one P when taskset is installed and there
// are CPUs left for the load.
type pin struct{ taskset string }

func pinning() pin {
	p, err := exec.LookPath("taskset")
	if err != nil || runtimeCPUs() < 2 {
		return pin{}
	}
	return pin{p}
}

func (p pin) describe() string {
	if p.taskset == "" {
		return "unpinned (no taskset, or one CPU)"
	}
	return "pinned to CPU 0, GOMAXPROCS=1"
}

func (p pin) command(argv []string) *exec.Cmd {
	if p.taskset != "" {
		argv = append([]string{p.taskset, "-c", "0"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if p.taskset != "" {
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	}
	return cmd
}

type server struct {
	cmd  *exec.Cmd
	addr string // extauthz's HTTP address
	logs *strings.Builder
	mu   sync.Mutex
	done chan struct{}
}

func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// startServer starts argv; with serving set, it waits for extauthz's
// "serving" log line and takes the HTTP address from it.
func startServer(p pin, serving string, argv []string) (*server, error) {
	cmd := p.command(argv)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, logs: &strings.Builder{}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			s.mu.Unlock()
			if serving != "" && strings.Contains(line, `"msg":"serving"`) {
				if _, rest, ok := strings.Cut(line, `"http_address":"`); ok {
					a, _, _ := strings.Cut(rest, `"`)
					addr <- a
				}
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if serving == "" {
		return s, nil
	}
	select {
	case s.addr = <-addr:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited:\n%s", argv[0], s.logs.String())
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("%s did not start", argv[0])
	}
}

func waitReady(url string, s *server) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			s.mu.Lock()
			defer s.mu.Unlock()
			return fmt.Errorf("oathkeeper exited:\n%s", s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("oathkeeper did not become ready")
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// result is one server's measurements.
type result struct {
	latencies []time.Duration
	elapsed   time.Duration
	errors    atomic.Int64
}

func (r *result) rps() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

func (r *result) quantile(q float64) time.Duration { return quantile(r.latencies, q) }

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)].Round(time.Microsecond)
}

type target struct{ name, url string }

func basic(id string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":s3cret"))
}

// get sends one GET with client's credentials and reports a 200.
func get(client *http.Client, url, id string) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", basic(id))
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// measure runs closed-loop requests to t from n clients for d, after one
// request each (the token fetched, the connection made).
func measure(t target, n int, d time.Duration) (*result, error) {
	httpClients := make([]*http.Client, n)
	for w := range n {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
		defer tr.CloseIdleConnections()
		httpClients[w] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
		if !get(httpClients[w], t.url, fmt.Sprintf("client-%d", w)) {
			return nil, fmt.Errorf("%s denied client-%d", t.name, w)
		}
	}
	res := &result{}
	per := make([][]time.Duration, n)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			id := fmt.Sprintf("client-%d", w)
			lat := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(deadline) {
				began := time.Now()
				ok := get(httpClients[w], t.url, id)
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
	for _, l := range per {
		res.latencies = append(res.latencies, l...)
	}
	slices.Sort(res.latencies)
	return res, nil
}

func compare(rounds, clients int, duration time.Duration, targets ...target) ([]*result, error) {
	results := make([]*result, len(targets))
	for i := range results {
		results[i] = &result{}
	}
	for r := range rounds {
		for i, t := range targets {
			res, err := measure(t, clients, duration)
			if err != nil {
				return nil, err
			}
			if errs := res.errors.Load(); errs > 0 {
				return nil, fmt.Errorf("%s: %d requests failed or were denied", t.name, errs)
			}
			fmt.Printf("  round %d %-11s %9.0f rps  p50 %-9v p99 %v\n", r+1, t.name, res.rps(), res.quantile(0.5), res.quantile(0.99))
			results[i].latencies = append(results[i].latencies, res.latencies...)
			results[i].elapsed += res.elapsed
		}
	}
	for _, r := range results {
		slices.Sort(r.latencies)
	}
	return results, nil
}

// idpLatency is the median time of a token request straight to the IdP.
func idpLatency(tokenURL string, n int) (time.Duration, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	var lat []time.Duration
	for i := range n {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, tokenURL,
			strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(fmt.Sprintf("direct-%d", i), "s3cret")
		began := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(began))
	}
	slices.Sort(lat)
	return quantile(lat, 0.5), nil
}

// firstRequests times the first request of n new clients, one at a time.
func firstRequests(url, name string, n int) ([]time.Duration, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	var lat []time.Duration
	for i := range n {
		began := time.Now()
		if !get(client, url, fmt.Sprintf("%s-cold-%d", name, i)) {
			return nil, fmt.Errorf("%s denied a new client", name)
		}
		lat = append(lat, time.Since(began))
	}
	slices.Sort(lat)
	return lat, nil
}

func runtimeCPUs() int { return runtime.NumCPU() }
