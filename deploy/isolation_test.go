package deploy

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/pkg/secret"
)

// reporter is what the isolation checks report to: a *testing.T, or a
// recorder in the test that breaks renderings on purpose. The checks never
// stop a test, so that a recorder can run them.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// recorder collects what a check reports.
type recorder struct{ errs []string }

func (*recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// monitoringNamespace is networkPolicy.monitoringNamespace in every values file.
const monitoringNamespace = "monitoring"

// containerPorts maps the container's port names to their numbers.
func containerPorts(r *rendering) map[string]int32 {
	ports := map[string]int32{}
	for _, p := range r.container().Ports {
		ports[p.Name] = p.ContainerPort
	}
	return ports
}

// portName is the name of the container port p designates, by name or number.
func portName(ports map[string]int32, p intstr.IntOrString) (string, bool) {
	if p.Type == intstr.String {
		_, ok := ports[p.StrVal]
		return p.StrVal, ok
	}
	for name, n := range ports {
		if n == p.IntVal {
			return name, true
		}
	}
	return "", false
}

// isCheckPort reports whether name is a port a proxy calls for a Check.
func isCheckPort(name string) bool { return name == "grpc" || name == "http" }

// selects reports whether a non-empty selector matches labels.
func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkProbes: readiness is gRPC health on the gRPC port, unless the check
// ports want TLS, which the kubelet's gRPC probe cannot give: then GET
// /readyz on the admin port. Liveness is GET /healthz on the admin port;
// both speak HTTPS when the admin port does.
func checkProbes(rep reporter, r *rendering) {
	rep.Helper()
	cfg, err := r.config()
	if err != nil {
		rep.Errorf("%v", err)
		return
	}
	c, ports := r.container(), containerPorts(r)
	scheme := corev1.URISchemeHTTP
	if cfg.Server.Admin.TLS.Cert != "" {
		scheme = corev1.URISchemeHTTPS
	}
	httpGet := func(p *corev1.Probe, path string) bool {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
			return false
		}
		name, ok := portName(ports, p.HTTPGet.Port)
		s := p.HTTPGet.Scheme
		if s == "" {
			s = corev1.URISchemeHTTP
		}
		return ok && name == "admin" && s == scheme
	}
	switch {
	case cfg.Server.TLS != nil && !httpGet(c.ReadinessProbe, "/readyz"):
		rep.Errorf("the check ports serve TLS, but the readiness probe is not GET /readyz on the admin port over %s: %+v", scheme, c.ReadinessProbe)
	case cfg.Server.TLS == nil && (c.ReadinessProbe == nil || c.ReadinessProbe.GRPC == nil || c.ReadinessProbe.GRPC.Port != ports["grpc"]):
		rep.Errorf("the readiness probe is not gRPC health on the gRPC port: %+v", c.ReadinessProbe)
	}
	if !httpGet(c.LivenessProbe, "/healthz") {
		rep.Errorf("the liveness probe is not GET /healthz on the admin port over %s: %+v", scheme, c.LivenessProbe)
	}
}

