package traefik

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/internal/suggest"
	"github.com/extauthz/extauthz/pkg/secret"
)

func middleware(meta, plugin string) string {
	return "apiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata:\n" + meta + "spec:\n  plugin:\n    oAuthClientCredentials:\n" + plugin
}

func TestRead(t *testing.T) {
	for _, tt := range []struct {
		name        string
		give        string
		o           Options
		wantPolicy  string
		wantRefs    map[string]string // field → the reference it holds after Read
		wantSecrets []secret.Ref
		wantErr     []string
	}{
		{
			name: "namespaced",
			give: middleware("  name: oauth\n  namespace: team-a\n",
				"      url: https://idp/t\n      clientID: urn:k8s:secret:idp-creds:clientID\n      clientSecret: urn:k8s:secret:idp-creds:clientSecret\n"+
					"      clientConfig: {tls: {ca: 'urn:k8s:secret:tls:ca'}}\n"),
			wantPolicy: "team-a.oauth",
			wantRefs: map[string]string{
				"clientID":     "urn:k8s:secret:team-a/idp-creds:clientID",
				"clientSecret": "urn:k8s:secret:team-a/idp-creds:clientSecret",
			},
			wantSecrets: []secret.Ref{ref("team-a", "idp-creds", "clientID"), ref("team-a", "idp-creds", "clientSecret"), ref("team-a", "tls", "ca")},
		},
		{
			name:        "no namespace: default's",
			give:        middleware("  name: oauth\n", "      url: https://idp/t\n      clientID: x\n      clientSecret: urn:k8s:secret:partner-idp:clientSecret\n"),
			wantPolicy:  "default.oauth",
			wantRefs:    map[string]string{"clientSecret": "urn:k8s:secret:default/partner-idp:clientSecret"},
			wantSecrets: []secret.Ref{ref("default", "partner-idp", "clientSecret")},
		},
		{
			name:       "literals stay",
			give:       middleware("  name: oauth\n", "      url: https://idp/t\n      clientID: x\n      clientSecret: 'a:b:c'\n"),
			wantPolicy: "default.oauth",
			wantRefs:   map[string]string{"clientSecret": "a:b:c"},
		},
		{
			name:       "the Traefik Hub document's form, left for the configuration to refuse",
			give:       middleware("  name: oauth\n", "      url: https://idp/t\n      clientID: urn:k8s:s:s:clientID\n"),
			wantPolicy: "default.oauth",
			wantRefs:   map[string]string{"clientID": "urn:k8s:s:s:clientID"},
		},
		{
			name:        "the Traefik Hub document's form, rewritten",
			give:        middleware("  name: oauth\n  namespace: shop\n", "      url: https://idp/t\n      clientID: urn:k8s:s:s:clientID\n"),
			o:           Options{HubRefs: true},
			wantPolicy:  "shop.oauth",
			wantRefs:    map[string]string{"clientID": "urn:k8s:secret:shop/s:clientID"},
			wantSecrets: []secret.Ref{ref("shop", "s", "clientID")},
		},
		{
			name:    "the Traefik Hub document's form naming a namespace",
			give:    middleware("  name: oauth\n  namespace: team-b\n", "      url: https://idp/t\n      clientID: urn:k8s:s:team-a/s:clientID\n"),
			o:       Options{HubRefs: true},
			wantErr: []string{"f.yaml: line 10: spec.plugin.oAuthClientCredentials.clientID: a secret reference that names a namespace: a Middleware reads Secrets of its own namespace (team-b) only"},
		},
		{
			name: "fields Traefik Hub does not have",
			give: middleware("  name: oauth\n", "      url: https://idp/t\n      authMethod: federated_jwt\n      clientAssertion: {file: /etc/passwd}\n"+
				"      scopes: [a]\n      dpop: {key: 'urn:k8s:secret:dpop:key'}\n      store: {encryptionKey: x, redis: {timeoutMillis: 5}}\n      clientConfig: {tls: {insecureSkipverify: true}}\n"),
			wantErr: []string{
				`f.yaml: line 9: spec.plugin.oAuthClientCredentials.authMethod: not a field of Traefik Hub's oAuthClientCredentials middleware, whose fields here are audience, claims, clientConfig, clientID, clientSecret, forwardHeaders, store, url, usernameClaim; extauthz's own fields belong in its configuration, which a manifest cannot set`,
				`f.yaml: line 10: spec.plugin.oAuthClientCredentials.clientAssertion: not a field`,
				`f.yaml: line 11: spec.plugin.oAuthClientCredentials.scopes: not a field`,
				`f.yaml: line 12: spec.plugin.oAuthClientCredentials.dpop: not a field`,
				`f.yaml: line 13: spec.plugin.oAuthClientCredentials.store.encryptionKey: not a field`,
				`f.yaml: line 13: spec.plugin.oAuthClientCredentials.store.redis.timeoutMillis: not a field`,
				`f.yaml: line 14: spec.plugin.oAuthClientCredentials.clientConfig.tls.insecureSkipverify: not a field of Traefik Hub's oAuthClientCredentials middleware (did you mean "insecureSkipVerify"?)`,
			},
		},
		{
			name: "malformed and namespaced references",
			give: middleware("  name: oauth\n  namespace: team-b\n", "      url: https://idp/t\n      clientID: urn:k8s:secret:team-a/idp:clientID\n"+
				"      clientSecret: urn:k8s:secret:../x:y\n      store: {redis: {endpoints: ['r:6379'], password: 'urn:k8s:secret:extauthz/redis:password'}}\n"),
			wantErr: []string{
				"f.yaml: line 10: spec.plugin.oAuthClientCredentials.clientID: a secret reference that names a namespace",
				"f.yaml: line 11: spec.plugin.oAuthClientCredentials.clientSecret: malformed secret reference",
				"f.yaml: line 12: spec.plugin.oAuthClientCredentials.store.redis.password: a secret reference that names a namespace",
			},
		},
		{
			name: "aliases and tags",
			give: "x: &x {authMethod: federated_jwt}\n" + middleware("  name: oauth\n  annotations: {a: &ref 'urn:k8s:secret:partner-idp:clientSecret'}\n",
				"      url: https://idp/t\n      clientSecret: *ref\n      clientConfig: *x\n      forwardHeaders: {A: !!binary YQ==, B: !local b}\n"),
			wantErr: []string{
				"f.yaml: line 11: spec.plugin.oAuthClientCredentials.clientSecret: a YAML alias (*ref)",
				"f.yaml: line 12: spec.plugin.oAuthClientCredentials.clientConfig: a YAML alias (*x)",
				"f.yaml: line 13: spec.plugin.oAuthClientCredentials.forwardHeaders.A: a value tagged !!binary",
				"f.yaml: line 13: spec.plugin.oAuthClientCredentials.forwardHeaders.B: a value tagged !local",
			},
		},
		{
			name:    "set twice",
			give:    middleware("  name: oauth\n", "      url: https://idp/t\n      clientSecret: a\n      clientSecret: urn:k8s:secret:partner-idp:clientSecret\n"),
			wantErr: []string{"f.yaml: line 10: spec.plugin.oAuthClientCredentials.clientSecret: set twice"},
		},
		{
			name:    "a type Traefik Hub does not have",
			give:    middleware("  name: oauth\n", "      url: [https://idp/t]\n      clientConfig: {timeoutSeconds: soon}\n"),
			wantErr: []string{"f.yaml: line 8: spec.plugin.oAuthClientCredentials: cannot unmarshal !!seq into string", "f.yaml: line 9: spec.plugin.oAuthClientCredentials: cannot unmarshal !!str `soon` into int"},
		},
		{
			name:    "a namespace that is a path",
			give:    middleware("  name: oauth\n  namespace: ../../etc\n", "      url: https://idp/t\n"),
			wantErr: []string{`f.yaml: line 1: metadata.namespace: "../../etc" is not a namespace`},
		},
		{
			name:    "a name that is no object's",
			give:    middleware("  name: Oauth/x\n", "      url: https://idp/t\n"),
			wantErr: []string{`f.yaml: line 1: metadata.name: "Oauth/x" is not a Kubernetes object name`},
		},
		{
			name:    "a name too long for a policy",
			give:    middleware("  name: "+strings.Repeat("n", 60)+"\n  namespace: team-a\n", "      url: https://idp/t\n"),
			wantErr: []string{"f.yaml: line 1: metadata.name: the policy's name, team-a." + strings.Repeat("n", 60) + ", is longer than 63 characters"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Read("f.yaml", []byte(tt.give), tt.o)
			if len(tt.wantErr) > 0 {
				for _, want := range tt.wantErr {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("error:\n%v\nwant:\n%s", err, want)
					}
				}
				if strings.Contains(fmt2(err), "partner-idp:clientSecret") {
					t.Errorf("the error repeats a value: %v", err)
				}
				if len(f.Middlewares) != 0 {
					t.Errorf("a Middleware with problems was returned: %+v", f.Middlewares[0])
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Middlewares) != 1 {
				t.Fatalf("%d Middlewares", len(f.Middlewares))
			}
			mw := f.Middlewares[0]
			if mw.PolicyName() != tt.wantPolicy {
				t.Errorf("policy %q, want %q", mw.PolicyName(), tt.wantPolicy)
			}
			for field, want := range tt.wantRefs {
				if got := child(mw.Plugin, field); got == nil || got.Value != want {
					t.Errorf("%s = %v, want %s", field, got, want)
				}
			}
			if !slices.Equal(mw.Secrets, tt.wantSecrets) {
				t.Errorf("Secrets %v, want %v", mw.Secrets, tt.wantSecrets)
			}
			// What is decoded is what was checked.
			var again Plugin
			if err := mw.Plugin.Decode(&again); err != nil || !reflect.DeepEqual(again, mw.Spec) {
				t.Errorf("decoded again: %+v, %v; Spec %+v", again, err, mw.Spec)
			}
		})
	}
}

