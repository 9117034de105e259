package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testidp"
)

// binPath is the extauthz binary built once for every test of the package.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "extauthz-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath, err = harness.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const e2eConfig = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
log: {level: debug}
secrets: {dir: secrets}
policies:
  orders:
    url: %[1]s
    audience: https://api.example.com
    forwardHeaders: {X-Group: grp}
    claims: Equals(` + "`grp`, `admin`" + `)
    usernameClaim: sub
  gateway:
    url: %[1]s
    clientID: urn:k8s:secret:gateway-idp:clientID
    clientSecret: urn:k8s:secret:gateway-idp:clientSecret
`

type e2e struct {
	t    *testing.T
	idp  *testidp.Server
	proc *harness.Process
}

func startE2E(t *testing.T) *e2e {
	t.Helper()
	proc, _, idp := startConfig(t, e2eConfig, map[string]map[string]string{"gateway-idp": {"clientID": "gw\n", "clientSecret": "gw-s3cret\n"}})
	idp.AddClient("gw", testidp.Client{Secret: "gw-s3cret"})
	return &e2e{t: t, idp: idp, proc: proc}
}

func grpcurlPath(t *testing.T) string {
	t.Helper()
	p, err := harness.FindGrpcurl()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("grpcurl is missing (run make tools): %v", err)
		}
		t.Skipf("grpcurl is missing (run make tools): %v", err)
	}
	return p
}

// TestGrpcurl drives the built binary with grpcurl, as a user would.
func TestGrpcurl(t *testing.T) {
	grpcurl := grpcurlPath(t)
	e := startE2E(t)
	ctx := context.Background()
	addr := e.proc.GRPCAddress

	out, err := harness.Grpcurl(ctx, grpcurl, nil, "-plaintext", addr, "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(string(out), svc) {
			t.Errorf("grpcurl list does not show %s:\n%s", svc, out)
		}
	}
	out, err = harness.Grpcurl(ctx, grpcurl, nil, "-plaintext", addr, "grpc.health.v1.Health/Check")
	if err != nil || !strings.Contains(string(out), "SERVING") {
		t.Errorf("health: %s %v", out, err)
	}

	call := func(req []byte) map[string]any {
		t.Helper()
		out, err := harness.Grpcurl(ctx, grpcurl, req, "-plaintext", "-d", "@", addr, "envoy.service.auth.v3.Authorization/Check")
		if err != nil {
			t.Fatal(err)
		}
		var resp map[string]any
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("grpcurl output %s: %v", out, err)
		}
		return resp
	}

	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:s3cret"))
	allowed := call(harness.CheckJSON("orders", basic))
	headers := map[string]string{}
	for _, h := range dig(allowed, "okResponse", "headers").([]any) {
		hv := h.(map[string]any)
		headers[dig(hv, "header", "key").(string)] = dig(hv, "header", "value").(string)
		if hv["append"] != false || hv["appendAction"] != "OVERWRITE_IF_EXISTS_OR_ADD" {
			t.Errorf("header option %v does not replace", hv)
		}
	}
	if !strings.HasPrefix(headers["Authorization"], "Bearer ey") || headers["X-Group"] != "admin" {
		t.Errorf("allowed headers %v", headers)
	}
	if got := dig(allowed, "dynamicMetadata", "clientusername"); got != "orders-app" {
		t.Errorf("clientusername %v", got)
	}

	denied := call(harness.CheckJSON("orders", "Basic "+base64.StdEncoding.EncodeToString([]byte("orders-app:wrong"))))
	if code := dig(denied, "deniedResponse", "status", "code"); code != "Unauthorized" {
		t.Errorf("wrong secret: status %v in %v", code, denied)
	}
	if body := dig(denied, "deniedResponse", "body"); body != `{"error":"invalid_client","error_description":"the authorization server rejected the client credentials"}` {
		t.Errorf("wrong secret: body %v", body)
	}
	gw := call(harness.CheckJSON("gateway", ""))
	if dig(gw, "okResponse") == nil {
		t.Errorf("gateway mode: %v", gw)
	}
}

// TestGoClientAndShutdown checks over HTTP mode and with a Go gRPC client, then sends SIGTERM while
// a Check waits on the token endpoint: health turns NOT_SERVING, the Check
// still succeeds, and the process exits 0.
func TestGoClientAndShutdown(t *testing.T) {
	e := startE2E(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + e.proc.AdminAddress + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}

	hreq, err := http.NewRequest(http.MethodGet, "http://"+e.proc.HTTPAddress+"/policy/orders/some/path", nil)
	if err != nil {
		t.Fatal(err)
	}
	hreq.SetBasicAuth("orders-app", "s3cret")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Authorization"), "Bearer ey") {
		t.Errorf("HTTP mode: %d, Authorization %q", resp.StatusCode, resp.Header.Get("Authorization"))
	}

	conn, err := grpc.NewClient(e.proc.GRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": "gateway"},
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/"}},
	}}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", st, err)
	}

	e.idp.SetBehavior(testidp.Behavior{Latency: 500 * time.Millisecond})
	before := e.idp.Requests()
	result := make(chan error, 1)
	go func() {
		resp, err := client.Check(ctx, req)
		if err == nil && resp.GetOkResponse() == nil {
			err = fmt.Errorf("denied: %v", resp)
		}
		result <- err
	}()
	for e.idp.Requests() == before { // poll until the Check is waiting on the endpoint
		select {
		case <-ctx.Done():
			t.Fatal("the Check never reached the token endpoint")
		case <-time.After(time.Millisecond):
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- e.proc.Stop() }()

	st, err := watch.Recv()
	if err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health after SIGTERM: %v %v", st, err)
	}
	if err := <-result; err != nil {
		t.Errorf("in-flight Check: %v", err)
	}
	conn.Close() // ends the watch stream so that the server can finish draining
	if err := <-stopped; err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, e.proc.Logs())
	}
	if logs := e.proc.Logs(); strings.Contains(logs, "gw-s3cret") || !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("logs:\n%s", logs)
	}
}

func dig(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestLiveReload changes the configuration and rotates a mounted secret
// under the running binary while Checks go on: valid changes take effect
// without a restart, an invalid one is refused, and no Check fails.
func TestLiveReload(t *testing.T) {
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("orders-app", testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin"}})
	idp.AddClient("gw", testidp.Client{Secret: "gw-s3cret"})

	dir := t.TempDir()
	if err := harness.MountSecret(filepath.Join(dir, "secrets", "gateway-idp"), 1, map[string]string{"clientID": "gw\n", "clientSecret": "gw-s3cret\n"}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	base := fmt.Sprintf(e2eConfig, idp.TokenURL)
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(cfgPath+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfgPath+".tmp", cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	write(base)
	proc, err := harness.Start(binPath, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Kill)
	conn, err := grpc.NewClient(proc.GRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(policy, authorization string) (*authv3.CheckResponse, error) {
		headers := map[string]string{}
		if authorization != "" {
			headers["authorization"] = authorization
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: map[string]string{"policy": policy},
			Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/", Headers: headers}},
		}})
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:s3cret"))
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, proc.Logs())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Checks run all along; none may fail.
	stop := make(chan struct{})
	failures := make(chan string, 1000)
	loadDone := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				loadDone <- n
				return
			default:
			}
			resp, err := check("orders", basic)
			if err != nil || resp.GetOkResponse() == nil {
				failures <- fmt.Sprint(err, resp.GetDeniedResponse().GetBody())
			}
			n++
		}
	}()

	if resp, _ := check("gateway", ""); resp.GetOkResponse() == nil {
		t.Fatalf("gateway before rotation: %v", resp)
	}

	// A new policy appears without a restart.
	write(base + "  extra:\n    url: " + idp.TokenURL + "\n")
	waitFor("the new policy", func() bool {
		resp, err := check("extra", basic)
		return err == nil && resp.GetOkResponse() != nil
	})

	// The IdP and the mounted Secret rotate the gateway's secret: the next
	// token is fetched with the new one.
	idp.AddClient("gw", testidp.Client{Secret: "gw-n3w-s3cret"})
	if err := harness.MountSecret(filepath.Join(dir, "secrets", "gateway-idp"), 2, map[string]string{"clientID": "gw\n", "clientSecret": "gw-n3w-s3cret\n"}); err != nil {
		t.Fatal(err)
	}
	waitFor("the rotated secret", func() bool {
		resp, err := check("gateway", "")
		return err == nil && resp.GetOkResponse() != nil && resp.GetDynamicMetadata().GetFields()["token_cache"].GetStringValue() == "miss"
	})

	// An invalid change is refused and the last good configuration serves.
	write(base + "  extra:\n    url: " + idp.TokenURL + "\n  broken:\n    url: ftp://nowhere\n")
	refused := `extauthz_config_reloads_total{result="refused"}`
	waitFor("the refusal", func() bool { return metric(t, proc.AdminAddress, refused) == 1 })
	if resp, err := check("extra", basic); err != nil || resp.GetOkResponse() == nil {
		t.Errorf("after a refused change the previous configuration must serve: %v %v", resp, err)
	}
	if resp, err := check("broken", basic); err != nil || resp.GetDeniedResponse() == nil {
		t.Errorf("a policy of the refused configuration serves: %v %v", resp, err)
	}

	// SIGHUP reloads: the broken file is refused once more.
	if err := proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("the SIGHUP reload", func() bool { return metric(t, proc.AdminAddress, refused) == 2 })

	// Putting the file back as it serves changes nothing.
	write(base + "  extra:\n    url: " + idp.TokenURL + "\n")
	waitFor("the unchanged reload", func() bool {
		return metric(t, proc.AdminAddress, `extauthz_config_reloads_total{result="unchanged"}`) >= 1
	})

	close(stop)
	n := <-loadDone
	close(failures)
	for f := range failures {
		t.Errorf("a check failed during reloads: %s", f)
	}
	t.Logf("%d checks ran through the reloads", n)
	if err := proc.Stop(); err != nil {
		t.Errorf("exit: %v", err)
	}
}

// scrape returns the text of /metrics.
func scrape(t *testing.T, adminAddress string) string {
	t.Helper()
	resp, err := http.Get("http://" + adminAddress + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metric returns the value of one series on /metrics, 0 when absent.
func metric(t *testing.T, adminAddress, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t, adminAddress), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// TestMetrics scrapes /metrics after traffic.
func TestMetrics(t *testing.T) {
	e := startE2E(t)
	conn, err := grpc.NewClient(e.proc.GRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(policy, id, secret string) {
		headers := map[string]string{}
		if id != "" {
			headers["authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
		}
		if _, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: map[string]string{"policy": policy},
			Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/", Headers: headers}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	check("orders", "orders-app", "s3cret")
	check("orders", "orders-app", "s3cret")
	check("orders", "orders-app", "wrong")
	check("orders", "orders-app", "wrong")
	check("gateway", "", "")
	check("nope", "", "")

	text := scrape(t, e.proc.AdminAddress)
	for _, want := range []string{
		`extauthz_checks_total{code="ok",decision="allow",policy="orders"} 2`,
		`extauthz_checks_total{code="invalid_client",decision="deny",policy="orders"} 2`,
		`extauthz_checks_total{code="ok",decision="allow",policy="gateway"} 1`,
		`extauthz_checks_total{code="no_policy",decision="deny",policy=""} 1`,
		`extauthz_check_duration_seconds_count{decision="allow"} 3`,
		`extauthz_cache_lookups_total{result="hit",tier="memory"} 1`,
		`extauthz_cache_lookups_total{result="miss",tier="memory"} 3`,
		`extauthz_negative_cache_hits_total 1`,
		`extauthz_idp_requests_total{outcome="ok",policy="orders"} 1`,
		`extauthz_idp_requests_total{outcome="rejected",policy="orders"} 1`,
		`extauthz_idp_request_duration_seconds_count{policy="gateway"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range []string{"s3cret", "gw-s3cret", "orders-app", "Bearer"} {
		if strings.Contains(text, secret) {
			t.Errorf("/metrics shows %q", secret)
		}
	}
}