// checkMounts: volumes and mounts pair up, every mount is read-only but the
// emptyDir where extauthz creates its admin socket, and every ConfigMap
// mounted is rendered here, but one mounted as a Secret under secrets.dir
// (a client CA such as Istio's istio-ca-root-cert).
func checkMounts(rep reporter, r *rendering) {
	rep.Helper()
	cfg, err := r.config()
	if err != nil {
		rep.Errorf("%v", err)
		return
	}
	pod, c := r.deployment().Spec.Template.Spec, r.container()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	socketDir := ""
	if s := cfg.Server.Admin.Socket; s != "" {
		socketDir = filepath.Dir(s)
	}
	socketMounted := false
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			rep.Errorf("mount %s has no volume", m.Name)
		}
		mounts[m.Name] = m
		if m.ReadOnly {
			continue
		}
		if v.EmptyDir == nil || socketDir == "" || m.MountPath != socketDir {
			rep.Errorf("mount %s at %s is writable; only the emptyDir holding server.admin.socket may be", m.Name, m.MountPath)
			continue
		}
		socketMounted = true
	}
	if socketDir != "" && !socketMounted {
		rep.Errorf("server.admin.socket is %s, but no writable emptyDir is mounted at %s", cfg.Server.Admin.Socket, socketDir)
	}
	for name, v := range volumes {
		m, ok := mounts[name]
		if !ok {
			rep.Errorf("volume %s is not mounted", name)
			continue
		}
		if v.ConfigMap != nil && !strings.HasPrefix(m.MountPath, cfg.Secrets.Dir+"/") &&
			!slices.ContainsFunc(r.configMaps, func(cm corev1.ConfigMap) bool { return cm.Name == v.ConfigMap.Name }) {
			rep.Errorf("volume %s is the ConfigMap %s, which the chart does not make", name, v.ConfigMap.Name)
		}
	}
}

// checkSecretMounts: every urn:k8s:secret:<name>:<key> the configuration
// reads is a Secret, or a ConfigMap, mounted at <secrets.dir>/<name>; every
// urn:k8s:secret:<namespace>/<name>:<key> is a Secret (the copy of a
// Middleware's namespace's) mounted at
// <secrets.dir>/namespaces/<namespace>/<name>.
func checkSecretMounts(rep reporter, r *rendering) {
	rep.Helper()
	text, err := r.configText()
	if err != nil {
		rep.Errorf("%v", err)
		return
	}
	cfg, err := r.config()
	if err != nil {
		rep.Errorf("%v", err)
		return
	}
	pod, c := r.deployment().Spec.Template.Spec, r.container()
	for _, m := range secretRef.FindAllString(text, -1) {
		ref, err := secret.ParseRef(m)
		if err != nil {
			rep.Errorf("%s: %v", m, err)
			continue
		}
		want := cfg.Secrets.Dir + "/" + filepath.ToSlash(ref.Dir())
		j := slices.IndexFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == want })
		if j < 0 {
			rep.Errorf("the configuration reads %s, but nothing is mounted at %s, where it looks", m, want)
			continue
		}
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[j].Name })
		switch {
		case i < 0:
			rep.Errorf("the mount at %s has no volume", want)
		case ref.Namespace != "" && pod.Volumes[i].Secret == nil:
			rep.Errorf("%s is not a Secret", want)
		case ref.Namespace == "" && !(pod.Volumes[i].Secret != nil && pod.Volumes[i].Secret.SecretName == ref.Name ||
			pod.Volumes[i].ConfigMap != nil && pod.Volumes[i].ConfigMap.Name == ref.Name):
			rep.Errorf("the configuration reads the Secret %s (%s), which is not what is mounted at %s", ref.Name, m, want)
		}
	}
}

