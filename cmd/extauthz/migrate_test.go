package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/internal/testpki"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/traefik"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestMigrate")

// TestMigrate runs extauthz migrate over every input under
// testdata/migrate, as a configuration and as chart values, and compares
// what it prints with the golden files beside them (go test -run
// TestMigrate -update rewrites them). What it prints as a configuration
// loads, with the input's own Secrets mounted.
func TestMigrate(t *testing.T) {
	inputs, err := filepath.Glob("testdata/migrate/*.yaml")
	if err != nil || len(inputs) < 3 {
		t.Fatalf("inputs %v: %v", inputs, err)
	}
	for _, in := range inputs {
		for _, mode := range []string{"config", "values"} {
			base := strings.TrimSuffix(in, ".yaml") + "." + mode
			t.Run(filepath.Base(base), func(t *testing.T) {
				args := []string{"migrate", in}
				if mode == "values" {
					args = []string{"migrate", "--values", "--address", "http://extauthz.auth.svc:8001", in}
				}
				var stdout, stderr bytes.Buffer
				code := report(run(context.Background(), args, stdio{strings.NewReader(""), &stdout, &stderr}), &stderr)
				got := stdout.String() + "\n## stderr, exit " + string(rune('0'+code)) + "\n" + stderr.String()
				golden := base + ".golden"
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (go test -run TestMigrate -update writes it)", err)
				}
				if got != string(want) {
					t.Errorf("extauthz %s printed:\n%s\nwant (%s):\n%s", strings.Join(args, " "), got, golden, want)
				}
				if code == exitOK && mode == "config" {
					loads(t, in, stdout.String())
				}
			})
		}
	}
}

// loads checks that the policies migrate printed load as a configuration,
// with the Secrets of the input mounted under secrets.dir where the chart
// mounts their copies (a Middleware's namespace's at
// namespaces/<namespace>/<name>), and the Redis encryption key the
// migration asks for. It returns the configuration.
func loads(t *testing.T, input, printed string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var s struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			}
			StringData map[string]string `yaml:"stringData"`
		}
		if dec.Decode(&s) != nil {
			break
		}
		if s.Kind == "Secret" {
			ns := cmp.Or(s.Metadata.Namespace, traefik.DefaultNamespace)
			mount := secret.Ref{Namespace: ns, Name: s.Metadata.Name}.Dir()
			if err := harness.MountSecret(filepath.Join(dir, "secrets", mount), 1, s.StringData); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, text := range regexp.MustCompile(`urn:k8s:secret:[^\s"']+`).FindAllString(printed, -1) {
		ref, err := secret.ParseRef(text)
		if err != nil {
			t.Errorf("migrate printed %s: %v", text, err)
			continue
		}
		p := filepath.Join(dir, "secrets", ref.Dir(), ref.Key)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		value := "a-value-for-" + ref.Key
		if ref.Key == "encryptionKey" {
			value = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
		}
		if strings.HasSuffix(ref.Key, ".crt") {
			value = testpki.NewCA(t).CertPEM
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	policies, _, _ := strings.Cut(printed, "\n---")
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("secrets: {dir: secrets}\n"+policies+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Errorf("the migrated policies do not load: %v\n%s", err, policies)
	}
	return cfg
}

// TestMigrateCoversTheReference: every YAML example of the Traefik Hub
// document is among the migration's test inputs, as written there. The
// document is beside the repository on a development machine only.
func TestMigrateCoversTheReference(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "..", "shared", "reference", "traefik-hub-oauth-client-credentials.md"))
	if err != nil {
		t.Skip("the Traefik Hub document is not beside the repository")
	}
	var inputs strings.Builder
	files, _ := filepath.Glob("testdata/migrate/*.yaml")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		inputs.Write(data)
	}
	blocks := regexp.MustCompile("(?s)```yaml[^\n]*\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) == 0 {
		t.Fatal("no YAML example in the document")
	}
	for _, b := range blocks {
		if !strings.Contains(inputs.String(), b[1]) {
			t.Errorf("an example of the document is not a migration test input:\n%s", b[1])
		}
	}
}

func indent(text, by string) string {
	return by + strings.ReplaceAll(strings.TrimSuffix(text, "\n"), "\n", "\n"+by) + "\n"
}