// testAdminToken is the admin API's bearer token in tests that call it over TCP.
const testAdminToken = "test-admin-token-0123456789abcdef"

// adminBearer sends testAdminToken with every call.
type adminBearer struct{}

func (adminBearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + testAdminToken}, nil
}
func (adminBearer) RequireTransportSecurity() bool { return false }

// TestAdminAPI lists policies and purges a client's token with grpcurl on
// the admin socket, as an operator does with kubectl exec.
func TestAdminAPI(t *testing.T) {
	grpcurl := grpcurlPath(t)
	socket := filepath.Join(t.TempDir(), "admin.sock")
	config := strings.Replace(e2eConfig, `adminAddress: "127.0.0.1:0"}`, `adminAddress: "127.0.0.1:0", admin: {socket: "`+socket+`"}}`, 1)
	proc, _, idp := startConfig(t, config, map[string]map[string]string{"gateway-idp": {"clientID": "gw\n", "clientSecret": "gw-s3cret\n"}})
	idp.AddClient("gw", testidp.Client{Secret: "gw-s3cret"})
	e := &e2e{t: t, idp: idp, proc: proc}
	ctx := context.Background()
	addr := socket
	fi, err := os.Lstat(socket)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the admin socket: %v %v, want a socket with mode 0600", fi, err)
	}
	// Over TCP the admin API is not served: no token is configured.
	if _, err := harness.Grpcurl(ctx, grpcurl, nil, "-plaintext", e.proc.AdminAddress, "list"); err == nil || !strings.Contains(err.Error(), "server does not support the reflection API") {
		t.Errorf("the admin API's reflection over TCP without a token: %v, want none", err)
	}

	out, err := harness.Grpcurl(ctx, grpcurl, nil, "-plaintext", "-unix", addr, "list")
	if err != nil || !strings.Contains(string(out), "extauthz.admin.v1.Admin") {
		t.Fatalf("admin services: %s %v", out, err)
	}
	out, err = harness.Grpcurl(ctx, grpcurl, nil, "-plaintext", "-unix", addr, "extauthz.admin.v1.Admin/ListPolicies")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Policies []map[string]any
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Policies) != 2 || list.Policies[0]["name"] != "gateway" || list.Policies[0]["mode"] != "gateway" || list.Policies[0]["clientId"] != "gw" ||
		list.Policies[1]["name"] != "orders" || list.Policies[1]["hasClaims"] != true {
		t.Errorf("policies: %s", out)
	}
	if strings.Contains(string(out), "gw-s3cret") {
		t.Error("ListPolicies shows a secret")
	}

	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:s3cret"))
	checkOut := func() string {
		out, err := harness.Grpcurl(ctx, grpcurl, harness.CheckJSON("orders", basic), "-plaintext", "-d", "@", e.proc.GRPCAddress, "envoy.service.auth.v3.Authorization/Check")
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	checkOut()
	if out := checkOut(); !strings.Contains(out, `"hit"`) {
		t.Fatalf("second check not a hit: %s", out)
	}
	out, err = harness.Grpcurl(ctx, grpcurl, []byte(`{"policy": "orders", "client_id": "orders-app"}`), "-plaintext", "-unix", "-d", "@", addr, "extauthz.admin.v1.Admin/PurgeTokens")
	if err != nil || !strings.Contains(string(out), `"memory": "1"`) {
		t.Fatalf("purge: %s %v", out, err)
	}
	if out := checkOut(); !strings.Contains(out, `"miss"`) {
		t.Errorf("after the purge the token was still cached: %s", out)
	}
	if _, err := harness.Grpcurl(ctx, grpcurl, []byte(`{}`), "-plaintext", "-unix", "-d", "@", addr, "extauthz.admin.v1.Admin/PurgeTokens"); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("an empty purge: %v", err)
	}
	if _, err := harness.Grpcurl(ctx, grpcurl, []byte(`{"policy": "nope"}`), "-plaintext", "-unix", "-d", "@", addr, "extauthz.admin.v1.Admin/PurgeTokens"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("a purge of an unknown policy: %v", err)
	}
	// Profiles too, on the socket only.
	onSocket := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	for client, want := range map[*http.Client]int{onSocket: 200, http.DefaultClient: 404} {
		host := "extauthz"
		if client == http.DefaultClient {
			host = e.proc.AdminAddress
		}
		resp, err := client.Get("http://" + host + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("/debug/pprof/ on %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	// The socket goes with the process.
	if err := proc.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Errorf("the socket is left behind: %v", err)
	}
}