func ref(namespace, name, key string) secret.Ref {
	return secret.Ref{Namespace: namespace, Name: name, Key: key}
}

func fmt2(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestReadSkips: other objects and other plugins are passed over, a
// Secret included, with their namespace.
func TestReadSkips(t *testing.T) {
	f, err := Read("f.yaml", []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: team-a}\n---\n"+
		"apiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata: {name: rl}\nspec: {plugin: {rateLimit: {average: 1}}}\n---\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Skipped{
		{Manifest{APIVersion: "v1", Kind: "Secret", Name: "s", Namespace: "team-a", NamespaceSet: true, Line: 1}, "not a Traefik Middleware"},
		{Manifest{APIVersion: "traefik.io/v1alpha1", Kind: "Middleware", Name: "rl", Namespace: "default", Line: 5}, "no spec.plugin.oAuthClientCredentials"},
	}
	if !reflect.DeepEqual(f.Skipped, want) || len(f.Middlewares) != 0 {
		t.Errorf("skipped %+v, want %+v", f.Skipped, want)
	}
}

// TestPluginIsTheReference: Plugin has exactly the fields of the Traefik
// Hub document's table. The document is beside the repository on a
// development machine only.
func TestPluginIsTheReference(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "reference", "traefik-hub-oauth-client-credentials.md"))
	if err != nil {
		t.Skip("the Traefik Hub document is not beside the repository")
	}
	var want []string
	for _, m := range regexp.MustCompile("(?m)^\\| <a id=\"opt-[^\"]+\"[^>]*>`([A-Za-z.]+)`</a> \\|").FindAllStringSubmatch(string(doc), -1) {
		want = append(want, m[1])
	}
	var got []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			got = append(got, path)
			return
		}
		for name, f := range suggest.Fields(t) {
			walk(f.Type, strings.TrimPrefix(path+"."+name, "."))
		}
	}
	walk(reflect.TypeFor[Plugin](), "")
	slices.Sort(want)
	slices.Sort(got)
	if len(want) < 20 || !slices.Equal(got, want) {
		t.Errorf("Plugin's fields:\n%v\nthe document's:\n%v", got, want)
	}
}

