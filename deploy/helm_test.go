package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	istiosecurityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/secret"
)

const chart = "helm/extauthz"

// tool returns the path of a pinned tool make tools installs: $<NAME> or
// bin/tools/<name>. Without it the test is skipped, or fails under CI.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p := os.Getenv(strings.ToUpper(name)); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "bin", "tools", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (make tools installs it): %v", name, err)
		}
		t.Skipf("%s is missing; make tools installs it", name)
	}
	return p
}

// helm runs helm with args and returns its standard output; a failure is
// returned with its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(tool(t, "helm"), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Helm's own state stays in the test's directories.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// render is helm template of the chart as release extauthz in namespace
// extauthz, with args (values files, --set).
func render(t *testing.T, args ...string) *rendering {
	t.Helper()
	out, err := helm(t, append([]string{"template", "extauthz", chart, "--namespace", "extauthz"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, out)
}

// rendering holds the objects of one rendering, decoded strictly into the
// Kubernetes, prometheus-operator and Istio API types.
type rendering struct {
	text                  string
	configMaps            []corev1.ConfigMap
	serviceAccounts       []corev1.ServiceAccount
	services              []corev1.Service
	deployments           []appsv1.Deployment
	pdbs                  []policyv1.PodDisruptionBudget
	hpas                  []autoscalingv2.HorizontalPodAutoscaler
	serviceMonitors       []monitoringv1.ServiceMonitor
	rules                 []monitoringv1.PrometheusRule
	networkPolicies       []networkingv1.NetworkPolicy
	authorizationPolicies []*istiosecurityv1.AuthorizationPolicy
}

// strict decodes one object, refusing unknown and duplicate fields.
func strict[T any](t *testing.T, doc []byte, list *[]T) {
	t.Helper()
	var o T
	if err := strictDecode(doc, &o); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	*list = append(*list, o)
}

// strictDecode decodes a YAML object into v as the API server reads it:
// field names case-sensitive (encoding/json would take failOpen for
// failopen), no unknown or duplicate fields.
func strictDecode(doc []byte, v any) error {
	js, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// strictIstio decodes an Istio object: its metadata strictly, and its spec
// strictly with protojson into the istio.io/api message, since the
// client-go types' own JSON decoding accepts unknown fields.
func strictIstio(doc []byte, meta *metav1.ObjectMeta, spec proto.Message) error {
	var o struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            json.RawMessage   `json:"spec"`
	}
	if err := strictDecode(doc, &o); err != nil {
		return err
	}
	if err := protojson.Unmarshal(o.Spec, spec); err != nil {
		return fmt.Errorf("%s spec: %w", o.Kind, err)
	}
	*meta = o.Metadata
	return nil
}

func decode(t *testing.T, text string) *rendering {
	t.Helper()
	r := &rendering{text: text}
	for _, doc := range strings.Split(text, "\n---\n") {
		doc = strings.TrimPrefix(strings.TrimSpace(doc), "---")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		b := []byte(doc)
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ConfigMap":
			strict(t, b, &r.configMaps)
		case "v1 ServiceAccount":
			strict(t, b, &r.serviceAccounts)
		case "v1 Service":
			strict(t, b, &r.services)
		case "apps/v1 Deployment":
			strict(t, b, &r.deployments)
		case "policy/v1 PodDisruptionBudget":
			strict(t, b, &r.pdbs)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			strict(t, b, &r.hpas)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			strict(t, b, &r.serviceMonitors)
		case "monitoring.coreos.com/v1 PrometheusRule":
			strict(t, b, &r.rules)
		case "networking.k8s.io/v1 NetworkPolicy":
			strict(t, b, &r.networkPolicies)
		case "security.istio.io/v1 AuthorizationPolicy":
			ap := &istiosecurityv1.AuthorizationPolicy{TypeMeta: tm}
			if err := strictIstio(b, &ap.ObjectMeta, &ap.Spec); err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			r.authorizationPolicies = append(r.authorizationPolicies, ap)
		default:
			t.Fatalf("an object of an unexpected kind, %s %s", tm.APIVersion, tm.Kind)
		}
	}
	if len(r.deployments) != 1 || len(r.services) != 1 {
		t.Fatalf("%d Deployments and %d Services, want one each", len(r.deployments), len(r.services))
	}
	return r
}

func (r *rendering) deployment() *appsv1.Deployment { return &r.deployments[0] }
func (r *rendering) container() *corev1.Container {
	return &r.deployments[0].Spec.Template.Spec.Containers[0]
}

// valuesFiles are the renderings every check runs on: the defaults, the
// plain manifest's values, a Redis + Istio installation in the mesh, and
// one outside it behind TLS with the admin API on a socket.
var valuesFiles = map[string][]string{
	"defaults":    nil,
	"kubernetes":  {"-f", "kubernetes/values.yaml"},
	"redis-istio": {"-f", chart + "/ci/redis-istio-values.yaml"},
	"tls":         {"-f", chart + "/ci/tls-values.yaml"},
}

// TestHelmLint runs helm lint --strict with each values file.
func TestHelmLint(t *testing.T) {
	for name, args := range valuesFiles {
		t.Run(name, func(t *testing.T) {
			if out, err := helm(t, append([]string{"lint", "--strict", chart}, args...)...); err != nil {
				t.Errorf("%v\n%s", err, out)
			}
		})
	}
}

// TestHelmChart renders the chart with each values file and checks that the
// objects fit together and that the configuration loads in the binary.
func TestHelmChart(t *testing.T) {
	for name, args := range valuesFiles {
		t.Run(name, func(t *testing.T) {
			r := render(t, args...)
			checkSelectors(t, r)
			checkPorts(t, r)
			checkProbes(t, r)
			checkPod(t, r)
			checkMounts(t, r)
			checkConfig(t, r)
			checkMonitoring(t, r)
			checkNetworkPolicy(t, r)
			checkAuthorizationPolicy(t, r)
		})
	}
}

// checkSelectors: every selector reaches the pods, and only them.
func checkSelectors(t *testing.T, r *rendering) {
	t.Helper()
	d := r.deployment()
	pod := d.Spec.Template.Labels
	matches := func(what string, sel map[string]string) {
		if len(sel) == 0 {
			t.Errorf("%s: an empty selector", what)
		}
		for k, v := range sel {
			if pod[k] != v {
				t.Errorf("%s selects %s=%s; the pods have %v", what, k, v, pod)
			}
		}
	}
	matches("the Deployment", d.Spec.Selector.MatchLabels)
	matches("the Service", r.services[0].Spec.Selector)
	for _, p := range r.pdbs {
		matches("the PodDisruptionBudget", p.Spec.Selector.MatchLabels)
	}
	for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		matches("a topology spread constraint", c.LabelSelector.MatchLabels)
	}
	for _, sm := range r.serviceMonitors {
		for k, v := range sm.Spec.Selector.MatchLabels {
			if r.services[0].Labels[k] != v {
				t.Errorf("the ServiceMonitor selects %s=%s; the Service has %v", k, v, r.services[0].Labels)
			}
		}
	}
	for _, h := range r.hpas {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			t.Errorf("the autoscaler scales %v, not the Deployment %s", h.Spec.ScaleTargetRef, d.Name)
		}
		if d.Spec.Replicas != nil {
			t.Error("an autoscaled Deployment sets replicas: every upgrade would reset the autoscaler's count")
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
			t.Error("the autoscaler may scale to one replica")
		}
	}
	if len(r.hpas) == 0 && (d.Spec.Replicas == nil || *d.Spec.Replicas < 2) {
		t.Error("fewer than two replicas")
	}
	if len(r.pdbs) != 1 || r.pdbs[0].Spec.MinAvailable == nil || r.pdbs[0].Spec.MinAvailable.IntValue() != 1 {
		t.Error("want a PodDisruptionBudget that keeps one replica serving")
	}
	if sa := d.Spec.Template.Spec.ServiceAccountName; len(r.serviceAccounts) != 1 || r.serviceAccounts[0].Name != sa || sa == "default" {
		t.Errorf("the pods run as %q, not their own service account", sa)
	}
}

