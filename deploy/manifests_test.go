package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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
