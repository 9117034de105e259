package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/suggest"
	"github.com/extauthz/extauthz/pkg/traefik"
)

func TestTraefikReferenceExample(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("testdata/traefik-reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "middleware.yaml"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// The manifest has no namespace: its Secrets are namespace default's.
	writeSecret(t, filepath.Join(dir, "secrets"), "namespaces/default/my-secret", "clientID", "my-oauth-client-name")
	writeSecret(t, filepath.Join(dir, "secrets"), "namespaces/default/my-secret", "clientSecret", "mypasswd")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("secrets: {dir: secrets}\npolicyFiles: ['*.yaml']\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// As written, the references have a typo: the error names the fix.
	_, err = Load(cfgPath)
	want := filepath.Join(dir, "middleware.yaml") + `: line 10: policies.default.test-client-creds.clientID: malformed secret reference: want urn:k8s:secret:<name>:<key>; it reads urn:k8s:<a>:<b>:<c>, like the Traefik Hub document's example: write urn:k8s:secret:<b>:<c>`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}

	// With the documented form, it loads as it is.
	fixed := strings.ReplaceAll(string(data), "urn:k8s:my-secret:", "urn:k8s:secret:")
	if err := os.WriteFile(filepath.Join(dir, "middleware.yaml"), []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policies["default.test-client-creds"]
	if p == nil || p.Compiled.ClientID != "my-oauth-client-name" || p.Compiled.ClientSecret.Reveal() != "mypasswd" ||
		p.Audience != "https://api.example.com" || len(p.Compiled.Forward) != 2 || p.Compiled.Program == nil {
		t.Fatalf("policy %+v", p)
	}
	if len(cfg.Warnings) != 2 || !strings.Contains(cfg.Warnings[0], `skipped Secret "my-secret": not a Traefik Middleware`) ||
		!strings.Contains(cfg.Warnings[1], "policies default.test-client-creds give their token (gateway mode)") {
		t.Errorf("warnings %q", cfg.Warnings)
	}
	if !strings.Contains(strings.Join(cfg.Files, " "), "middleware.yaml") {
		t.Errorf("the policy file is not watched: %v", cfg.Files)
	}
}

func TestPolicyFileProblems(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"config.yaml": "policyFiles: [mw.yaml, nothing-*.yaml]\npolicies:\n  team-a.dup: {url: 'https://x/t'}\n",
		"mw.yaml": `apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: dup, namespace: team-a}
spec: {plugin: {oAuthClientCredentials: {url: "https://x/t"}}}
---
apiVersion: traefik.containo.us/v1alpha1
kind: Middleware
metadata: {name: other-plugin}
spec: {plugin: {rateLimit: {average: 10}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: typo}
spec:
  plugin:
    oAuthClientCredentials:
      url: https://x/t
      clientSecrett: x
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: bad, namespace: ../etc}
spec: {plugin: {oAuthClientCredentials: {url: "https://x/t"}}}
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Load(filepath.Join(dir, "config.yaml"))
	mw := filepath.Join(dir, "mw.yaml")
	for _, want := range []string{
		mw + `: line 1: policies.team-a.dup: a policy named "team-a.dup" is already defined`,
		mw + `: line 18: spec.plugin.oAuthClientCredentials.clientSecrett: not a field of Traefik Hub's oAuthClientCredentials middleware (did you mean "clientSecret"?)`,
		mw + `: line 20: metadata.namespace: "../etc" is not a namespace`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nwant:\n%s", err, want)
		}
	}
}