// TestMigrateMountsEachNamespace: Secrets of one name in two namespaces
// are two mounts, with copies of two names; the operator's own (the Redis
// encryption key) is a third, without a namespace.
func TestMigrateMountsEachNamespace(t *testing.T) {
	in := middleware("  name: oauth\n  namespace: team-a\n", "      url: https://idp/t\n      clientID: urn:k8s:secret:idp-creds:id\n      clientSecret: urn:k8s:secret:idp-creds:secret\n") +
		"---\n" + middleware("  name: oauth\n  namespace: team-b\n", "      url: https://idp/t\n      clientID: urn:k8s:secret:idp-creds:id\n      clientSecret: urn:k8s:secret:idp-creds:secret\n"+
		"      store: {redis: {endpoints: ['redis:6379'], password: 'urn:k8s:secret:redis:password'}}\n")
	var out strings.Builder
	if _, err := Migrate([]Input{{"in.yaml", []byte(in)}}, MigrateOptions{Values: true}, &out); err != nil {
		t.Fatal(err)
	}
	values, _, _ := strings.Cut(out.String(), "\n---")
	var v struct {
		Config struct {
			Policies map[string]map[string]any `yaml:"policies"`
		} `yaml:"config"`
		SecretMounts []map[string]string `yaml:"secretMounts"`
	}
	if err := yaml.Unmarshal([]byte(values), &v); err != nil {
		t.Fatal(err)
	}
	wantMounts := []map[string]string{
		{"name": "idp-creds", "namespace": "team-a", "secretName": "team-a.idp-creds"},
		{"name": "idp-creds", "namespace": "team-b", "secretName": "team-b.idp-creds"},
		{"name": "redis", "namespace": "team-b", "secretName": "team-b.redis"},
		{"name": "extauthz-redis"},
	}
	if !reflect.DeepEqual(v.SecretMounts, wantMounts) {
		t.Errorf("secretMounts %v, want %v", v.SecretMounts, wantMounts)
	}
	a, b := v.Config.Policies["team-a.oauth"], v.Config.Policies["team-b.oauth"]
	if a == nil || b == nil || a["clientSecret"] != "urn:k8s:secret:team-a/idp-creds:secret" || b["clientSecret"] != "urn:k8s:secret:team-b/idp-creds:secret" {
		t.Errorf("policies %v", v.Config.Policies)
	}
	if !strings.Contains(out.String(), "address: http://extauthz.extauthz.svc:8001/policy/team-b.oauth\n") {
		t.Errorf("the forwardAuth Middleware of team-b does not call its policy:\n%s", out.String())
	}
}

