// Package redistest starts real Redis servers on loopback for tests: a single
// instance (optionally with ACL users or TLS), a three-master Cluster, and a
// master with a replica watched by three sentinels. Each is stopped when its
// test ends. When CI is set a missing redis-server fails the test; otherwise
// the test is skipped.
package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/testpki"
)

// readyTimeout bounds how long a server or topology may take to come up.
const readyTimeout = 20 * time.Second

// Binary returns the path of a Redis program, failing the test under CI and
// skipping it elsewhere when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: install redis-server, redis-sentinel and redis-tools (scripts/deps.sh does)", name)
		}
		t.Skipf("%s is missing: install redis-server, redis-sentinel and redis-tools to run this test", name)
	}
	return p
}

// Server is one running redis-server or redis-sentinel.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
	t    testing.TB
}

// Options configure Start.
type Options struct {
	// Config holds extra configuration lines, such as ACL users.
	Config []string
	// TLS serves TLS only, with these certificates.
	TLS *TLS
	// Sentinel starts redis-sentinel instead of redis-server.
	Sentinel bool
	// Port to listen on; a free one when zero.
	Port int
}

// Start runs a server on a free loopback port and waits until it accepts
// connections.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary(t, "redis-server")
	if o.Sentinel {
		bin = Binary(t, "redis-sentinel")
	}
	dir := t.TempDir()
	var lastErr error
	for range 5 { // a free port can be taken between choosing and binding it
		port := o.Port
		if port == 0 {
			port = FreePort(t)
		}
		s, err := start(t, bin, dir, port, o)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, port int, o Options) (*Server, error) {
	logFile := filepath.Join(dir, fmt.Sprintf("redis-%d.log", port))
	lines := []string{
		"bind 127.0.0.1",
		"protected-mode no",
		"daemonize no",
		"dir " + dir,
		"logfile " + logFile,
	}
	if o.Sentinel {
		lines = append(lines, fmt.Sprintf("port %d", port), "sentinel announce-ip 127.0.0.1")
	} else {
		lines = append(lines, `save ""`, "appendonly no", "repl-diskless-sync-delay 0")
		if o.TLS != nil {
			lines = append(lines, "port 0", fmt.Sprintf("tls-port %d", port),
				"tls-cert-file "+o.TLS.ServerCert, "tls-key-file "+o.TLS.ServerKey,
				"tls-ca-cert-file "+o.TLS.CA, "tls-auth-clients yes", "tls-replication yes")
		} else {
			lines = append(lines, fmt.Sprintf("port %d", port))
		}
	}
	lines = append(lines, o.Config...)
	conf := filepath.Join(dir, fmt.Sprintf("redis-%d.conf", port))
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, conf)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, cmd: cmd, done: make(chan struct{}), t: t}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	ready := "Ready to accept connections"
	if o.Sentinel {
		ready = "Sentinel ID is"
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		log, _ := os.ReadFile(logFile)
		switch {
		case strings.Contains(string(log), ready):
			t.Cleanup(s.Kill)
			return s, nil
		case strings.Contains(string(log), "Address already in use"):
			s.Kill()
			return nil, fmt.Errorf("port %d taken", port)
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited:\n%s", bin, log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("%s not ready after %v:\n%s", bin, readyTimeout, log)
		}
	}
}

// Kill stops the server at once, as a crash would.
func (s *Server) Kill() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Freeze stops the server without closing its connections (SIGSTOP), as a
// server stuck in a long command or a dead host behind a live socket looks;
// it resumes at the end of the test.
func (s *Server) Freeze() {
	_ = s.cmd.Process.Signal(syscall.SIGSTOP)
	s.t.Cleanup(func() { _ = s.cmd.Process.Signal(syscall.SIGCONT) })
}

// Log returns what the server logged.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, fmt.Sprintf("redis-%d.log", s.Port)))
	return string(b)
}

// FreePort returns a loopback port nothing listens on, at the time of asking.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Single starts a plain single instance.
func Single(t testing.TB) *Server { return Start(t, Options{}) }

// ACLUser is the user ACL starts: the default user is disabled.
const (
	ACLUser     = "extauthz"
	ACLPassword = "redis-s3cret"
)

// ACL starts a single instance that only ACLUser, with ACLPassword, may use.
func ACL(t testing.TB) *Server {
	return Start(t, Options{Config: []string{
		"user default off",
		fmt.Sprintf("user %s on >%s ~* &* +@all", ACLUser, ACLPassword),
	}})
}

// TLS holds the files of a test certificate authority and the PEM text of a
// client certificate it signed.
type TLS struct {
	CA, ServerCert, ServerKey          string // files
	CAPEM, ClientCertPEM, ClientKeyPEM string
}