// checkPorts: the Service uses the container's ports, which are the
// configuration's addresses; HTTP mode's address is empty without its port.
func checkPorts(t *testing.T, r *rendering) {
	t.Helper()
	c := r.container()
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, p := range r.services[0].Spec.Ports {
		if ports[p.TargetPort.String()] != p.Port {
			t.Errorf("Service port %s %d targets %s, which the container serves on %d", p.Name, p.Port, p.TargetPort.String(), ports[p.TargetPort.String()])
		}
	}
	cfg := configText(t, r)
	for name, port := range ports {
		if !strings.Contains(cfg, fmt.Sprintf("%sAddress: :%d\n", name, port)) {
			t.Errorf("container port %s %d is not server.%sAddress:\n%s", name, port, name, cfg)
		}
	}
	if _, ok := ports["http"]; !ok && !strings.Contains(cfg, "httpAddress: \"\"\n") {
		t.Errorf("no HTTP mode port, but server.httpAddress is not empty:\n%s", cfg)
	}
	for _, sm := range r.serviceMonitors {
		for _, e := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(r.services[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				t.Errorf("the ServiceMonitor scrapes port %q, which the Service does not have", e.Port)
			}
		}
	}
}

// checkPod: the pod is locked down and bounded, GOMEMLIMIT under its limit.
func checkPod(t *testing.T, r *rendering) {
	t.Helper()
	pod, c := r.deployment().Spec.Template.Spec, r.container()
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil {
		t.Errorf("pod security context %+v: want non-root with a seccomp profile", sc)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context %+v: want a read-only root, no privilege escalation, no capabilities", sc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the Kubernetes API token is mounted; extauthz never calls the API")
	}
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok || c.Resources.Requests.Cpu().IsZero() {
		t.Fatal("no memory limit or CPU request")
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" })
	if i < 0 {
		t.Fatal("no GOMEMLIMIT")
	}
	mib, ok := strings.CutSuffix(c.Env[i].Value, "MiB")
	goLimit, err := resource.ParseQuantity(mib + "Mi")
	if !ok || err != nil || goLimit.Cmp(limit) >= 0 || goLimit.Value() < limit.Value()/2 {
		t.Errorf("GOMEMLIMIT %s for a %s limit: want most of it, below it", c.Env[i].Value, limit.String())
	}
}

