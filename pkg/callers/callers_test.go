package callers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauthz/extauthz/internal/testpki"
)

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		give    string
		want    Identity
		wantErr bool
	}{
		{give: "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account", want: Identity{URI: "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"}},
		{give: "dns:Envoy.Example.", want: Identity{DNS: "envoy.example"}},
		{give: "urn:example:gateway", want: Identity{URI: "urn:example:gateway"}},
		{give: "dns:", wantErr: true},
		{give: "dns:a b", wantErr: true},
		{give: "dns:a/b", wantErr: true},
		{give: "istio-ingressgateway", wantErr: true},
		{give: "/ns/istio-system", wantErr: true},
		{give: "spiffe://", wantErr: true},
		{give: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseIdentity(tt.give)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v, error %v", tt.give, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestDescribeIsBounded: what a caller's certificate claims reaches the
// log only cut short: a few SANs, each of a bounded length.
func TestDescribeIsBounded(t *testing.T) {
	c := &x509.Certificate{}
	for range 50 {
		c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "x", Path: "/" + strings.Repeat("a", 5000)})
	}
	d := Describe(c)
	if len(d) > maxDescribedSANs*(maxDescribedBytes+4)+40 || !strings.HasSuffix(d, "(46 more)") {
		t.Errorf("Describe = %d bytes, ending %q", len(d), d[len(d)-20:])
	}
	if got := Describe(&x509.Certificate{DNSNames: []string{"a.example"}}); got != "dns:a.example" {
		t.Errorf("Describe = %q", got)
	}
}

// fixture is a guard and its listener on loopback, with a PKI.
type fixture struct {
	ca, other *testpki.CA
	guard     *Guard
	lis       *Listener
	counts    *prometheus.CounterVec
}

func newFixture(t *testing.T, o ListenerOptions, allowed ...string) *fixture {
	t.Helper()
	f := &fixture{ca: testpki.NewCA(t), other: testpki.NewCA(t)}
	var ids []Identity
	for _, a := range allowed {
		id, err := ParseIdentity(a)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	p, err := NewPolicy(f.ca.Issue(t, "127.0.0.1").TLSCertificate(t), f.ca.Pool(), ids)
	if err != nil {
		t.Fatal(err)
	}
	f.counts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"listener", "result"})
	f.guard = NewGuard(GuardOptions{Policy: p, Connections: f.counts})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Name = "grpc"
	f.lis = f.guard.Listen(inner, o)
	t.Cleanup(func() { f.lis.Close() })
	return f
}

// dial completes a handshake with pair (none when empty) and reads, so
// that a refusal sent after a TLS 1.3 handshake is seen.
func (f *fixture) dial(t *testing.T, pair *testpki.Pair) (*tls.Conn, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.ca.Pool()}
	if pair != nil {
		cfg.Certificates = []tls.Certificate{pair.TLSCertificate(t)}
	}
	c, err := tls.Dial("tcp", f.lis.Addr().String(), cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (f *fixture) count(result string) float64 {
	return testutil.ToFloat64(f.counts.WithLabelValues("grpc", result))
}

// accept returns the next connection the listener hands out, or nil.
func (f *fixture) accept(t *testing.T, within time.Duration) net.Conn {
	t.Helper()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := f.lis.Accept()
		if err != nil {
			c = nil
		}
		got <- c
	}()
	select {
	case c := <-got:
		return c
	case <-time.After(within):
		return nil
	}
}