// checkNetworkPolicy: one NetworkPolicy selects the pods for ingress; each
// rule names its ports, all the container's, and its peers; a rule opens
// either check ports, to peers that each name someone, or the admin port,
// to the monitoring namespace alone.
func checkNetworkPolicy(rep reporter, r *rendering) {
	rep.Helper()
	if len(r.networkPolicies) != 1 {
		rep.Errorf("%d NetworkPolicies, want one isolating the pods", len(r.networkPolicies))
		return
	}
	np := r.networkPolicies[0]
	pod := r.deployment().Spec.Template.Labels
	if !selects(np.Spec.PodSelector.MatchLabels, pod) || len(np.Spec.PodSelector.MatchExpressions) > 0 {
		rep.Errorf("the NetworkPolicy selects %v; the pods have %v", np.Spec.PodSelector, pod)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		rep.Errorf("the NetworkPolicy's policyTypes are %v, want [Ingress]", np.Spec.PolicyTypes)
	}
	ports := containerPorts(r)
	for i, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 {
			rep.Errorf("ingress rule %d admits every source", i)
		}
		if len(rule.Ports) == 0 {
			rep.Errorf("ingress rule %d admits every port", i)
		}
		var check, admin []string
		for _, p := range rule.Ports {
			if p.Port == nil || p.EndPort != nil || p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
				rep.Errorf("ingress rule %d: port %+v is not one TCP port", i, p)
				continue
			}
			name, ok := portName(ports, *p.Port)
			switch {
			case !ok:
				rep.Errorf("ingress rule %d opens port %s, which the container does not serve", i, p.Port.String())
			case isCheckPort(name):
				check = append(check, name)
			default:
				admin = append(admin, name)
			}
		}
		if len(check) > 0 && len(admin) > 0 {
			rep.Errorf("ingress rule %d opens %v and %v: the check ports and the admin port have peers of their own", i, check, admin)
		}
		for _, peer := range rule.From {
			switch {
			case len(admin) > 0 && !isNamespace(peer, monitoringNamespace):
				rep.Errorf("ingress rule %d admits %s to the admin port; only the namespace %s", i, peerString(peer), monitoringNamespace)
			case len(check) > 0 && !namesSomeone(peer):
				rep.Errorf("ingress rule %d admits %s to %v: a peer that names no one admits everyone", i, peerString(peer), check)
			}
		}
	}
}

// isNamespace reports whether peer is the namespace name, whole.
func isNamespace(peer networkingv1.NetworkPolicyPeer, name string) bool {
	ns := peer.NamespaceSelector
	return peer.PodSelector == nil && peer.IPBlock == nil && ns != nil && len(ns.MatchExpressions) == 0 &&
		maps.Equal(ns.MatchLabels, map[string]string{"kubernetes.io/metadata.name": name})
}

// namesSomeone reports whether peer narrows its sources: a selector with
// labels or expressions, or an address block short of everything.
func namesSomeone(peer networkingv1.NetworkPolicyPeer) bool {
	narrow := func(s *metav1.LabelSelector) bool {
		return s != nil && (len(s.MatchLabels) > 0 || len(s.MatchExpressions) > 0)
	}
	if b := peer.IPBlock; b != nil {
		return b.CIDR != "0.0.0.0/0" && b.CIDR != "::/0"
	}
	return narrow(peer.NamespaceSelector) || narrow(peer.PodSelector)
}

func peerString(peer networkingv1.NetworkPolicyPeer) string {
	b, _ := sigsyaml.Marshal(peer)
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\n", " "))
}

var principalRE = regexp.MustCompile(`^[^/]+/ns/[^/]+/sa/[^/]+$`)