// configText is the configuration file the pods load.
func configText(t *testing.T, r *rendering) string {
	t.Helper()
	text, err := r.configText()
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func (r *rendering) configText() (string, error) {
	c := r.container()
	path := c.Args[len(c.Args)-1]
	for _, m := range c.VolumeMounts {
		if m.MountPath != filepath.Dir(path) {
			continue
		}
		for _, v := range r.deployment().Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			for _, cm := range r.configMaps {
				if cm.Name == v.ConfigMap.Name {
					if text, ok := cm.Data[filepath.Base(path)]; ok {
						return text, nil
					}
				}
			}
			return "", fmt.Errorf("no ConfigMap %s with %s", v.ConfigMap.Name, filepath.Base(path))
		}
	}
	return "", fmt.Errorf("--config %s is in no ConfigMap mount", path)
}

// chartConfig is what the checks read of the configuration file.
type chartConfig struct {
	Secrets struct {
		Dir string `json:"dir"`
	} `json:"secrets"`
	Server struct {
		HTTPAddress string `json:"httpAddress"`
		Admin       struct {
			Token  string `json:"token"`
			Socket string `json:"socket"`
			TLS    struct {
				Cert     string `json:"cert"`
				ClientCA string `json:"clientCA"`
			} `json:"tls"`
		} `json:"admin"`
		TLS *struct {
			Cert           string   `json:"cert"`
			Key            string   `json:"key"`
			ClientCA       string   `json:"clientCA"`
			AllowedCallers []string `json:"allowedCallers"`
		} `json:"tls"`
	} `json:"server"`
}