func TestListener(t *testing.T) {
	f := newFixture(t, ListenerOptions{HandshakeTimeout: 300 * time.Millisecond}, "spiffe://cluster.local/ns/gw/sa/gateway", "dns:envoy.example")
	gateway := f.ca.Issue(t, "gateway", "spiffe://cluster.local/ns/gw/sa/gateway")
	stranger := f.ca.Issue(t, "stranger", "spiffe://cluster.local/ns/default/sa/attacker")
	forger := f.other.Issue(t, "forger", "spiffe://cluster.local/ns/gw/sa/gateway")

	// A client that connects and says nothing holds a handshake slot until
	// the timeout, and holds up no one else.
	slow, err := net.Dial("tcp", f.lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	c, err := f.dial(t, &gateway)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	served := f.accept(t, 5*time.Second)
	if served == nil {
		t.Fatal("the gateway's connection was not handed out")
	}
	defer served.Close()
	if _, ok := served.(*tls.Conn); !ok {
		t.Fatalf("handed out a %T, want a *tls.Conn", served)
	}

	for name, pair := range map[string]*testpki.Pair{"stranger": &stranger, "forger": &forger, "no certificate": nil} {
		c, err := f.dial(t, pair)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Errorf("%s: the connection was kept", name)
		}
	}
	if got := f.accept(t, 200*time.Millisecond); got != nil {
		t.Errorf("a refused connection was handed out from %v", got.RemoteAddr())
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.count(HandshakeFailed) < 1 || f.count(NotAllowed) < 1 || f.count(UntrustedCertificate) < 1 || f.count(NoCertificate) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("counts: accepted %v, not_allowed %v, untrusted %v, none %v, failed %v", f.count(Accepted), f.count(NotAllowed),
				f.count(UntrustedCertificate), f.count(NoCertificate), f.count(HandshakeFailed))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f.count(Accepted) != 1 || f.count(NotAllowed) != 1 || f.count(UntrustedCertificate) != 1 || f.count(NoCertificate) != 1 {
		t.Errorf("each connection is not counted once")
	}
	// Plaintext.
	plain, err := net.Dial("tcp", f.lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = plain.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := plain.Read(make([]byte, 64)); n != 0 {
		t.Error("a plaintext request was answered")
	}
	plain.Close()
	for deadline := time.Now().Add(5 * time.Second); f.count(NotTLS) != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("plaintext counted %v times", f.count(NotTLS))
		}
		time.Sleep(5 * time.Millisecond)
	}

	if err := f.lis.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.lis.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

// TestGuardDecidesAgain: a policy put into service decides the next
// request of a connection another policy let in, once.
func TestGuardDecidesAgain(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Issue(t, "envoy", "envoy.example").TLSCertificate(t)
	cert, err := x509.ParseCertificate(leaf.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	policy := func(pool *x509.CertPool, allowed ...string) *Policy {
		var ids []Identity
		for _, a := range allowed {
			id, _ := ParseIdentity(a)
			ids = append(ids, id)
		}
		p, err := NewPolicy(leaf, pool, ids)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"listener", "result"})
	g := NewGuard(GuardOptions{Policy: policy(ca.Pool(), "dns:envoy.example"), Connections: counts})
	c := &connection{listener: "http", state: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}}
	c.verdict.Store(noVerdict)
	if err := g.allow(c); err != nil {
		t.Fatalf("allowed, first request: %v", err)
	}
	g.Update(policy(ca.Pool(), "dns:other.example"))
	for range 3 {
		var r *Refusal
		if err := g.allow(c); !errors.As(err, &r) || r.Result != NotAllowed {
			t.Errorf("dropped from the list: %v", err)
		}
	}
	g.Update(policy(testpki.NewCA(t).Pool(), "dns:envoy.example"))
	var r *Refusal
	if err := g.allow(c); !errors.As(err, &r) || r.Result != UntrustedCertificate {
		t.Errorf("another CA: %v", err)
	}
	if n := testutil.ToFloat64(counts.WithLabelValues("http", NotAllowed)); n != 1 {
		t.Errorf("not_allowed counted %v times, want once for the connection", n)
	}
	g.Update(policy(ca.Pool()))
	if err := g.allow(c); err != nil {
		t.Errorf("any certificate from the CA: %v", err)
	}
	if _, err := NewPolicy(leaf, nil, []Identity{{DNS: "x"}}); err == nil {
		t.Error("allowed callers without a CA")
	}
}
