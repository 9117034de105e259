package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// MigrateOptions say what MigrateTraefik writes.
type MigrateOptions struct {
	// Address is extauthz's HTTP mode as Traefik reaches it, without a
	// path, such as http://extauthz.extauthz.svc:8001.
	Address string
	// Values writes values for the Helm chart (config, secretMounts)
	// instead of a configuration file.
	Values bool
}

// MigrateInput is one file of Kubernetes manifests.
type MigrateInput struct {
	Name string
	Data []byte
}

// DefaultMigrateAddress is extauthz's HTTP mode as the Helm chart serves it
// in namespace extauthz.
const DefaultMigrateAddress = "http://extauthz.extauthz.svc:8001"

// encryptionKeyRef is where migrated Redis stores find their encryption
// key: a Secret the operator creates.
const encryptionKeyRef = "urn:k8s:secret:extauthz-redis:encryptionKey"

// hubSecretRef is the Traefik Hub document's way of writing a secret
// reference, urn:k8s:<a>:<b>:<c>, for urn:k8s:secret:<b>:<c>.
var hubSecretRef = regexp.MustCompile(`^urn:k8s:([^:]+):([^:]+):([^:]+)$`)

// MigrateTraefik reads Traefik Middleware manifests with an
// oAuthClientCredentials plugin (Traefik Hub's, in the traefik.io or
// traefik.containo.us API group) and writes what replaces them: the
// extauthz policies, one per Middleware and named after it, then for each a
// Middleware of the same name and namespace that sends requests to
// extauthz with forwardAuth, so that routes referring to it need no
// change. Other manifests are skipped; notes say what was changed or needs
// doing. Problems (unknown fields, a missing url) are returned, and then
// nothing is written.
func MigrateTraefik(inputs []MigrateInput, o MigrateOptions, w io.Writer) (notes []string, err error) {
	if o.Address == "" {
		o.Address = DefaultMigrateAddress
	}
	o.Address = strings.TrimSuffix(o.Address, "/")
	type migrated struct {
		name, namespace string
		policy          *yaml.Node
		headers         []string
	}
	var (
		out      []migrated
		problems []error
		secrets  []string
		redis    bool
	)
	for _, in := range inputs {
		dec := yaml.NewDecoder(bytes.NewReader(in.Data))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: %w", in.Name, err)
			}
			if len(doc.Content) == 0 {
				continue
			}
			n := doc.Content[0]
			var head struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name      string `yaml:"name"`
					Namespace string `yaml:"namespace"`
				} `yaml:"metadata"`
			}
			if err := n.Decode(&head); err != nil {
				return nil, fmt.Errorf("%s: line %d: not a Kubernetes manifest: %w", in.Name, n.Line, err)
			}
			at := fmt.Sprintf("%s: line %d: %s %q", in.Name, n.Line, head.Kind, head.Metadata.Name)
			if head.Kind == "Secret" && head.APIVersion == "v1" {
				notes = append(notes, at+": left as it is; extauthz reads it mounted under secrets.dir")
				continue
			}
			plugin := child(n, "spec", "plugin", "oAuthClientCredentials")
			if head.Kind != "Middleware" || !slices.Contains(traefikAPIVersions, head.APIVersion) || plugin == nil {
				notes = append(notes, at+": skipped: not a Traefik Middleware with spec.plugin.oAuthClientCredentials")
				continue
			}
			if head.Metadata.Name == "" {
				problems = append(problems, fmt.Errorf("%s: a Middleware without metadata.name", at))
				continue
			}
			if slices.ContainsFunc(out, func(m migrated) bool { return m.name == head.Metadata.Name }) {
				problems = append(problems, fmt.Errorf("%s: two Middlewares of this name: policies are named after them (rename one)", at))
				continue
			}
			m := migrated{name: head.Metadata.Name, namespace: head.Metadata.Namespace, policy: plugin}
			// Secret references: the documented form, and the names to mount.
			walkScalars(plugin, func(s *yaml.Node) {
				if g := hubSecretRef.FindStringSubmatch(s.Value); g != nil && g[1] != "secret" {
					fixed := "urn:k8s:secret:" + g[2] + ":" + g[3]
					notes = append(notes, fmt.Sprintf("%s: line %d: a secret reference as the Traefik Hub document writes it, urn:k8s:<a>:<b>:<c>, rewritten as urn:k8s:secret:<b>:<c>", at, s.Line))
					s.Value = fixed
				}
				if strings.HasPrefix(s.Value, "urn:k8s:secret:") {
					if name, _, _ := strings.Cut(strings.TrimPrefix(s.Value, "urn:k8s:secret:"), ":"); !slices.Contains(secrets, name) {
						secrets = append(secrets, name)
					}
				}
			})
			// What the plugin says must be what extauthz reads.
			var p Policy
			var buf bytes.Buffer
			enc := yaml.NewEncoder(&buf)
			if err := enc.Encode(plugin); err != nil {
				return nil, err
			}
			strict := yaml.NewDecoder(&buf)
			strict.KnownFields(true)
			if err := strict.Decode(&p); err != nil {
				problems = append(problems, fmt.Errorf("%s: %v", at, err))
				continue
			}
			if v := child(plugin, "clientSecret"); v != nil && !strings.HasPrefix(v.Value, "urn:k8s:secret:") {
				notes = append(notes, fmt.Sprintf("%s: line %d: clientSecret is written out in the Middleware: put it in a Secret and refer to it as urn:k8s:secret:<name>:<key>", at, v.Line))
			}
			if p.URL == "" {
				problems = append(problems, fmt.Errorf("%s: no url: the token endpoint is required", at))
				continue
			}
			if store := child(plugin, "store"); store != nil && child(store, "redis") != nil {
				if child(store, "encryptionKey") == nil {
					store.Content = append(store.Content,
						&yaml.Node{Kind: yaml.ScalarNode, Value: "encryptionKey"},
						&yaml.Node{Kind: yaml.ScalarNode, Value: encryptionKeyRef, LineComment: "extauthz seals what it stores: create this Secret (README: Redis)"})
					redis = true
				}
			}
			m.headers = append(m.headers, "Authorization")
			for h := range p.ForwardHeaders {
				m.headers = append(m.headers, h)
			}
			slices.Sort(m.headers[1:])
			out = append(out, m)
		}
	}
	if len(problems) > 0 {
		return notes, errors.Join(problems...)
	}
	if len(out) == 0 {
		return notes, errors.New("no Traefik Middleware with spec.plugin.oAuthClientCredentials")
	}
	if redis {
		secrets = append(secrets, "extauthz-redis")
		notes = append(notes, "create the Secret extauthz-redis with the key encryptionKey: kubectl create secret generic extauthz-redis --from-literal=encryptionKey=\"$(openssl rand -base64 32)\"")
	}

	// The policies, as a configuration or as the chart's values.
	policies := &yaml.Node{Kind: yaml.MappingNode}
	for _, m := range out {
		policies.Content = append(policies.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: m.name}, m.policy)
	}
	cfg := mapping("policies", policies)
	var head string
	if o.Values {
		head = "# Values for the extauthz Helm chart (deploy/helm/extauthz), from Traefik Middleware\n" +
			"# manifests by extauthz migrate: helm upgrade --install extauthz deploy/helm/extauthz -f <this file>\n"
		mounts := &yaml.Node{Kind: yaml.SequenceNode}
		for _, s := range secrets {
			mounts.Content = append(mounts.Content, mapping("name", &yaml.Node{Kind: yaml.ScalarNode, Value: s}))
		}
		cfg = mapping("config", cfg)
		if len(secrets) > 0 {
			cfg.Content = append(cfg.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "secretMounts", HeadComment: "The Secrets the policies read, mounted under secrets.dir."}, mounts)
		}
	} else {
		head = "# extauthz policies from Traefik Middleware manifests (extauthz migrate): add them to the\n" +
			"# configuration's policies; mount the Secrets they read under secrets.dir" + secretList(secrets) + ".\n"
	}
	if _, err := io.WriteString(w, head); err != nil {
		return nil, err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	// The Middlewares that take the old ones' place.
	for _, m := range out {
		meta := mapping("name", &yaml.Node{Kind: yaml.ScalarNode, Value: m.name})
		if m.namespace != "" {
			meta.Content = append(meta.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "namespace"}, &yaml.Node{Kind: yaml.ScalarNode, Value: m.namespace})
		}
		flow := func(values ...string) *yaml.Node {
			n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			for _, v := range values {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: v, Style: yaml.DoubleQuotedStyle})
			}
			return n
		}
		fa := &yaml.Node{Kind: yaml.MappingNode}
		fa.Content = append(fa.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: "address"}, &yaml.Node{Kind: yaml.ScalarNode, Value: o.Address + "/policy/" + m.name},
			&yaml.Node{Kind: yaml.ScalarNode, Value: "authRequestHeaders"}, flow("Authorization"),
			&yaml.Node{Kind: yaml.ScalarNode, Value: "authResponseHeaders"}, flow(m.headers...))
		fa.Content[3].LineComment = "only the caller's credentials reach extauthz"
		fa.Content[5].LineComment = "the token and claim headers, onto the upstream request"
		doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: fmt.Sprintf("In place of the Middleware %s: routes that use it need no change.", m.name)}
		doc.Content = append(doc.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: "apiVersion"}, &yaml.Node{Kind: yaml.ScalarNode, Value: "traefik.io/v1alpha1"},
			&yaml.Node{Kind: yaml.ScalarNode, Value: "kind"}, &yaml.Node{Kind: yaml.ScalarNode, Value: "Middleware"},
			&yaml.Node{Kind: yaml.ScalarNode, Value: "metadata"}, meta,
			&yaml.Node{Kind: yaml.ScalarNode, Value: "spec"}, mapping("forwardAuth", fa))
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
	}
	return notes, enc.Close()
}

// mapping is {key: value}.
func mapping(key string, value *yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: key}, value}}
}

func secretList(secrets []string) string {
	if len(secrets) == 0 {
		return ""
	}
	return " (" + strings.Join(secrets, ", ") + ")"
}

// walkScalars calls f on every scalar under n.
func walkScalars(n *yaml.Node, f func(*yaml.Node)) {
	if n.Kind == yaml.ScalarNode {
		f(n)
	}
	for _, c := range n.Content {
		walkScalars(c, f)
	}
}