// config reads the configuration file the pods load.
func (r *rendering) config() (*chartConfig, error) {
	text, err := r.configText()
	if err != nil {
		return nil, err
	}
	var c chartConfig
	if err := sigsyaml.Unmarshal([]byte(text), &c); err != nil {
		return nil, fmt.Errorf("the configuration: %w", err)
	}
	return &c, nil
}

// secretRef finds secret references, urn:k8s:secret:[<namespace>/]<name>:<key>;
// secret.ParseRef reads them.
var secretRef = regexp.MustCompile(`urn:k8s:secret:(?:[a-z0-9-]+/)?[a-z0-9.-]+:[A-Za-z0-9._-]+`)

// checkConfig: every Secret the configuration reads is mounted where it
// looks (checkSecretMounts), every file it reads is in a mount, and
// extauthz validate accepts it with those mounts laid out as the kubelet
// lays them out, without a warning about who calls when it knows.
func checkConfig(t *testing.T, r *rendering) {
	t.Helper()
	checkSecretMounts(t, r)
	file := layout(t, r)
	out, err := exec.Command(extauthz(t), "validate", "--config", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": valid, ") {
		t.Errorf("extauthz validate: %v\n%s\n%s", err, out, configText(t, r))
	}
	if cfg, err := r.config(); err == nil && cfg.Server.TLS != nil && cfg.Server.TLS.ClientCA != "" && strings.Contains(string(out), "warning: server.tls") {
		t.Errorf("extauthz validate warns about callers although they present certificates:\n%s", out)
	}
}