// ClientConfig returns a client TLS configuration trusting the CA and
// presenting the client certificate.
func (c *TLS) ClientConfig(t testing.TB) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(c.CAPEM))
	pair, err := tls.X509KeyPair([]byte(c.ClientCertPEM), []byte(c.ClientKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// TLSServer starts a single instance that speaks only TLS and requires
// client certificates; the returned TLS holds what a client needs.
func TLSServer(t testing.TB) (*Server, *TLS) {
	t.Helper()
	c := NewTLS(t)
	return Start(t, Options{TLS: c}), c
}

// NewTLS creates a CA, a server certificate for 127.0.0.1 and a client certificate.
func NewTLS(t testing.TB) *TLS {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	server, client := ca.Issue(t, "127.0.0.1"), ca.Issue(t, "extauthz")
	c := &TLS{
		CA: filepath.Join(dir, "ca.pem"), ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		CAPEM: ca.CertPEM, ClientCertPEM: client.CertPEM, ClientKeyPEM: client.KeyPEM,
	}
	for file, content := range map[string]string{c.CA: ca.CertPEM, c.ServerCert: server.CertPEM, c.ServerKey: server.KeyPEM} {
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Cluster is a running three-master Redis Cluster.
type Cluster struct {
	Nodes []*Server
}

// Addrs returns the nodes' addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// StartCluster starts three masters and joins them into a cluster that
// covers every slot.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	cli := Binary(t, "redis-cli")
	c := &Cluster{}
	for range 3 {
		c.Nodes = append(c.Nodes, Start(t, Options{Config: []string{
			"cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 2000", "cluster-announce-ip 127.0.0.1",
		}}))
	}
	// Every node needs its own nodes.conf: they share no directory, as Start gives each its own.
	args := append(c.Addrs(), "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, append([]string{"--cluster", "create"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	waitFor(t, "the cluster to be ok", func() bool {
		for _, n := range c.Nodes {
			client := redis.NewClient(&redis.Options{Addr: n.Addr})
			info, err := client.ClusterInfo(context.Background()).Result()
			client.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return c
}

// Reshard moves slots from the first node to the second while clients
// work, so that they meet MOVED and ASK redirections.
func (c *Cluster) Reshard(t testing.TB, slots int) {
	t.Helper()
	cli := Binary(t, "redis-cli")
	ids := make([]string, 2)
	for i := range ids {
		client := redis.NewClient(&redis.Options{Addr: c.Nodes[i].Addr})
		id, err := client.Do(context.Background(), "CLUSTER", "MYID").Text()
		client.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	out, err := exec.Command(cli, "--cluster", "reshard", c.Nodes[0].Addr,
		"--cluster-from", ids[0], "--cluster-to", ids[1], "--cluster-slots", strconv.Itoa(slots), "--cluster-yes").CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
}

// MasterSet is the name the sentinels monitor.
const MasterSet = "mymaster"

// Sentinels is a master, a replica and three sentinels.
type Sentinels struct {
	Master, Replica *Server
	Sentinels       []*Server
}

// Addrs returns the sentinels' addresses.
func (s *Sentinels) Addrs() []string {
	var out []string
	for _, n := range s.Sentinels {
		out = append(out, n.Addr)
	}
	return out
}

// StartSentinels starts a master, a replica of it and three sentinels, and
// waits until the sentinels know both data nodes.
func StartSentinels(t testing.TB) *Sentinels {
	t.Helper()
	s := &Sentinels{Master: Single(t)}
	s.Replica = Start(t, Options{Config: []string{"replicaof 127.0.0.1 " + strconv.Itoa(s.Master.Port)}})
	waitFor(t, "the replica to sync", func() bool {
		client := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
		defer client.Close()
		info, err := client.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for range 3 {
		s.Sentinels = append(s.Sentinels, Start(t, Options{Sentinel: true, Config: []string{
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", MasterSet, s.Master.Port),
			"sentinel down-after-milliseconds " + MasterSet + " 1000",
			"sentinel failover-timeout " + MasterSet + " 5000",
			"sentinel parallel-syncs " + MasterSet + " 1",
		}}))
	}
	waitFor(t, "the sentinels to see the replica and each other", func() bool {
		for _, sn := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
			replicas, err := c.Replicas(context.Background(), MasterSet).Result()
			sentinels, err2 := c.Sentinels(context.Background(), MasterSet).Result()
			c.Close()
			if err != nil || err2 != nil || len(replicas) == 0 || len(sentinels) < 2 {
				return false
			}
		}
		return true
	})
	return s
}

// MasterAddr asks a sentinel for the current master.
func (s *Sentinels) MasterAddr(t testing.TB) string {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr})
	defer c.Close()
	addr, err := c.GetMasterAddrByName(context.Background(), MasterSet).Result()
	if err != nil {
		return ""
	}
	return net.JoinHostPort(addr[0], addr[1])
}

// Failover makes the sentinels promote the replica and waits until they
// report it as the master.
func (s *Sentinels) Failover(t testing.TB) {
	t.Helper()
	old := s.MasterAddr(t)
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr})
	defer c.Close()
	if err := c.Failover(context.Background(), MasterSet).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, "the failover", func() bool {
		now := s.MasterAddr(t)
		return now != "" && now != old
	})
}

// waitFor polls cond until it holds, failing the test after readyTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
