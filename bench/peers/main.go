// Command peers measures extauthz's HTTP mode side by side with Ory
// Oathkeeper's decisions API — the one open-source peer that does
// application mode: its oauth2_client_credentials authenticator exchanges
// the caller's Basic credentials at a token endpoint and caches the token.
// Both run against the same test IdP, each pinned to CPU 0 with GOMAXPROCS
// 1 when taskset is there, the load on the other CPUs (loadgen), in alternating
// rounds. It prints throughput and latency on cache hits, then the cold
// path: a client's first request, less the IdP's own time. `make
// bench-peers` runs it; it is not part of make test.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/extauthz/extauthz/bench/internal/loadgen"
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
	if ran, code := loadgen.PinSelf(); ran {
		os.Exit(code)
	}
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
	pin := loadgen.NewPinning(dir)

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

	fmt.Printf("peers: %d clients, %d rounds of %v per server, alternating; %s\n", clients, rounds, duration, pin.Describe())
	fmt.Printf("\ncache hits (each client its own Basic credentials, GET .../orders/42):\n")
	results, err := loadgen.Compare(rounds, clients, duration,
		loadgen.HTTPTarget("oathkeeper", okURL, ok.cmd.Process.Pid), loadgen.HTTPTarget("extauthz", extURL, ext.cmd.Process.Pid))
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
	fmt.Printf("%-11s %10.0f %10v %10v\n", "oathkeeper", o.RPS(), o.Quantile(0.5), o.Quantile(0.99))
	fmt.Printf("%-11s %10.0f %10v %10v\n", "extauthz", e.RPS(), e.Quantile(0.5), e.Quantile(0.99))
	fmt.Printf("extauthz does %.1fx Oathkeeper's throughput, at %.2fx its p50 and %.2fx its p99\n",
		e.RPS()/o.RPS(), float64(e.Quantile(0.5))/float64(o.Quantile(0.5)), float64(e.Quantile(0.99))/float64(o.Quantile(0.99)))

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
		fmt.Printf("%-11s p50 %-9v p99 %-9v beyond the IdP's p50 of %v\n", s.name, (loadgen.Quantile(lat, 0.5) - idpTime).Round(time.Microsecond),
			(loadgen.Quantile(lat, 0.99) - idpTime).Round(time.Microsecond), idpTime.Round(time.Microsecond))
	}
	return nil
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
func startServer(p loadgen.Pinning, serving string, argv []string) (*server, error) {
	bin, err := p.Wrap(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, argv[1:]...)
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
	return loadgen.Quantile(lat, 0.5), nil
}

// firstRequests times the first request of n new clients, one at a time.
func firstRequests(url, name string, n int) ([]time.Duration, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	var lat []time.Duration
	for i := range n {
		began := time.Now()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", loadgen.Basic(fmt.Sprintf("%s-cold-%d", name, i)))
		if !loadgen.Get(client, req) {
			return nil, fmt.Errorf("%s denied a new client", name)
		}
		lat = append(lat, time.Since(began))
	}
	slices.Sort(lat)
	return lat, nil
}