// layout writes the configuration the pods load, with every Secret it
// reads and every projected token, under a temporary root, and returns
// the configuration's path there.
func layout(t *testing.T, r *rendering) string {
	t.Helper()
	cfg := configText(t, r)
	pod, c := r.deployment().Spec.Template.Spec, r.container()
	mountOf := map[string]string{} // volume → path
	for _, m := range c.VolumeMounts {
		mountOf[m.Name] = m.MountPath
	}
	secretsDir := regexp.MustCompile(`(?m)^secrets:\n  dir: (\S+)$`).FindStringSubmatch(cfg)
	if secretsDir == nil {
		t.Fatalf("no secrets.dir in\n%s", cfg)
	}
	root := t.TempDir()
	values := newSecretValues(t)
	files := map[string][]byte{}
	for _, text := range secretRef.FindAllString(cfg, -1) {
		ref, err := secret.ParseRef(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		files[filepath.Join(secretsDir[1], ref.Dir(), ref.Key)] = values.value(ref.Key)
	}
	rooted := strings.ReplaceAll(cfg, "dir: "+secretsDir[1], "dir: "+filepath.Join(root, secretsDir[1]))
	for _, m := range regexp.MustCompile(`file: (/\S+)`).FindAllStringSubmatch(cfg, -1) {
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool {
			return v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
				return s.ServiceAccountToken != nil && filepath.Join(mountOf[v.Name], s.ServiceAccountToken.Path) == m[1]
			})
		})
		if i < 0 {
			t.Errorf("the configuration reads %s, which no projected service account token is", m[1])
			continue
		}
		sat := pod.Volumes[i].Projected.Sources[0].ServiceAccountToken
		if sat.Audience == "" || sat.ExpirationSeconds == nil || *sat.ExpirationSeconds < 600 {
			t.Errorf("the projected token has no audience or lives under 10 minutes: %+v", sat)
		}
		files[m[1]] = []byte("eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:extauthz:extauthz","aud":["`+sat.Audience+`"],"exp":4102444800}`)) + ".")
		rooted = strings.ReplaceAll(rooted, "file: "+m[1], "file: "+filepath.Join(root, m[1]))
	}
	for path, data := range files {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(root, "config.yaml")
	if err := os.WriteFile(file, []byte(rooted), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// secretValues makes values fit for Secret keys, by their names: one CA
// and one certificate it issued serve every certificate key of a rendering,
// so that a Secret's tls.crt and tls.key are a pair and ca.crt signed them.
type secretValues struct {
	t    *testing.T
	ca   *testpki.CA
	pair testpki.Pair
}

func newSecretValues(t *testing.T) *secretValues {
	ca := testpki.NewCA(t)
	return &secretValues{t: t, ca: ca, pair: ca.Issue(t, "extauthz.extauthz.svc")}
}

func (s *secretValues) value(key string) []byte {
	switch {
	case key == "encryptionKey":
		return []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	case strings.HasSuffix(key, "ca.crt") || key == "root-cert.pem": // a Secret's CA, Istio's istio-ca-root-cert
		return []byte(s.ca.CertPEM)
	case strings.HasSuffix(key, ".crt"):
		return []byte(s.pair.CertPEM)
	case strings.HasSuffix(key, ".key"):
		return []byte(s.pair.KeyPEM)
	case strings.HasSuffix(key, ".pem"):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			s.t.Fatal(err)
		}
		return []byte(testpki.PKCS8PEM(s.t, k))
	default:
		return []byte(fmt.Sprintf("%x", sha256.Sum256([]byte(key)))) // long enough for an admin token
	}
}

var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "extauthz-deploy")
	if err != nil {
		return "", err
	}
	return harness.Build(dir)
})

// extauthz builds the binary once per test run.
func extauthz(t *testing.T) string {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// checkMonitoring: the PrometheusRule carries the tested rules file.
func checkMonitoring(t *testing.T, r *rendering) {
	t.Helper()
	if len(r.rules) == 0 {
		return
	}
	data, err := os.ReadFile(chart + "/files/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := sigsyaml.UnmarshalStrict(data, &want); err != nil {
		t.Fatal(err)
	}
	got, _ := sigsyaml.Marshal(r.rules[0].Spec)
	wantText, _ := sigsyaml.Marshal(want)
	if !bytes.Equal(got, wantText) || len(want.Groups) == 0 {
		t.Errorf("the PrometheusRule is not files/alerts.yaml")
	}
}

// TestHelmRestartsOnlyForRestartOnlyFields: extauthz reloads its
// configuration and Secrets itself, so the pod template, and with it a
// rollout, changes only with the fields config.RestartOnly names (or with
// the volumes and probes a value brings along). The pods' checksum changes
// exactly when config.RestartOnly, run on the two configurations, names a
// field.
func TestHelmRestartsOnlyForRestartOnlyFields(t *testing.T) {
	tlsOn := []string{"tls.enabled=true", "tls.existingSecret=extauthz-tls", "tls.clientCA.key=ca.crt",
		"tls.allowedCallers={spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account}"}
	for _, tt := range []struct {
		base, set []string
		restart   bool
	}{
		{nil, []string{"config.policies.orders.url=https://idp.example.com/oauth2/token", "config.policies.orders.audience=https://other.example.com"}, false},
		{nil, []string{"config.log.level=debug"}, false},
		{nil, []string{"config.defaultPolicy="}, false},
		{nil, []string{"config.server.http.policyHeader=X-Extauthz-Policy"}, false},
		{nil, []string{"config.log.format=console"}, true},
		{nil, []string{"config.store.maxEntries=5000"}, true},
		{nil, []string{"config.server.grpc.maxConcurrentStreams=50"}, true},
		{nil, []string{"config.server.grpc.maxHeaderBytes=131072"}, true},
		{nil, []string{"config.server.shutdownTimeout=20s"}, true},
		{nil, []string{"config.tracing.endpoint=otel:4317"}, true},
		{nil, []string{"ports.grpc=9101"}, true},
		{nil, []string{"httpMode.enabled=true"}, true},
		{nil, []string{"admin.socket.enabled=true"}, true},
		{nil, tlsOn, true},
		// Who may call, and with which certificates, reloads.
		{tlsOn, []string{"tls.allowedCallers={spiffe://cluster.local/ns/orders/sa/orders,dns:eg.orders.example}"}, false},
		{tlsOn, []string{"tls.allowedCallers=null"}, false},
		{tlsOn, []string{"tls.clientCA.key=root-cert.pem"}, false},
		{tlsOn, []string{"tls.certKey=server.crt", "tls.keyKey=server.key"}, false},
	} {
		name := strings.Join(tt.set, " ")
		if tt.base != nil {
			name = "with TLS, " + name
		}
		t.Run(name, func(t *testing.T) {
			base := render(t, setArgs(tt.base)...)
			next := render(t, setArgs(append(slices.Clone(tt.base), tt.set...))...)
			a, b := base.deployment().Spec.Template, next.deployment().Spec.Template
			ya, _ := sigsyaml.Marshal(a)
			yb, _ := sigsyaml.Marshal(b)
			if got := !bytes.Equal(ya, yb); got != tt.restart {
				t.Errorf("the pod template changes %v, want %v", got, tt.restart)
			}
			checksum := a.Annotations["checksum/restart-only"] != b.Annotations["checksum/restart-only"]
			fields := config.RestartOnly(load(t, base), load(t, next))
			if checksum != (len(fields) > 0) {
				t.Errorf("the restart-only checksum changes %v; config.RestartOnly names %q", checksum, fields)
			}
		})
	}
}

// setArgs turns --set values into helm's arguments.
func setArgs(set []string) []string {
	var args []string
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return args
}

// load loads the rendering's configuration as the pods would, its Secrets
// laid out where it looks.
func load(t *testing.T, r *rendering) *config.Config {
	t.Helper()
	cfg, err := config.Load(layout(t, r))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestHelmRefusesIncompleteValues: values that cannot work fail the
// rendering with a message that says what to set.
func TestHelmRefusesIncompleteValues(t *testing.T) {
	for _, tt := range []struct {
		set  []string
		want string
	}{
		{[]string{"config.store.redis.endpoints={redis:6379}"}, "redis.existingSecret"},
		{[]string{"resources.limits.memory=lots"}, "want a quantity such as 512Mi"},
		{[]string{"projectedToken.enabled=true"}, "projectedToken.audience"},
		{[]string{"httpMode.enabled=true", "ports.http=0"}, "ports.http"},
		{[]string{"tls.enabled=true"}, "tls.existingSecret"},
		{[]string{"tls.enabled=true", "tls.existingSecret=t", "tls.allowedCallers={dns:gw.example}"}, "tls.allowedCallers needs tls.clientCA.key"},
		{[]string{"tls.enabled=true", "tls.existingSecret=t", "tls.clientCA.configMap=istio-ca-root-cert"}, "tls.clientCA.key"},
		{[]string{"tls.enabled=true", "tls.existingSecret=t", "tls.clientCA.key=ca.crt", "tls.clientCA.configMap=c", "tls.clientCA.existingSecret=s"}, "not both"},
		{[]string{"tls.enabled=true", "tls.existingSecret=t", "tls.clientCA.key=ca.crt", "tls.allowedCallers={istio-ingressgateway}"}, "neither a URI SAN"},
		{[]string{"tls.enabled=true", "tls.existingSecret=t", "tls.clientCA.key=ca.crt", "tls.clientCA.configMap=t"}, "mounted at the same place"},
		{[]string{"tls.allowedCallers={dns:gw.example}"}, "tls.enabled is false"},
		{[]string{"tls.clientCA.key=ca.crt"}, "tls.enabled is false"},
		{[]string{"config.server.tls.cert=x"}, "tls.enabled, tls.existingSecret"},
		{[]string{"config.server.admin.token=0123456789abcdef0123"}, "admin.existingSecret"},
		{[]string{"config.server.admin.socket=/tmp/a.sock"}, "admin.socket.enabled"},
		{[]string{"admin.socket.enabled=true", "admin.socket.path=admin.sock"}, "absolute path"},
		{[]string{"admin.socket.enabled=true", "admin.socket.path=/var/run/secrets/extauthz/a.sock"}, "a directory of its own"},
		{[]string{"networkPolicy.checkFrom[0].namespaceSelector=null"}, "every peer needs"},
		{[]string{"networkPolicy.extraIngress[0].ports[0].port=15008"}, "names its ports and its from peers"},
		{[]string{"istio.authorizationPolicy.enabled=true"}, "istio.authorizationPolicy.principals"},
		{[]string{"istio.authorizationPolicy.enabled=true", "istio.authorizationPolicy.principals={spiffe://cluster.local/ns/a/sa/b}"}, "have no spiffe://"},
		{[]string{"secretMounts[0].name=namespaces"}, "where the Secrets of other namespaces are"},
		{[]string{"secretMounts[0].name=idp", "secretMounts[0].namespace=../etc"}, `namespace "../etc" is not a namespace`},
		{[]string{"secretMounts[0].name=../x", "secretMounts[0].namespace=team-a"}, `name "../x" is not a Secret's name`},
		{[]string{"secretMounts[0].name=idp", "secretMounts[0].namespace=team-a", "secretMounts[1].name=idp", "secretMounts[1].namespace=team-a", "secretMounts[1].secretName=other"}, "team-a/idp is mounted twice"},
		{[]string{"secretMounts[0].name=partner-idp", "secretMounts[1].name=partner-idp", "secretMounts[1].namespace=team-b", "secretMounts[1].secretName=partner-idp"}, "also mounted as extauthz's own Secret"},
	} {
		args := append([]string{"template", "extauthz", chart}, setArgs(tt.set)...)
		if _, err := helm(t, args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--set %v: %v, want an error naming %s", tt.set, err, tt.want)
		}
	}
	// And GOMEMLIMIT follows the limit in every unit.
	for limit, want := range map[string]string{"512Mi": "409MiB", "1Gi": "819MiB", "2G": "1525MiB", "268435456": "204MiB"} {
		c := render(t, "--set", "resources.limits.memory="+limit).container()
		if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }); i < 0 || c.Env[i].Value != want {
			t.Errorf("limit %s: GOMEMLIMIT %v, want %s", limit, c.Env, want)
		}
	}
}