// checkAuthorizationPolicy: the Istio AuthorizationPolicy, when there is
// one, ALLOWs on the pods every check port to named principals alone and
// the admin port to every caller; each rule names its ports.
func checkAuthorizationPolicy(rep reporter, r *rendering) {
	rep.Helper()
	switch len(r.authorizationPolicies) {
	case 0:
		return
	case 1:
	default:
		rep.Errorf("%d AuthorizationPolicies, want at most one", len(r.authorizationPolicies))
		return
	}
	spec := &r.authorizationPolicies[0].Spec
	pod := r.deployment().Spec.Template.Labels
	if spec.GetAction() != securityv1beta1.AuthorizationPolicy_ALLOW {
		rep.Errorf("the AuthorizationPolicy's action is %v, want ALLOW", spec.GetAction())
	}
	if !selects(spec.GetSelector().GetMatchLabels(), pod) {
		rep.Errorf("the AuthorizationPolicy selects %v; the pods have %v", spec.GetSelector().GetMatchLabels(), pod)
	}
	ports := containerPorts(r)
	toPrincipals, toAll := map[string]bool{}, map[string]bool{}
	for i, rule := range spec.GetRules() {
		var names []string
		if len(rule.GetTo()) == 0 {
			rep.Errorf("rule %d allows every port", i)
		}
		for _, to := range rule.GetTo() {
			op := to.GetOperation()
			if len(op.GetPorts()) == 0 || len(op.GetNotPorts()) > 0 {
				rep.Errorf("rule %d: an operation that names no ports allows every port: %v", i, op)
			}
			for _, p := range op.GetPorts() {
				n, err := strconv.Atoi(p)
				name, ok := portName(ports, intstr.FromInt32(int32(n)))
				if err != nil || !ok {
					rep.Errorf("rule %d allows port %q, which the container does not serve", i, p)
					continue
				}
				names = append(names, name)
			}
		}
		if len(rule.GetFrom()) == 0 {
			for _, name := range names {
				if isCheckPort(name) {
					rep.Errorf("rule %d allows every caller to the %s port", i, name)
				}
				toAll[name] = true
			}
			continue
		}
		named := true
		for _, from := range rule.GetFrom() {
			src := from.GetSource()
			if len(src.GetPrincipals()) == 0 {
				named = false
				rep.Errorf("rule %d: a source without principals: %v", i, src)
			}
			for _, p := range src.GetPrincipals() {
				if !principalRE.MatchString(p) {
					named = false
					rep.Errorf("rule %d: principal %q is not <trust domain>/ns/<namespace>/sa/<service account>", i, p)
				}
			}
		}
		for _, name := range names {
			toPrincipals[name] = toPrincipals[name] || named
		}
	}
	for name := range ports {
		switch {
		case isCheckPort(name) && !toPrincipals[name]:
			rep.Errorf("the %s port is allowed to no principal: the ALLOW policy shuts every proxy out", name)
		case name == "admin" && !toAll[name]:
			rep.Errorf("the admin port is not allowed to every caller: Prometheus outside the mesh is shut out")
		}
	}
}