// FuzzRead: whatever a manifest holds, every Middleware Read returns
// decodes (aliases and tags included) to values whose secret references all
// name its own namespace, with no field Traefik Hub lacks.
func FuzzRead(f *testing.F) {
	for _, seed := range []string{
		middleware("  name: a\n  namespace: team-b\n", "      url: https://idp/t\n      clientSecret: urn:k8s:secret:partner-idp:clientSecret\n"),
		"x: &r urn:k8s:secret:p:k\n" + middleware("  name: a\n", "      url: https://idp/t\n      clientSecret: *r\n"),
		middleware("  name: a\n", "      url: https://idp/t\n      forwardHeaders: {A: !!binary dXJuOms4czpzZWNyZXQ6cDpr}\n      <<: {clientSecret: 'urn:k8s:secret:p:k'}\n"),
		middleware("  name: a\n", "      url: https://idp/t\n      clientID: urn:k8s:x:team-a/p:k\n      store: {redis: {password: 'urn:k8s:secret:team-a/p:k'}}\n"),
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, manifest string, hubRefs bool) {
		file, _ := Read("f.yaml", []byte(manifest), Options{HubRefs: hubRefs})
		for _, mw := range file.Middlewares {
			var decoded any
			if err := mw.Plugin.Decode(&decoded); err != nil {
				t.Fatalf("a Middleware Read returned does not decode: %v", err)
			}
			var walk func(v any, path string)
			walk = func(v any, path string) {
				switch v := v.(type) {
				case map[string]any:
					for k, c := range v {
						walk(c, path+"."+k)
					}
				case map[any]any:
					for k, c := range v {
						walk(c, fmt.Sprintf("%s.%v", path, k))
					}
				case []any:
					for _, c := range v {
						walk(c, path+"[]")
					}
				case string:
					if !strings.HasPrefix(v, secret.RefPrefix) {
						return
					}
					if ref, err := secret.ParseRef(v); err != nil || ref.Namespace != mw.Namespace {
						t.Errorf("%s: %q in a Middleware of namespace %s", path, v, mw.Namespace)
					}
				}
			}
			walk(decoded, PluginPath)
			var strict Plugin
			dec := yaml.NewDecoder(strings.NewReader(mustMarshal(t, decoded)))
			dec.KnownFields(true)
			if err := dec.Decode(&strict); err != nil {
				t.Errorf("a field Traefik Hub lacks: %v", err)
			}
		}
	})
}

func mustMarshal(t *testing.T, v any) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
