package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	adminv1 "github.com/extauthz/extauthz/proto/extauthz/admin/v1"
)

// The alerting rules and the dashboard, as the chart ships them.
const (
	alertsFile    = "../../deploy/helm/extauthz/files/alerts.yaml"
	dashboardFile = "../../deploy/helm/extauthz/files/dashboard.json"
)

const monitoringConfig = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0", admin: {token: ` + testAdminToken + `}}
secrets: {dir: secrets}
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["REDIS"], timeoutMillis: 1000}
policies:
  orders:
    url: %[1]s
    failureBudget: {maxRejections: 1}
`

// TestMonitoringUsesExportedMetrics drives the built binary until every
// metric family the alerting rules and the Grafana dashboard query is on
// its /metrics, with the labels they select on: a renamed metric or label
// breaks this test, not an operator's alert in the night.
func TestMonitoringUsesExportedMetrics(t *testing.T) {
	used := queriedSeries(t)
	if len(used) < 10 {
		t.Fatalf("found only %d metrics in the rules and the dashboard: %v", len(used), used)
	}

	yaml := strings.Replace(monitoringConfig, "REDIS", redistest.Single(t).Addr, 1)
	proc, dir, idp := startWith(t, testidp.Options{}, yaml, nil) // orders-app/s3cret is a client
	idp.SetBehavior(testidp.Behavior{Lifetime: 4 * time.Second}) // refreshed within seconds
	write := func(mark string) {                                 // a new comment: the file changes, the configuration does not
		text := fmt.Sprintf(yaml, idp.TokenURL) + "# " + mark + "\n"
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	conn, err := grpc.NewClient(proc.GRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(secret string) {
		t.Helper()
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: map[string]string{"policy": "orders"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/", Headers: map[string]string{
				"authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:"+secret)),
			}}},
		}}
		if _, err := client.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	check("s3cret")
	check("wrong-1") // rejected by the IdP
	check("wrong-2") // over the failure budget: refused without asking
	adminConn, err := grpc.NewClient(proc.AdminAddress, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(adminBearer{}))
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	if _, err := adminv1.NewAdminClient(adminConn).PurgeTokens(context.Background(), &adminv1.PurgeTokensRequest{Policy: "orders"}); err != nil {
		t.Fatal(err)
	}
	write("second")

	// Refreshes and the reload happen in the background: ask until every
	// family is there.
	deadline := time.Now().Add(20 * time.Second)
	var missing, wrong []string
	for {
		check("s3cret")
		families := exported(scrape(t, proc.AdminAddress))
		missing, wrong = missing[:0], wrong[:0]
		for name, labels := range used {
			have, ok := families[name]
			if !ok {
				missing = append(missing, name)
				continue
			}
			for _, l := range labels {
				if !slices.Contains(have, l) {
					wrong = append(wrong, fmt.Sprintf("%s is queried by label %q; its series have %v", name, l, have))
				}
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("queried but not exported: %v\n%s", missing, proc.Logs())
	}
	for _, w := range wrong {
		t.Error(w)
	}
}

// metricRef finds metric names with an optional selector in PromQL.
var metricRef = regexp.MustCompile(`\b(extauthz_[a-z_]+)(\{[^}]*\})?`)

// labelRef finds label names in a selector.
var labelRef = regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)\s*"`)

// byClause finds the labels an aggregation keeps.
var byClause = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)

// targetLabels come from Prometheus's target, not from extauthz.
var targetLabels = []string{"namespace", "pod", "job", "instance"}

// queriedSeries returns every extauthz metric the rules and the dashboard
// query, with the labels they select on.
func queriedSeries(t *testing.T) map[string][]string {
	t.Helper()
	var exprs []string
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	data, err = os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	used := map[string][]string{}
	add := func(metric, label string) {
		if !slices.Contains(targetLabels, label) && !slices.Contains(used[metric], label) {
			used[metric] = append(used[metric], label)
		}
	}
	for _, e := range exprs {
		refs := metricRef.FindAllStringSubmatch(e, -1)
		for _, m := range refs {
			if _, ok := used[m[1]]; !ok {
				used[m[1]] = nil
			}
			for _, l := range labelRef.FindAllStringSubmatch(m[2], -1) {
				add(m[1], l[1])
			}
		}
		// Labels kept by an aggregation are on every metric it reads.
		for _, by := range byClause.FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(by[1], ",") {
				for _, m := range refs {
					add(m[1], strings.TrimSpace(l))
				}
			}
		}
	}
	return used
}

// exported returns the series names on a /metrics page with their label
// names (le included for histogram buckets).
func exported(text string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		labels := out[name]
		if sel, _, ok := strings.Cut(rest, "}"); ok {
			for _, pair := range strings.Split(sel, ",") {
				if l, _, ok := strings.Cut(pair, "="); ok && !slices.Contains(labels, l) {
					labels = append(labels, l)
				}
			}
		}
		out[name] = labels
	}
	return out
}
