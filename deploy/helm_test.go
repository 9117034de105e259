package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testpki"
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
// Kubernetes API types.
type rendering struct {
	text            string
	configMaps      []corev1.ConfigMap
	serviceAccounts []corev1.ServiceAccount
	services        []corev1.Service
	deployments     []appsv1.Deployment
	pdbs            []policyv1.PodDisruptionBudget
	hpas            []autoscalingv2.HorizontalPodAutoscaler
	serviceMonitors []monitoringv1.ServiceMonitor
	rules           []monitoringv1.PrometheusRule
}

// strict decodes one object, refusing unknown and duplicate fields.
func strict[T any](t *testing.T, doc []byte, list *[]T) {
	t.Helper()
	var o T
	if err := sigsyaml.UnmarshalStrict(doc, &o); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	*list = append(*list, o)
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

// configMap returns the ConfigMap called name.
func (r *rendering) configMap(t *testing.T, name string) *corev1.ConfigMap {
	t.Helper()
	for i := range r.configMaps {
		if r.configMaps[i].Name == name {
			return &r.configMaps[i]
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

// valuesFiles are the renderings every check runs on: the defaults, the
// plain manifest's values, and a Redis + Istio installation.
var valuesFiles = map[string][]string{
	"defaults":    nil,
	"kubernetes":  {"-f", "kubernetes/values.yaml"},
	"redis-istio": {"-f", chart + "/ci/redis-istio-values.yaml"},
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
			checkPod(t, r)
			checkConfig(t, r)
			checkMonitoring(t, r)
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

// checkPorts: the Service and the probes use the container's ports, which
// are the configuration's addresses.
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
	if c.ReadinessProbe == nil || c.ReadinessProbe.GRPC == nil || c.ReadinessProbe.GRPC.Port != ports["grpc"] {
		t.Errorf("the readiness probe is not gRPC health on the gRPC port: %+v", c.ReadinessProbe)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.String() != "admin" {
		t.Errorf("the liveness probe is not /healthz on the admin port: %+v", c.LivenessProbe)
	}
	cfg := configText(t, r)
	for name, port := range ports {
		if !strings.Contains(cfg, fmt.Sprintf("%sAddress: :%d\n", name, port)) {
			t.Errorf("container port %s %d is not server.%sAddress:\n%s", name, port, name, cfg)
		}
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
	// Volumes and mounts pair up.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("mount %s has no volume", m.Name)
		}
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.Name)
		}
		mounted[m.Name] = true
	}
	for name, v := range volumes {
		if !mounted[name] {
			t.Errorf("volume %s is not mounted", name)
		}
		if v.ConfigMap != nil {
			r.configMap(t, v.ConfigMap.Name)
		}
	}
}

// configText is the configuration file the pods load.
func configText(t *testing.T, r *rendering) string {
	t.Helper()
	c := r.container()
	path := c.Args[len(c.Args)-1]
	for _, m := range c.VolumeMounts {
		if m.MountPath == filepath.Dir(path) {
			for _, v := range r.deployment().Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					text, ok := r.configMap(t, v.ConfigMap.Name).Data[filepath.Base(path)]
					if !ok {
						t.Fatalf("the ConfigMap %s has no %s", v.ConfigMap.Name, filepath.Base(path))
					}
					return text
				}
			}
		}
	}
	t.Fatalf("--config %s is in no ConfigMap mount", path)
	return ""
}

var secretRef = regexp.MustCompile(`urn:k8s:secret:([a-z0-9.-]+):([A-Za-z0-9._-]+)`)

// checkConfig: every Secret the configuration reads is mounted where it
// looks, every file it reads is in a mount, and extauthz validate accepts
// it with those mounts laid out as the kubelet lays them out.
func checkConfig(t *testing.T, r *rendering) {
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
	files := map[string][]byte{}
	for _, m := range secretRef.FindAllStringSubmatch(cfg, -1) {
		name, key := m[1], m[2]
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == name })
		if i < 0 {
			t.Errorf("the configuration reads the Secret %s, which is not mounted", name)
			continue
		}
		if got, want := mountOf[pod.Volumes[i].Name], secretsDir[1]+"/"+name; got != want {
			t.Errorf("the Secret %s is mounted at %s; the configuration looks in %s", name, got, want)
		}
		files[filepath.Join(secretsDir[1], name, key)] = secretValue(t, key)
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
	out, err := exec.Command(extauthz(t), "validate", "--config", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": valid, ") {
		t.Errorf("extauthz validate: %v\n%s\n%s", err, out, cfg)
	}
}

// secretValue is a value fit for a Secret key, by its name.
func secretValue(t *testing.T, key string) []byte {
	switch {
	case key == "encryptionKey":
		return []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	case strings.HasSuffix(key, ".pem"):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(testpki.PKCS8PEM(t, k))
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
// rollout, changes only with the fields config.RestartOnly names.
func TestHelmRestartsOnlyForRestartOnlyFields(t *testing.T) {
	template := func(set ...string) string {
		var args []string
		for _, s := range set {
			args = append(args, "--set", s)
		}
		b, err := sigsyaml.Marshal(render(t, args...).deployment().Spec.Template)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	base := template()
	for _, tt := range []struct {
		set     string
		restart bool
	}{
		{"config.policies.orders.audience=https://other.example.com", false},
		{"config.log.level=debug", false},
		{"config.defaultPolicy=", false},
		{"config.log.format=console", true},
		{"config.store.maxEntries=5000", true},
		{"config.server.grpc.maxConcurrentStreams=50", true},
		{"config.tracing.endpoint=otel:4317", true},
		{"ports.grpc=9101", true},
	} {
		if got := template(tt.set) != base; got != tt.restart {
			t.Errorf("--set %s: the pod template changes %v, want %v", tt.set, got, tt.restart)
		}
	}
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
	} {
		args := []string{"template", "extauthz", chart}
		for _, s := range tt.set {
			args = append(args, "--set", s)
		}
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
// Traefik Hub document's example installs with the chart, and the pods'
// configuration loads with the Secrets it names mounted.
func TestMigratedValuesInstall(t *testing.T) {
	tool(t, "helm")
	out, err := exec.Command(extauthz(t), "migrate", "--values", "../cmd/extauthz/testdata/migrate/reference-example.yaml").Output()
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
	if cfg := configText(t, r); !strings.Contains(cfg, "test-client-creds:") || strings.Contains(cfg, "idp.example.com") {
		t.Errorf("the migrated policy is not the one served:\n%s", cfg)
	}
}
