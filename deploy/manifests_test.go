package deploy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/pkg/config"
)

// doc is a Kubernetes object, read generically.
type doc map[string]any

func (d doc) get(path ...any) any {
	var v any = map[string]any(d)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func (d doc) str(path ...any) string { s, _ := d.get(path...).(string); return s }

// readDocs reads every YAML document of a file.
func readDocs(t *testing.T, file string) []doc {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []doc
	for {
		// A plain map, so that nested objects decode as plain maps too.
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if m == nil {
			continue
		}
		d := doc(m)
		if d.str("apiVersion") == "" || d.str("kind") == "" {
			t.Fatalf("%s: a document without apiVersion or kind", file)
		}
		docs = append(docs, d)
	}
}

func byKind(t *testing.T, docs []doc, kind string) doc {
	t.Helper()
	for _, d := range docs {
		if d.str("kind") == kind {
			return d
		}
	}
	t.Fatalf("no %s", kind)
	return nil
}

// TestKubernetes checks that the manifests fit together: the shipped
// configuration loads with the shipped Secret mounted where it points, the
// probes and Service use the container's ports, and the pod is locked down.
func TestKubernetes(t *testing.T) {
	docs := readDocs(t, "kubernetes/extauthz.yaml")
	cm, secret, deploy := byKind(t, docs, "ConfigMap"), byKind(t, docs, "Secret"), byKind(t, docs, "Deployment")
	svc, pdb := byKind(t, docs, "Service"), byKind(t, docs, "PodDisruptionBudget")
	pod := doc(deploy.get("spec", "template", "spec").(map[string]any))
	container := doc(pod.get("containers", 0).(map[string]any))

	// The configuration loads, with the Secret mounted as the pod mounts it.
	cfgText := cm.str("data", "config.yaml")
	var mounts = map[string]string{}
	for _, m := range container.get("volumeMounts").([]any) {
		md := doc(m.(map[string]any))
		mounts[md.str("name")] = md.str("mountPath")
	}
	args := container.get("args").([]any)
	cfgPath := args[len(args)-1].(string)
	if filepath.Dir(cfgPath) != mounts["config"] {
		t.Errorf("--config %s is not in the config mount %s", cfgPath, mounts["config"])
	}
	root := t.TempDir()
	secretMount := mounts[secret.str("metadata", "name")]
	if secretMount == "" {
		t.Fatalf("the Secret %s is not mounted", secret.str("metadata", "name"))
	}
	for key, value := range secret.get("stringData").(map[string]any) {
		p := filepath.Join(root, secretMount, key)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value.(string)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The projected service account token, as the kubelet writes it.
	tokenVolume := doc(pod.get("volumes").([]any)[slices.IndexFunc(pod.get("volumes").([]any), func(v any) bool {
		return doc(v.(map[string]any)).get("projected") != nil
	})].(map[string]any))
	sat := doc(tokenVolume.get("projected", "sources", 0, "serviceAccountToken").(map[string]any))
	tokenPath := filepath.Join(mounts[tokenVolume.str("name")], sat.str("path"))
	if !strings.Contains(cfgText, "file: "+tokenPath+"}") {
		t.Errorf("no policy reads the projected token at %s", tokenPath)
	}
	if exp, _ := sat.get("expirationSeconds").(int); sat.str("audience") == "" || exp < 600 {
		t.Errorf("the projected token has no audience or lives under 10 minutes: %v", sat)
	}
	if pod.str("serviceAccountName") == "" || pod.str("serviceAccountName") == "default" || byKind(t, docs, "ServiceAccount").str("metadata", "name") != pod.str("serviceAccountName") {
		t.Error("the pod does not run as its own service account: the projected token's subject is its identity")
	}
	jwtText := "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://kubernetes.default.svc.cluster.local","sub":"system:serviceaccount:gateway:extauthz","aud":["`+sat.str("audience")+`"],"exp":4102444800}`)) + "."
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(tokenPath)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, tokenPath), []byte(jwtText), 0o600); err != nil {
		t.Fatal(err)
	}
	rooted := strings.NewReplacer("dir: /var/run/secrets/extauthz", "dir: "+filepath.Join(root, "/var/run/secrets/extauthz"),
		"file: "+tokenPath, "file: "+filepath.Join(root, tokenPath)).Replace(cfgText)
	cfg, err := config.Parse([]byte(rooted), "")
	if err != nil {
		t.Fatalf("the shipped configuration does not load: %v", err)
	}
	if !strings.HasPrefix(secretMount, "/var/run/secrets/extauthz/") {
		t.Errorf("the Secret is mounted at %s, outside secrets.dir", secretMount)
	}
	if cfg.Policies["partner-api"].Compiled.ClientID != "replace-with-the-client-id" {
		t.Error("the gateway policy does not read the mounted Secret")
	}
	if p := cfg.Policies["inventory"]; p == nil || p.Compiled.AssertionFile != filepath.Join(root, tokenPath) {
		t.Error("the federated policy does not read the projected token")
	}

	// Ports: the probes and the Service use the container's.
	ports := map[string]int{}
	for _, p := range container.get("ports").([]any) {
		pd := doc(p.(map[string]any))
		ports[pd.str("name")] = pd.get("containerPort").(int)
	}
	if ports["grpc"] != 9001 || ports["http"] != 8001 || ports["admin"] != 9090 {
		t.Errorf("container ports %v do not match the configuration's addresses", ports)
	}
	if p, _ := container.get("readinessProbe", "grpc", "port").(int); p != ports["grpc"] {
		t.Errorf("the readiness probe is not gRPC health on the gRPC port: %v", container.get("readinessProbe"))
	}
	if container.str("livenessProbe", "httpGet", "path") != "/healthz" || container.str("livenessProbe", "httpGet", "port") != "admin" {
		t.Errorf("liveness probe %v", container.get("livenessProbe"))
	}
	for _, p := range svc.get("spec", "ports").([]any) {
		pd := doc(p.(map[string]any))
		if _, ok := ports[pd.str("targetPort")]; !ok {
			t.Errorf("service port %v targets no container port", pd)
		}
	}

	// Selectors reach the pods.
	labels := deploy.get("spec", "template", "metadata", "labels").(map[string]any)
	for name, sel := range map[string]any{
		"Deployment": deploy.get("spec", "selector", "matchLabels"), "Service": svc.get("spec", "selector"), "PodDisruptionBudget": pdb.get("spec", "selector", "matchLabels"),
	} {
		for k, v := range sel.(map[string]any) {
			if labels[k] != v {
				t.Errorf("the %s selector %s=%v does not match the pod labels", name, k, v)
			}
		}
	}

	// The pod is locked down and bounded.
	if pod.get("securityContext", "runAsNonRoot") != true || container.get("securityContext", "readOnlyRootFilesystem") != true ||
		container.get("securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("pod %v, container %v: want non-root, a read-only root and no privilege escalation",
			pod.get("securityContext"), container.get("securityContext"))
	}
	if drop, _ := container.get("securityContext", "capabilities", "drop").([]any); !slices.Contains(drop, any("ALL")) {
		t.Error("capabilities are not all dropped")
	}
	if container.get("resources", "requests") == nil || container.get("resources", "limits", "memory") == nil {
		t.Error("no resource requests or memory limit")
	}
	if replicas, _ := deploy.get("spec", "replicas").(int); replicas < 2 || pdb.get("spec", "minAvailable") != 1 {
		t.Error("a single replica, or a disruption budget that allows none")
	}
}

func TestIstio(t *testing.T) {
	providers := map[string]doc{}
	for _, p := range readDocs(t, "istio/meshconfig.yaml")[0].get("spec", "meshConfig", "extensionProviders").([]any) {
		pd := doc(p.(map[string]any))
		providers[pd.str("name")] = pd
	}
	grpcPort := providers["extauthz-grpc"].get("envoyExtAuthzGrpc", "port")
	httpPort := providers["extauthz-http"].get("envoyExtAuthzHttp", "port")
	if grpcPort != 9001 || httpPort != 8001 {
		t.Errorf("provider ports %v and %v are not extauthz's 9001 and 8001", grpcPort, httpPort)
	}
	if !slices.Contains(providers["extauthz-http"].get("envoyExtAuthzHttp", "headersToUpstreamOnAllow").([]any), any("authorization")) {
		t.Error("the HTTP provider does not forward the token upstream")
	}
	if n := readDocs(t, "istio/meshconfig.yaml")[0].str("spec", "meshConfig", "pathNormalization", "normalization"); n != "MERGE_SLASHES" && n != "DECODE_AND_MERGE_SLASHES" {
		t.Errorf("meshConfig.pathNormalization.normalization is %q: routes on paths need slashes merged", n)
	}
	ap := readDocs(t, "istio/authorizationpolicy.yaml")[0]
	if ap.str("spec", "action") != "CUSTOM" || providers[ap.str("spec", "provider", "name")] == nil {
		t.Errorf("the AuthorizationPolicy is not CUSTOM with a declared provider: %v", ap.get("spec"))
	}
}

func TestEnvoyGateway(t *testing.T) {
	sp := byKind(t, readDocs(t, "envoy-gateway/securitypolicy.yaml"), "SecurityPolicy")
	ref := doc(sp.get("spec", "extAuth", "grpc", "backendRefs", 0).(map[string]any))
	if ref.str("name") != "extauthz" || ref.get("port") != 9001 || sp.get("spec", "extAuth", "failOpen") != false {
		t.Errorf("the SecurityPolicy does not call extauthz's gRPC port failing closed: %v", sp.get("spec", "extAuth"))
	}
	ctp := byKind(t, readDocs(t, "envoy-gateway/securitypolicy.yaml"), "ClientTrafficPolicy")
	if ctp.str("spec", "path", "escapedSlashesAction") != "RejectRequest" || ctp.get("spec", "path", "disableMergeSlashes") != false {
		t.Errorf("the ClientTrafficPolicy does not normalize paths as extauthz does: %v", ctp.get("spec", "path"))
	}
}

// TestDockerfile checks the image is built static and runs as non-root.
func TestDockerfile(t *testing.T) {
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var froms, users []string
	var static, entry bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			froms = append(froms, line)
		case strings.HasPrefix(line, "USER "):
			users = append(users, strings.TrimPrefix(line, "USER "))
		case strings.HasPrefix(line, "RUN ") && strings.Contains(line, "CGO_ENABLED=0") && strings.Contains(line, "./cmd/extauthz"):
			static = true
		case line == `ENTRYPOINT ["/extauthz"]`:
			entry = true
		}
	}
	if len(froms) != 2 || !strings.Contains(froms[0], "golang:1.26") || !strings.Contains(froms[1], "distroless/static") {
		t.Errorf("want a Go 1.26 build stage and a distroless static image: %v", froms)
	}
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1], "0") || users[len(users)-1] == "root" {
		t.Errorf("the image does not run as non-root: %v", users)
	}
	if !static || !entry {
		t.Error("the binary is not built with CGO_ENABLED=0, or is not the entrypoint")
	}
}