// TestHelmIsolatesByDefault: without values, HTTP mode is off, the
// NetworkPolicy opens no check port (fail closed) and the admin port to the
// monitoring namespace alone, the admin API has neither token nor socket,
// and there is no Istio policy.
func TestHelmIsolatesByDefault(t *testing.T) {
	r := render(t)
	ports := containerPorts(r)
	if _, ok := ports["http"]; ok || slices.ContainsFunc(r.services[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" }) {
		t.Error("HTTP mode is on by default")
	}
	cfg, err := r.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.HTTPAddress != "" || cfg.Server.Admin.Token != "" || cfg.Server.Admin.Socket != "" || cfg.Server.TLS != nil {
		t.Errorf("the default configuration's server section: %+v", cfg.Server)
	}
	checkNetworkPolicy(t, r)
	for i, rule := range r.networkPolicies[0].Spec.Ingress {
		for _, p := range rule.Ports {
			if name, _ := portName(ports, *p.Port); name != "admin" {
				t.Errorf("ingress rule %d opens %s by default; nothing named, nothing admitted", i, p.Port.String())
			}
		}
	}
	if len(r.networkPolicies[0].Spec.Ingress) != 1 {
		t.Errorf("want the admin port's rule alone: %+v", r.networkPolicies[0].Spec.Ingress)
	}
	if len(r.authorizationPolicies) > 0 {
		t.Error("an Istio AuthorizationPolicy by default")
	}
}

// TestHelmChecksCatchMistakes breaks renderings the way a template change
// could, and expects the checks to say so: each check passes on the
// rendering as it is and fails on the broken one.
func TestHelmChecksCatchMistakes(t *testing.T) {
	tls, istio := render(t, valuesFiles["tls"]...), render(t, valuesFiles["redis-istio"]...)
	np := func(r *rendering) *networkingv1.NetworkPolicySpec { return &r.networkPolicies[0].Spec }
	ap := func(r *rendering) *securityv1beta1.AuthorizationPolicy { return &r.authorizationPolicies[0].Spec }
	mount := func(r *rendering, name string) *corev1.VolumeMount {
		c := r.container()
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].Name == name {
				return &c.VolumeMounts[i]
			}
		}
		t.Fatalf("no mount %s", name)
		return nil
	}
	for _, tt := range []struct {
		name   string
		give   *rendering
		check  func(reporter, *rendering)
		mutate func(*rendering)
	}{
		{"the NetworkPolicy selects other pods", tls, checkNetworkPolicy, func(r *rendering) {
			np(r).PodSelector.MatchLabels["app.kubernetes.io/instance"] = "other"
		}},
		{"the NetworkPolicy selects every pod", tls, checkNetworkPolicy, func(r *rendering) {
			np(r).PodSelector = metav1.LabelSelector{}
		}},
		{"a rule admits every source", istio, checkNetworkPolicy, func(r *rendering) { np(r).Ingress[0].From = nil }},
		{"a rule admits every port", istio, checkNetworkPolicy, func(r *rendering) { np(r).Ingress[0].Ports = nil }},
		{"a check peer names no one", istio, checkNetworkPolicy, func(r *rendering) {
			np(r).Ingress[0].From[0].NamespaceSelector = &metav1.LabelSelector{}
		}},
		{"a port the container does not serve", tls, checkNetworkPolicy, func(r *rendering) {
			p := intstr.FromInt32(9999)
			np(r).Ingress[0].Ports[0].Port = &p
		}},
		{"the admin port to every namespace", tls, checkNetworkPolicy, func(r *rendering) {
			np(r).Ingress[1].From[0].NamespaceSelector.MatchLabels = nil
		}},
		{"a check port to the monitoring namespace", istio, checkNetworkPolicy, func(r *rendering) {
			np(r).Ingress[1].Ports = append(np(r).Ingress[1].Ports, np(r).Ingress[0].Ports[0])
		}},
		{"the AuthorizationPolicy selects other pods", istio, checkAuthorizationPolicy, func(r *rendering) {
			ap(r).Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		}},
		{"HTTP mode allowed to no principal", istio, checkAuthorizationPolicy, func(r *rendering) {
			op := ap(r).Rules[0].To[0].Operation
			op.Ports = op.Ports[:1]
		}},
		{"a check port allowed to every caller", istio, checkAuthorizationPolicy, func(r *rendering) {
			op := ap(r).Rules[1].To[0].Operation
			op.Ports = append(op.Ports, ap(r).Rules[0].To[0].Operation.Ports[0])
		}},
		{"a rule without ports", istio, checkAuthorizationPolicy, func(r *rendering) { ap(r).Rules[0].To = nil }},
		{"a spiffe:// principal", istio, checkAuthorizationPolicy, func(r *rendering) {
			src := ap(r).Rules[0].From[0].Source
			src.Principals[0] = "spiffe://" + src.Principals[0]
		}},
		{"a gRPC readiness probe with TLS", tls, checkProbes, func(r *rendering) {
			r.container().ReadinessProbe.ProbeHandler = corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: containerPorts(r)["grpc"]}}
		}},
		{"HTTP probes of an HTTPS admin port", tls, checkProbes, func(r *rendering) {
			r.container().LivenessProbe.HTTPGet.Scheme = corev1.URISchemeHTTP
		}},
		{"an HTTP readiness probe without TLS", istio, checkProbes, func(r *rendering) {
			r.container().ReadinessProbe.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("admin")}}
		}},
		{"the socket's emptyDir elsewhere", tls, checkMounts, func(r *rendering) { mount(r, "admin-socket").MountPath = "/tmp" }},
		{"a writable Secret", tls, checkMounts, func(r *rendering) { mount(r, "secret-extauthz-tls").ReadOnly = false }},
		{"the TLS Secret elsewhere", tls, checkSecretMounts, func(r *rendering) {
			mount(r, "secret-extauthz-tls").MountPath = "/var/run/secrets/extauthz-tls"
		}},
		{"the client CA not mounted", tls, checkSecretMounts, func(r *rendering) {
			pod := &r.deployment().Spec.Template.Spec
			pod.Volumes = slices.DeleteFunc(pod.Volumes, func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == "istio-ca-root-cert" })
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before recorder
			r := decode(t, tt.give.text)
			tt.check(&before, r)
			if len(before.errs) > 0 {
				t.Fatalf("the check fails on the rendering as it is: %q", before.errs)
			}
			tt.mutate(r)
			var after recorder
			tt.check(&after, r)
			if len(after.errs) == 0 {
				t.Error("the check misses the mistake")
			}
		})
	}
}