// TestIstioProvidersReachTheChart: the providers of deploy/istio name the
// Service the chart makes, on its ports, and forward the headers the
// Istio values' policies answer with.
func TestIstioProvidersReachTheChart(t *testing.T) {
	r := render(t, valuesFiles["redis-istio"]...)
	svc := r.services[0]
	host := svc.Name + "." + "extauthz" + ".svc.cluster.local"
	ports := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
	}
	mesh := readDocs(t, "istio/meshconfig.yaml")[0]
	for _, p := range mesh.get("spec", "meshConfig", "extensionProviders").([]any) {
		pd := doc(p.(map[string]any))
		for kind, port := range map[string]string{"envoyExtAuthzGrpc": "grpc", "envoyExtAuthzHttp": "http"} {
			if pd.get(kind) == nil {
				continue
			}
			if pd.str(kind, "service") != host || pd.get(kind, "port") != int(ports[port]) {
				t.Errorf("provider %s calls %s:%v; the chart serves %s:%d", pd.str("name"), pd.str(kind, "service"), pd.get(kind, "port"), host, ports[port])
			}
			if kind == "envoyExtAuthzHttp" {
				up := pd.get(kind, "headersToUpstreamOnAllow").([]any)
				for _, h := range regexp.MustCompile(`(?m)^\s+(X-[A-Za-z-]+): `).FindAllStringSubmatch(configText(t, r), -1) {
					if !slices.Contains(up, any(strings.ToLower(h[1]))) {
						t.Errorf("the HTTP provider does not forward %s upstream", h[1])
					}
				}
			}
		}
	}
	if podLabel := r.deployment().Spec.Template.Labels["sidecar.istio.io/inject"]; podLabel != "true" {
		t.Errorf("the Istio values do not put extauthz in the mesh: %q", podLabel)
	}
}