// TestMigrateRefuses: manifests migrate cannot turn into something that
// serves — hostile or broken ones included — are refused with what is
// wrong, exit 2, and nothing on standard output.
func TestMigrateRefuses(t *testing.T) {
	mw := func(name, plugin string) string {
		return "apiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata: {name: " + name + "}\nspec:\n  plugin:\n    oAuthClientCredentials:\n" + plugin
	}
	// A billion-laughs document: aliases that expand exponentially.
	laughs := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 'b'; i <= 'k'; i++ {
		prev := string(i - 1)
		laughs += string(i) + ": &" + string(i) + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
	}
	for _, tt := range []struct {
		name, input, want string
	}{
		{"not YAML", "kind: [", "yaml"},
		{"no Middleware", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no Traefik Middleware"},
		{"an unknown field", mw("a", "      url: https://idp.example.com/t\n      clientSecrett: x\n"),
			`-: line 8: spec.plugin.oAuthClientCredentials.clientSecrett: not a field of Traefik Hub's oAuthClientCredentials middleware (did you mean "clientSecret"?)`},
		{"extauthz's own field: authMethod", mw("a", "      url: https://idp.example.com/t\n      clientID: a\n      authMethod: federated_jwt\n"),
			`-: line 9: spec.plugin.oAuthClientCredentials.authMethod: not a field of Traefik Hub's oAuthClientCredentials middleware`},
		{"extauthz's own field: clientAssertion.file", mw("a", "      url: https://idp.example.com/t\n      clientAssertion:\n        file: /var/run/secrets/extauthz/partner-idp/clientSecret\n"),
			`-: line 8: spec.plugin.oAuthClientCredentials.clientAssertion: not a field of Traefik Hub's oAuthClientCredentials middleware`},
		{"extauthz's own field, nested", mw("a", "      url: https://idp.example.com/t\n      clientConfig:\n        maxConcurrentRequests: 1000\n"),
			`-: line 9: spec.plugin.oAuthClientCredentials.clientConfig.maxConcurrentRequests: not a field of Traefik Hub's oAuthClientCredentials middleware`},
		{"a secret of another namespace", mw("a", "      url: https://idp.example.com/t\n      clientID: a\n      clientSecret: urn:k8s:secret:team-a/idp-creds:clientSecret\n"),
			`-: line 9: spec.plugin.oAuthClientCredentials.clientSecret: a secret reference that names a namespace: a Middleware reads Secrets of its own namespace (default) only`},
		{"a tagged value", mw("a", "      url: https://idp.example.com/t\n      clientID: a\n      clientSecret: !!binary dXJuOms4czpzZWNyZXQ6cGFydG5lci1pZHA6Y2xpZW50U2VjcmV0\n"),
			`-: line 9: spec.plugin.oAuthClientCredentials.clientSecret: a value tagged !!binary`},
		{"no url", mw("a", "      audience: x\n"), "no url"},
		{"two of one name", mw("a", "      url: https://idp.example.com/t\n") + "---\n" + mw("a", "      url: https://idp.example.com/t\n"), "two Middlewares of this name in one namespace"},
		{"no name", mw("", "      url: https://idp.example.com/t\n"), "metadata.name: a Middleware without a name"},
		{"aliases that expand, beside a Middleware", laughs, "no Traefik Middleware"},
		{"aliases that expand, in a Middleware", mw("a", "      url: https://idp.example.com/t\n      forwardHeaders:\n"+indent(laughs, "        ")), "a YAML alias (*a)"},
		{"more than 16 MiB", "# " + strings.Repeat("x", maxMigrateInput), "larger than 16 MiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := report(run(context.Background(), []string{"migrate", "-"}, stdio{strings.NewReader(tt.input), &stdout, &stderr}), &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tt.want) || stdout.Len() > 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 naming %q", code, stdout.String(), stderr.String(), tt.want)
			}
		})
	}
}

// TestMigrateKeepsNamespacesApart reproduces issue 20's merged Secrets: two
// namespaces' Secrets of one name (team-a/idp-creds, team-b/idp-creds) and
// Middlewares of one name were one mount and one policy name. Now each
// policy reads its own namespace's Secret, and the chart values mount two
// copies at two places.
func TestMigrateKeepsNamespacesApart(t *testing.T) {
	type mount struct {
		Name       string `yaml:"name"`
		Namespace  string `yaml:"namespace"`
		SecretName string `yaml:"secretName"`
	}
	const input = "testdata/migrate/same-names-in-two-namespaces.yaml"
	migrate := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := report(run(context.Background(), append([]string{"migrate"}, append(args, input)...), stdio{strings.NewReader(""), &stdout, &stderr}), &stderr); code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		return stdout.String()
	}
	cfg := loads(t, input, migrate())
	if cfg == nil {
		t.FailNow()
	}
	for _, ns := range []string{"team-a", "team-b"} {
		p := cfg.Policies[ns+".oauth"]
		if p == nil || p.Compiled.ClientID != ns+"-client" || p.Compiled.ClientSecret.Reveal() != ns+"-secret" {
			t.Errorf("policy %s.oauth: %+v, want %s's client and secret", ns, p, ns)
		}
	}

	values, _, _ := strings.Cut(migrate("--values"), "\n---")
	var v struct {
		SecretMounts []mount `yaml:"secretMounts"`
	}
	if err := yaml.Unmarshal([]byte(values), &v); err != nil {
		t.Fatal(err)
	}
	want := []mount{
		{"idp-creds", "team-a", "team-a.idp-creds"},
		{"idp-creds", "team-b", "team-b.idp-creds"},
	}
	if !slices.Equal(v.SecretMounts, want) {
		t.Errorf("secretMounts %+v, want %+v", v.SecretMounts, want)
	}
}