// notes renders the chart's NOTES.txt with args, which helm template leaves
// out: a copy of the chart renders it into a ConfigMap.
func notes(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "extauthz")
	if err := os.CopyFS(dir, os.DirFS(chart)); err != nil {
		t.Fatal(err)
	}
	text, err := fs.ReadFile(os.DirFS(dir), "templates/NOTES.txt")
	if err != nil {
		t.Fatal(err)
	}
	define := "{{- define \"extauthz.notes\" }}" + string(text) + "{{- end }}\n"
	wrap := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include \"extauthz.notes\" . | toJson }}\n"
	for name, data := range map[string]string{"templates/_notes.tpl": define, "templates/notes.yaml": wrap} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(dir, "templates/NOTES.txt")); err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, append([]string{"template", "extauthz", dir, "--namespace", "extauthz", "--show-only", "templates/notes.yaml"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := sigsyaml.UnmarshalStrict([]byte(out), &cm); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return cm.Data["notes"]
}

// TestHelmNotes: NOTES.txt renders with every values file, and says what
// the isolation leaves closed and which value opens it.
func TestHelmNotes(t *testing.T) {
	for name, args := range valuesFiles {
		t.Run(name, func(t *testing.T) {
			text := notes(t, args...)
			want := map[string][]string{
				"defaults":    {"networkPolicy.checkFrom is empty", "set networkPolicy.checkFrom", "not served over TCP", "grpcurl -plaintext"},
				"kubernetes":  {"the peers of networkPolicy.checkFrom", "not served over TCP"},
				"redis-istio": {"HTTP mode", "cluster.local/ns/orders/sa/orders", "bearer token of the Secret extauthz-admin"},
				"tls":         {"TLS, client certificates", "HTTPS", "Unix socket /var/run/extauthz/admin.sock", "curl -k https://localhost:9090/readyz", "-cert client.crt"},
			}[name]
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("NOTES.txt does not say %q:\n%s", w, text)
				}
			}
		})
	}
}

// TestStrictIstioRefusesUnknownFields: an Istio object with a field its
// API does not have fails to decode, in the spec as in the metadata (the
// client-go types alone would take it).
func TestStrictIstioRefusesUnknownFields(t *testing.T) {
	const good = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  action: ALLOW\n  rules: [{to: [{operation: {ports: [\"9001\"]}}]}]\n"
	for _, tt := range []struct {
		name    string
		give    string
		wantErr bool
	}{
		{"valid", good, false},
		{"an unknown spec field", strings.Replace(good, "action: ALLOW", "action: ALLOW\n  actions: DENY", 1), true},
		{"an unknown nested field", strings.Replace(good, "operation:", "operations:", 1), true},
		{"a port as a number", strings.Replace(good, `"9001"`, "9001", 1), true},
		{"an unknown metadata field", strings.Replace(good, "{name: a}", "{name: a, nmespace: b}", 1), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ap securityv1beta1.AuthorizationPolicy
			var meta metav1.ObjectMeta
			if err := strictIstio([]byte(tt.give), &meta, &ap); (err != nil) != tt.wantErr {
				t.Errorf("strictIstio: %v, want an error %v", err, tt.wantErr)
			}
		})
	}
}