// TestPlainManifestsAreTheChart: deploy/kubernetes/extauthz.yaml and
// deploy/prometheus/alerts.yaml are renderings of the chart (make
// manifests), so the two cannot drift.
func TestPlainManifestsAreTheChart(t *testing.T) {
	tool(t, "helm")
	cmd := exec.Command("../scripts/manifests.sh", "--check")
	cmd.Env = append(os.Environ(), "HELM="+tool(t, "helm"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the plain manifests differ from the chart's rendering (make manifests rewrites them): %v\n%s", err, out)
	}
}

// TestAlertRules checks the rules with promtool and runs their unit tests.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", chart + "/files/alerts.yaml"},
		{"test", "rules", "prometheus/alerts_test.yaml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestMigratedValuesInstall: what extauthz migrate --values prints for the
// Traefik Hub document's example, and for Middlewares and Secrets of one
// name in two namespaces, installs with the chart, and the pods'
// configuration loads with the Secrets it names mounted where it looks:
// each namespace's copy at <secretsDir>/namespaces/<namespace>/<name>.
func TestMigratedValuesInstall(t *testing.T) {
	tool(t, "helm")
	for _, tt := range []struct {
		input  string
		served []string          // policies
		mounts map[string]string // mount path under secretsDir → Secret
	}{
		{"reference-example.yaml", []string{"default.test-client-creds"}, map[string]string{"namespaces/default/my-secret": "default.my-secret"}},
		{"same-names-in-two-namespaces.yaml", []string{"team-a.oauth", "team-b.oauth"},
			map[string]string{"namespaces/team-a/idp-creds": "team-a.idp-creds", "namespaces/team-b/idp-creds": "team-b.idp-creds"}},
		{"store-and-namespaces.yaml", []string{"shop.orders-cc", "analytics.reports-cc"},
			map[string]string{"namespaces/shop/redis-auth": "shop.redis-auth", "extauthz-redis": "extauthz-redis"}},
	} {
		t.Run(tt.input, func(t *testing.T) {
			out, err := exec.Command(extauthz(t), "migrate", "--values", "../cmd/extauthz/testdata/migrate/"+tt.input).Output()
			if err != nil {
				t.Fatalf("extauthz migrate: %v", err)
			}
			values, _, _ := strings.Cut(string(out), "\n---")
			file := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(file, []byte(values), 0o600); err != nil {
				t.Fatal(err)
			}
			r := render(t, "-f", file)
			checkConfig(t, r)
			cfg := configText(t, r)
			for _, p := range tt.served {
				if !strings.Contains(cfg, "\n  "+p+":\n") || strings.Contains(cfg, "idp.example.com") {
					t.Errorf("the migrated policy %s is not the one served:\n%s", p, cfg)
				}
			}
			pod, c := r.deployment().Spec.Template.Spec, r.container()
			for path, name := range tt.mounts {
				i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/var/run/secrets/extauthz/"+path })
				if i < 0 {
					t.Errorf("nothing is mounted at <secretsDir>/%s: %+v", path, c.VolumeMounts)
					continue
				}
				j := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[i].Name })
				if j < 0 || pod.Volumes[j].Secret == nil || pod.Volumes[j].Secret.SecretName != name {
					t.Errorf("<secretsDir>/%s is not the Secret %s", path, name)
				}
			}
		})
	}
}
