package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/dpop"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// secretlessConfig has the three ways to hold no shared secret in the
// file: a federated assertion with a configured DPoP key, an HMAC
// assertion, and a DPoP key made at start.
const secretlessConfig = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0", admin: {token: ` + testAdminToken + `}}
secrets: {dir: secrets}
policies:
  inventory:
    url: %[1]s
    authMethod: federated_jwt
    clientID: inventory-gateway
    clientAssertion: {file: tokens/idp-token}
    dpop: {key: "urn:k8s:secret:extauthz-dpop:key.pem"}
  reports:
    url: %[1]s
    authMethod: client_secret_jwt
    clientID: reports-gateway
    clientSecret: "urn:k8s:secret:reports-idp:clientSecret"
  orders:
    url: %[1]s
    clientID: orders-gateway
    clientSecret: "urn:k8s:secret:orders-idp:clientSecret"
    dpop: {}
`

const (
	clusterSubject = "system:serviceaccount:gateway:extauthz"
	clusterAud     = "extauthz-idp"
)

// projectedToken is a service account token of the cluster, as the kubelet
// projects it.
func projectedToken(t *testing.T, ci *testidp.ClusterIssuer, exp time.Time) string {
	t.Helper()
	tok, err := ci.Token(clusterSubject, clusterAud, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// secretless is the binary running secretlessConfig, with a resource
// server that checks what it forwards.
type secretless struct {
	t       *testing.T
	proc    *harness.Process
	dir     string
	idp     *testidp.Server
	rs      *testidp.ResourceServer
	rsURL   string
	authz   authv3.AuthorizationClient
	admin   adminv1.AdminClient
	cluster *testidp.ClusterIssuer
	dpopKey *dpop.Key
}

func startSecretless(t *testing.T) *secretless {
	t.Helper()
	cluster, err := testidp.NewClusterIssuer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	signing, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dpopKey, err := dpop.NewKey(signing, dpop.ES256)
	if err != nil {
		t.Fatal(err)
	}
	proc, dir, idp := startWith(t, testidp.Options{Federated: &testidp.Federated{Issuer: cluster.Issuer, JWKSURL: cluster.JWKSURL, Audience: clusterAud}},
		secretlessConfig, map[string]map[string]string{
			"tokens":                {"idp-token": projectedToken(t, cluster, time.Now().Add(time.Hour)) + "\n"},
			"secrets/extauthz-dpop": {"key.pem": testpki.PKCS8PEM(t, signing)},
			"secrets/reports-idp":   {"clientSecret": "reports-hmac-secret-of-32-bytes!\n"},
			"secrets/orders-idp":    {"clientSecret": "orders-s3cret\n"},
		})
	idp.AddClient("inventory-gateway", testidp.Client{FederatedSubject: clusterSubject})
	idp.AddClient("reports-gateway", testidp.Client{Secret: "reports-hmac-secret-of-32-bytes!"})
	idp.AddClient("orders-gateway", testidp.Client{Secret: "orders-s3cret"})
	rs := testidp.NewResourceServer(idp)
	srv := httptest.NewServer(rs)
	t.Cleanup(srv.Close)
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(adminBearer{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	return &secretless{
		t: t, proc: proc, dir: dir, idp: idp, rs: rs, rsURL: srv.URL,
		authz: authv3.NewAuthorizationClient(dial(proc.GRPCAddress)), admin: adminv1.NewAdminClient(dial(proc.AdminAddress)),
		cluster: cluster, dpopKey: dpopKey,
	}
}

// check asks the binary about method and path (with any query) on the
// resource server's host, as Envoy does, and returns the headers an allow
// adds, or nil and the denial.
func (s *secretless) check(policy, method, path string) (map[string]string, *authv3.DeniedHttpResponse) {
	s.t.Helper()
	resp, err := s.authz.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": policy},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Scheme: "http", Host: strings.TrimPrefix(s.rsURL, "http://"), Path: path, Protocol: "HTTP/1.1",
		}},
	}})
	if err != nil {
		s.t.Fatal(err)
	}
	if ok := resp.GetOkResponse(); ok != nil {
		h := map[string]string{}
		for _, o := range ok.GetHeaders() {
			h[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
		}
		return h, nil
	}
	return nil, resp.GetDeniedResponse()
}

// forward sends the request on to the resource server with headers set, as
// Envoy does after an allow, and returns its status and why it refused.
func (s *secretless) forward(method, path string, headers map[string]string) (int, string) {
	s.t.Helper()
	code, body, err := testidp.Forward(method, s.rsURL+path, headers)
	if err != nil {
		s.t.Fatal(err)
	}
	return code, body
}

func (s *secretless) purge(policy string) {
	s.t.Helper()
	if _, err := s.admin.PurgeTokens(context.Background(), &adminv1.PurgeTokensRequest{Policy: policy}); err != nil {
		s.t.Fatal(err)
	}
}

// TestSecretlessEndToEnd: federated_jwt, client_secret_jwt and DPoP through
// the built binary; a resource server accepts every forwarded request and
// refuses each hostile presentation.
func TestSecretlessEndToEnd(t *testing.T) {
	s := startSecretless(t)

	// federated_jwt and a configured DPoP key: every request its own proof.
	requests := []struct{ method, path, upstreamPath string }{
		{"GET", "/items/1", "/items/1"},
		{"POST", "/items?dry-run=1", "/items"},
		{"DELETE", "/items/./2", "/items/2"}, // Envoy normalizes the path it forwards
		{"PATCH", "/items/3#frag", "/items/3"},
	}
	var first map[string]string
	for i, r := range requests {
		h, denied := s.check("inventory", r.method, r.path)
		if denied != nil {
			t.Fatalf("%s %s: denied %v", r.method, r.path, denied)
		}
		if !strings.HasPrefix(h["Authorization"], "DPoP ey") || h["DPoP"] == "" {
			t.Fatalf("%s %s: headers %v", r.method, r.path, h)
		}
		if i == 0 {
			first = h
		}
		if code, why := s.forward(r.method, r.upstreamPath, h); code != 200 {
			t.Errorf("%s %s: the resource server refused: %s", r.method, r.path, why)
		}
	}
	log := s.idp.Log()
	if len(log) != 1 {
		t.Fatalf("%d token requests, want 1: the token is cached, the proofs are not", len(log))
	}
	if log[0].AuthMethod != "federated_jwt" || log[0].Form.Has("client_secret") || log[0].DPoP == nil || log[0].DPoP.Thumbprint != s.dpopKey.Thumbprint() {
		t.Errorf("token request: method %s, proof %+v; want federated_jwt with the configured key's proof (%s)", log[0].AuthMethod, log[0].DPoP, s.dpopKey.Thumbprint())
	}

	// Hostile presentations of what extauthz handed out.
	token := strings.TrimPrefix(first["Authorization"], "DPoP ")
	fresh, _ := s.check("inventory", "GET", "/items/1")
	for _, tt := range []struct {
		name, method string
		headers      map[string]string
		why          string
	}{
		{"a replayed proof", "GET", first, "proof replayed"},
		{"the token as Bearer", "GET", map[string]string{"Authorization": "Bearer " + token, "DPoP": fresh["DPoP"]}, "not a DPoP token"},
		{"the proof on another method", "DELETE", fresh, "htm"},
		{"the token without a proof", "GET", map[string]string{"Authorization": fresh["Authorization"]}, "0 DPoP headers"},
	} {
		if code, why := s.forward(tt.method, "/items/1", tt.headers); code != 401 || !strings.Contains(why, tt.why) {
			t.Errorf("%s: %d %q, want 401 for %q", tt.name, code, why, tt.why)
		}
	}

	// The kubelet rotates the projected token: nothing is refetched, and
	// the next token request sends the new one.
	before := s.idp.Requests()
	rotated := projectedToken(t, s.cluster, time.Now().Add(2*time.Hour))
	if err := harness.MountSecret(filepath.Join(s.dir, "tokens"), 2, map[string]string{"idp-token": rotated + "\n"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, s.proc.AdminAddress, `extauthz_config_reloads_total{result="unchanged"}`) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the rotation was not seen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	old, _ := s.check("inventory", "GET", "/items/1")
	if n := s.idp.Requests(); n != before {
		t.Errorf("the rotation refetched: %d token requests, want %d", n, before)
	}
	s.purge("inventory")
	renewed, denied := s.check("inventory", "GET", "/items/1")
	if denied != nil {
		t.Fatalf("after the purge: %v", denied)
	}
	if got := s.idp.Log()[len(s.idp.Log())-1].Form.Get("client_assertion"); got != rotated {
		t.Error("the token request after the rotation did not send the rotated assertion")
	}
	// A proof for the old token, signed with the right key, on the new one.
	if code, why := s.forward("GET", "/items/1", map[string]string{"Authorization": renewed["Authorization"], "DPoP": old["DPoP"]}); code != 401 || !strings.Contains(why, "ath") {
		t.Errorf("a proof for another token: %d %q, want 401 for ath", code, why)
	}

	// client_secret_jwt: an HS256 assertion, never the secret itself.
	h, denied := s.check("reports", "GET", "/reports")
	if denied != nil || !strings.HasPrefix(h["Authorization"], "Bearer ey") || h["DPoP"] != "" {
		t.Fatalf("client_secret_jwt: %v %v", h, denied)
	}
	req := s.idp.Log()[len(s.idp.Log())-1]
	if req.AuthMethod != "client_secret_jwt" || req.Form.Has("client_secret") || req.Header.Get("Authorization") != "" || strings.Contains(req.Form.Encode(), "reports-hmac") {
		t.Errorf("client_secret_jwt request: %s %v", req.AuthMethod, req.Form)
	}

	// A key made at start binds the policy's tokens to itself.
	h, denied = s.check("orders", "PUT", "/orders/7")
	if denied != nil {
		t.Fatalf("generated key: %v", denied)
	}
	if code, why := s.forward("PUT", "/orders/7", h); code != 200 {
		t.Errorf("generated key: the resource server refused: %s", why)
	}
	if req = s.idp.Log()[len(s.idp.Log())-1]; req.DPoP == nil || req.DPoP.Thumbprint == s.dpopKey.Thumbprint() {
		t.Fatal("the generated key is the configured one, or sent no proof")
	}
	// The admin API names each policy's key, as the upstream sees it in cnf.jkt.
	list, err := s.admin.ListPolicies(context.Background(), &adminv1.ListPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jkt := map[string]string{}
	for _, p := range list.GetPolicies() {
		jkt[p.GetName()] = p.GetDpopJkt()
	}
	if jkt["inventory"] != s.dpopKey.Thumbprint() || jkt["orders"] != req.DPoP.Thumbprint || jkt["reports"] != "" {
		t.Errorf("ListPolicies dpop_jkt %v", jkt)
	}
	if accepted, refused := s.rs.Results(); accepted != 5 || len(refused) != 5 {
		t.Errorf("the resource server accepted %d and refused %d (%q), want 5 and 5", accepted, len(refused), refused)
	}
}

// TestSecretlessRefusals: an IdP that ignores the binding, demands a nonce
// twice, or an assertion about to expire give no token to forward; a nonce
// asked for once is sent.
func TestSecretlessRefusals(t *testing.T) {
	s := startSecretless(t)
	denied := func(policy string) *authv3.DeniedHttpResponse {
		t.Helper()
		_, d := s.check(policy, "GET", "/items/1")
		return d
	}
	for _, tt := range []struct {
		name     string
		behavior testidp.Behavior
		want     string
	}{
		{"the IdP ignores the proof", testidp.Behavior{IgnoreDPoP: true}, "invalid_token_response"},
		{"a nonce demanded twice", testidp.Behavior{DPoPNonceAlways: true}, "invalid_token_response"},
	} {
		s.idp.SetBehavior(tt.behavior)
		s.purge("inventory")
		d := denied("inventory")
		if d == nil || d.GetStatus().GetCode() != 502 || !strings.Contains(d.GetBody(), tt.want) {
			t.Errorf("%s: %v, want 502 %s", tt.name, d, tt.want)
		}
	}
	s.idp.SetBehavior(testidp.Behavior{DPoPNonce: "n-42"})
	s.purge("inventory")
	if d := denied("inventory"); d != nil {
		t.Fatalf("a nonce asked for once: %v\n%s", d, s.proc.Logs())
	}
	if req := s.idp.Log()[len(s.idp.Log())-1]; req.DPoP == nil || req.DPoP.Nonce != "n-42" {
		t.Errorf("the retried request's proof %+v, want nonce n-42", req.DPoP)
	}

	// The kubelet stopped renewing: the assertion expires within a minute.
	s.idp.SetBehavior(testidp.Behavior{})
	if err := harness.MountSecret(filepath.Join(s.dir, "tokens"), 2, map[string]string{"idp-token": projectedToken(t, s.cluster, time.Now().Add(30*time.Second)) + "\n"}); err != nil {
		t.Fatal(err)
	}
	s.purge("inventory")
	before := s.idp.Requests()
	d := denied("inventory")
	if d == nil || d.GetStatus().GetCode() != 503 || !strings.Contains(d.GetBody(), "temporarily_unavailable") {
		t.Errorf("an expiring assertion: %v, want 503 temporarily_unavailable", d)
	}
	if s.idp.Requests() != before {
		t.Error("an expiring assertion was sent")
	}
	if !s.proc.WaitLog("tokens/idp-token expires at", 5*time.Second) {
		t.Errorf("the log does not name the file and its exp:\n%s", s.proc.Logs())
	}
	if strings.Contains(s.proc.Logs(), "orders-s3cret") || strings.Contains(s.proc.Logs(), "reports-hmac") {
		t.Error("a secret reached the log")
	}
}

// TestNginxDPoP runs the README's nginx block for a DPoP policy: client →
// nginx → extauthz's HTTP mode → the resource server, which checks every
// proof. nginx sets the X-Forwarded-* headers, so a caller's own change
// nothing.
func TestNginxDPoP(t *testing.T) {
	s := startSecretless(t)
	nginx := startNginx(t, readmeNginx(t, "$upstream_http_dpop", s.rsURL, s.proc.HTTPAddress))
	send := func(method, target string, headers map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+nginx+target, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	spoofed := map[string]string{
		"X-Forwarded-Method": "DELETE", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
		"X-Forwarded-Uri": "/orders/other", "DPoP": "forged", "Authorization": "DPoP forged",
	}
	for _, tt := range []struct {
		method, target string
		headers        map[string]string
	}{
		{"GET", "/orders/1", nil},
		{"GET", "/orders/1?page=2&sort=desc", nil},
		{"POST", "/orders/", nil},
		{"PUT", "/orders/9", spoofed},
	} {
		if code, body := send(tt.method, tt.target, tt.headers); code != 200 || body != "ok" {
			_, refused := s.rs.Results()
			t.Errorf("%s %s: %d %q (refused: %q)", tt.method, tt.target, code, body, refused)
		}
	}
	if accepted, refused := s.rs.Results(); accepted != 4 || len(refused) != 0 {
		t.Errorf("the resource server accepted %d, refused %q; want 4 and none", accepted, refused)
	}
	if n := s.idp.Requests(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}