// TestPolicyFilesKeepNamespaces reproduces issue 20's attacks through
// policyFiles: a Middleware of namespace team-b that names the operator's
// Secret partner-idp (with its url at team-b's own server), another
// namespace's Secret, or fields only the operator may set. Each is refused,
// or reads team-b's own Secret of that name; none gets the partner's
// credentials.
func TestPolicyFilesKeepNamespaces(t *testing.T) {
	const partnerSecret = "the-partner's-secret"
	middleware := func(plugin string) string {
		return "apiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata:\n  name: steal\n  namespace: team-b\n" +
			"spec:\n  plugin:\n    oAuthClientCredentials:\n      url: https://attacker.team-b.example.com/token\n" + plugin
	}
	setup := func(t *testing.T, manifest string) (string, string) {
		t.Helper()
		dir := t.TempDir()
		secrets := filepath.Join(dir, "secrets")
		writeSecret(t, secrets, "partner-idp", "clientID", "partner")
		writeSecret(t, secrets, "partner-idp", "clientSecret", partnerSecret)
		writeSecret(t, secrets, "namespaces/team-a/idp-creds", "clientSecret", "team-a's-secret")
		cfg := `secrets: {dir: secrets}
policyFiles: ["mw/*.yaml"]
policies:
  partner:
    url: https://partner.example.com/token
    clientID: urn:k8s:secret:partner-idp:clientID
    clientSecret: urn:k8s:secret:partner-idp:clientSecret
`
		if err := os.MkdirAll(filepath.Join(dir, "mw"), 0o700); err != nil {
			t.Fatal(err)
		}
		mw := filepath.Join(dir, "mw", "team-b.yaml")
		for file, text := range map[string]string{filepath.Join(dir, "config.yaml"): cfg, mw: manifest} {
			if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir, mw
	}
	for _, tt := range []struct {
		name    string
		give    string // the plugin's fields after url
		wantErr string // with the manifest's path before it
	}{
		{
			name: "the operator's Secret",
			give: "      clientID: urn:k8s:secret:partner-idp:clientID\n      clientSecret: urn:k8s:secret:partner-idp:clientSecret\n",
			wantErr: ": line 10: policies.team-b.steal.clientID: secret urn:k8s:secret:team-b/partner-idp:clientID: open " +
				filepath.Join("{dir}", "secrets", "namespaces", "team-b", "partner-idp", "clientID") + ": no such file or directory",
		},
		{
			name:    "another namespace's Secret",
			give:    "      clientID: x\n      clientSecret: urn:k8s:secret:team-a/idp-creds:clientSecret\n",
			wantErr: ": line 11: spec.plugin.oAuthClientCredentials.clientSecret: a secret reference that names a namespace: a Middleware reads Secrets of its own namespace (team-b) only",
		},
		{
			name:    "the operator's Secret through the namespaces folder",
			give:    "      clientID: x\n      clientSecret: urn:k8s:secret:namespaces:team-a\n",
			wantErr: `: line 11: spec.plugin.oAuthClientCredentials.clientSecret: malformed secret reference: a Secret named "namespaces" would be mounted where the Secrets of other namespaces are`,
		},
		{
			name:    "federated_jwt with the operator's Secret as the assertion",
			give:    "      clientID: x\n      authMethod: federated_jwt\n      clientAssertion:\n        file: ../secrets/partner-idp/clientSecret\n",
			wantErr: ": line 11: spec.plugin.oAuthClientCredentials.authMethod: not a field of Traefik Hub's oAuthClientCredentials middleware",
		},
		{
			name:    "clientAssertion.file alone",
			give:    "      clientAssertion:\n        file: ../secrets/partner-idp/clientSecret\n",
			wantErr: ": line 10: spec.plugin.oAuthClientCredentials.clientAssertion: not a field of Traefik Hub's oAuthClientCredentials middleware",
		},
		{
			name:    "an alias to a reference written outside the plugin",
			give:    "      clientID: x\n      clientSecret: *ref\n",
			wantErr: ": line 11: spec.plugin.oAuthClientCredentials.clientSecret: a YAML alias (*ref)",
		},
		{
			name:    "a reference hidden in !!binary",
			give:    "      clientID: x\n      clientSecret: !!binary dXJuOms4czpzZWNyZXQ6cGFydG5lci1pZHA6Y2xpZW50U2VjcmV0\n",
			wantErr: ": line 11: spec.plugin.oAuthClientCredentials.clientSecret: a value tagged !!binary",
		},
		{
			name:    "a merge key",
			give:    "      <<: {clientID: x, authMethod: federated_jwt}\n",
			wantErr: ": line 10: spec.plugin.oAuthClientCredentials: a key that is not plain text",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			manifest := middleware(tt.give)
			if strings.Contains(tt.give, "*ref") {
				manifest = strings.Replace(manifest, "  namespace: team-b\n", "  namespace: team-b\n  annotations: {note: &ref urn:k8s:secret:partner-idp:clientSecret}\n", 1)
				tt.wantErr = strings.Replace(tt.wantErr, "line 11", "line 12", 1)
			}
			dir, mw := setup(t, manifest)
			tt.wantErr = strings.ReplaceAll(tt.wantErr, "{dir}", dir)
			cfg, err := Load(filepath.Join(dir, "config.yaml"))
			if err == nil {
				t.Fatalf("loaded: team-b's policy %+v", cfg.Policies["team-b.steal"])
			}
			if !strings.Contains(err.Error(), mw+tt.wantErr) {
				t.Errorf("error:\n%v\nwant:\n%s", err, mw+tt.wantErr)
			}
			if strings.Contains(err.Error(), partnerSecret) {
				t.Errorf("the error shows the partner's secret: %v", err)
			}
		})
	}

	// With a Secret partner-idp of team-b's own, the Middleware reads that one.
	dir, _ := setup(t, middleware("      clientID: urn:k8s:secret:partner-idp:clientID\n      clientSecret: urn:k8s:secret:partner-idp:clientSecret\n"))
	writeSecret(t, filepath.Join(dir, "secrets"), "namespaces/team-b/partner-idp", "clientID", "team-b-client")
	writeSecret(t, filepath.Join(dir, "secrets"), "namespaces/team-b/partner-idp", "clientSecret", "team-b's-secret")
	cfg, err := Load(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Policies["team-b.steal"]; p == nil || p.Compiled.ClientID != "team-b-client" || p.Compiled.ClientSecret.Reveal() != "team-b's-secret" {
		t.Errorf("team-b's policy: %+v", p)
	}
	if p := cfg.Policies["partner"]; p == nil || p.Compiled.ClientSecret.Reveal() != partnerSecret {
		t.Errorf("the operator's policy: %+v", p)
	}
}

// TestPolicyFilesSameNameInTwoNamespaces: Middlewares of one name in two
// namespaces are two policies, <namespace>.<name>, each with its
// namespace's Secret of one name.
func TestPolicyFilesSameNameInTwoNamespaces(t *testing.T) {
	dir := t.TempDir()
	var manifests strings.Builder
	for _, ns := range []string{"team-a", "team-b"} {
		writeSecret(t, filepath.Join(dir, "secrets"), "namespaces/"+ns+"/idp-creds", "clientID", ns+"-client")
		writeSecret(t, filepath.Join(dir, "secrets"), "namespaces/"+ns+"/idp-creds", "clientSecret", ns+"-secret")
		manifests.WriteString("---\napiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata: {name: oauth, namespace: " + ns + "}\n" +
			"spec: {plugin: {oAuthClientCredentials: {url: 'https://idp.example.com/t', clientID: 'urn:k8s:secret:idp-creds:clientID', clientSecret: 'urn:k8s:secret:idp-creds:clientSecret'}}}\n")
	}
	for file, text := range map[string]string{"config.yaml": "secrets: {dir: secrets}\npolicyFiles: [mw.yaml]\n", "mw.yaml": manifests.String()} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Load(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		if p := cfg.Policies[ns+".oauth"]; p == nil || p.Compiled.ClientID != ns+"-client" || p.Compiled.ClientSecret.Reveal() != ns+"-secret" {
			t.Errorf("policy %s.oauth: %+v", ns, p)
		}
	}
}

// TestTraefikFieldsArePolicyFields: every field a Middleware may carry
// (traefik.Plugin, Traefik Hub's) is a policy field of the same name and
// kind, so that what pkg/traefik accepted decodes as a policy.
func TestTraefikFieldsArePolicyFields(t *testing.T) {
	var walk func(hub, policy reflect.Type, path string)
	walk = func(hub, policy reflect.Type, path string) {
		for hub.Kind() == reflect.Pointer {
			hub = hub.Elem()
		}
		for policy.Kind() == reflect.Pointer {
			policy = policy.Elem()
		}
		if hub.Kind() != reflect.Struct {
			if hub.Kind() != policy.Kind() {
				t.Errorf("%s: %s in traefik.Plugin, %s in Policy", path, hub, policy)
			}
			return
		}
		fields := suggest.Fields(policy)
		for name, f := range suggest.Fields(hub) {
			pf, ok := fields[name]
			if !ok {
				t.Errorf("%s.%s: a Traefik Hub field that no policy has", path, name)
				continue
			}
			walk(f.Type, pf.Type, path+"."+name)
		}
	}
	walk(reflect.TypeFor[traefik.Plugin](), reflect.TypeFor[Policy](), "policies.<name>")
}
