package traefik

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/pkg/secret"
)

// MigrateOptions say what Migrate writes.
type MigrateOptions struct {
	// Address is extauthz's HTTP mode as Traefik reaches it, without a
	// path, such as http://extauthz.extauthz.svc:8001.
	Address string
	// Values writes values for the Helm chart (config, secretMounts)
	// instead of a configuration file.
	Values bool
}

// Input is one file of Kubernetes manifests.
type Input struct {
	Name string
	Data []byte
}

// DefaultAddress is extauthz's HTTP mode as the Helm chart serves it in
// namespace extauthz.
const DefaultAddress = "http://extauthz.extauthz.svc:8001"

// encryptionKeyRef is where migrated Redis stores find their encryption
// key: a Secret of the operator's, in extauthz's namespace.
var encryptionKeyRef = secret.Ref{Name: "extauthz-redis", Key: "encryptionKey"}

// maxSecretName bounds a Secret's name, a DNS subdomain.
const maxSecretName = 253

// CopyName is the name of the copy, in extauthz's namespace, of the Secret
// ref names in another namespace: <namespace>.<name>. A pod mounts Secrets
// of its own namespace only; a namespace has no dot, so two namespaces'
// Secrets of one name have copies of different names.
func CopyName(ref secret.Ref) string { return ref.Namespace + "." + ref.Name }

// Migrate reads Traefik Middleware manifests with an oAuthClientCredentials
// plugin (Traefik Hub's, in the traefik.io or traefik.containo.us API
// group) and writes what replaces them: the extauthz policies, one per
// Middleware and named <namespace>.<name>, then for each a Middleware of
// the same name and namespace that sends requests to extauthz with
// forwardAuth, so that routes referring to it need no change. The
// policies' secret references name Secrets of their Middleware's namespace
// (urn:k8s:secret:<namespace>/<name>:<key>); with Values, secretMounts
// mounts a copy of each where they look. Other manifests are skipped;
// notes say what was changed or needs doing. Problems (fields Traefik Hub
// does not have, a missing url) are returned, and then nothing is written.
func Migrate(inputs []Input, o MigrateOptions, w io.Writer) (notes []string, err error) {
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	o.Address = strings.TrimSuffix(o.Address, "/")
	type migrated struct {
		*Middleware
		headers []string
	}
	var (
		out      []migrated
		problems []error
		secrets  []secret.Ref // every Secret read, each once, in order
		redis    bool
	)
	for _, in := range inputs {
		f, err := Read(in.Name, in.Data, Options{HubRefs: true})
		problems = append(problems, err)
		if f == nil {
			continue
		}
		for _, s := range f.Skipped {
			at := fmt.Sprintf("%s: line %d: %s %q", in.Name, s.Line, s.Kind, s.Name)
			if s.Kind == "Secret" && s.APIVersion == "v1" && secret.ValidNamespace(s.Namespace) {
				notes = append(notes, fmt.Sprintf("%s: line %d: Secret %s: left as it is; extauthz reads a copy in its own namespace, mounted at <secrets.dir>/%s", in.Name, s.Line, &s.Manifest, secret.Ref{Namespace: s.Namespace, Name: s.Name}.Dir()))
				continue
			}
			notes = append(notes, at+": skipped: not a Traefik Middleware with "+PluginPath)
		}
		notes = append(notes, f.Notes...)
		for _, mw := range f.Middlewares {
			at := fmt.Sprintf("%s: line %d: Middleware %s", in.Name, mw.Line, &mw.Manifest)
			if !mw.NamespaceSet {
				notes = append(notes, fmt.Sprintf("%s: no metadata.namespace: taken as %s, as kubectl applies it; its policy is %s and its Secrets are namespace %s's", at, DefaultNamespace, mw.PolicyName(), DefaultNamespace))
			}
			if slices.ContainsFunc(out, func(m migrated) bool { return m.PolicyName() == mw.PolicyName() }) {
				problems = append(problems, fmt.Errorf("%s: two Middlewares of this name in one namespace (rename one)", at))
				continue
			}
			p := mw.Spec
			if p.URL == "" {
				problems = append(problems, fmt.Errorf("%s: no url: the token endpoint is required", at))
				continue
			}
			if v := child(mw.Plugin, "clientSecret"); v != nil && !strings.HasPrefix(v.Value, secret.RefPrefix) {
				notes = append(notes, fmt.Sprintf("%s: line %d: clientSecret is written out in the Middleware: put it in a Secret and refer to it as urn:k8s:secret:<name>:<key>", at, v.Line))
			}
			for _, ref := range mw.Secrets {
				if len(CopyName(ref)) > maxSecretName {
					problems = append(problems, fmt.Errorf("%s: the Secret %s/%s: the name of its copy in extauthz's namespace, %s, is longer than %d characters", at, ref.Namespace, ref.Name, CopyName(ref), maxSecretName))
				}
				ref.Key = ""
				if !slices.Contains(secrets, ref) {
					secrets = append(secrets, ref)
				}
			}
			if store := child(mw.Plugin, "store"); store != nil && child(store, "redis") != nil {
				store.Content = append(store.Content,
					&yaml.Node{Kind: yaml.ScalarNode, Value: "encryptionKey"},
					&yaml.Node{Kind: yaml.ScalarNode, Value: encryptionKeyRef.String(), LineComment: "extauthz seals what it stores: create this Secret (README: Redis)"})
				redis = true
			}
			m := migrated{Middleware: mw, headers: []string{"Authorization"}}
			for h := range p.ForwardHeaders {
				m.headers = append(m.headers, h)
			}
			slices.Sort(m.headers[1:])
			out = append(out, m)
		}
	}
	if err := errors.Join(problems...); err != nil {
		return notes, err
	}
	if len(out) == 0 {
		return notes, errors.New("no Traefik Middleware with " + PluginPath)
	}
	if redis {
		secrets = append(secrets, secret.Ref{Name: encryptionKeyRef.Name})
		notes = append(notes, "create the Secret extauthz-redis with the key encryptionKey in extauthz's namespace: kubectl create secret generic extauthz-redis --from-literal=encryptionKey=\"$(openssl rand -base64 32)\"")
	}
	for _, s := range secrets {
		if s.Namespace != "" && o.Values {
			notes = append(notes, fmt.Sprintf("copy the Secret %s/%s into extauthz's namespace as %s (a pod mounts Secrets of its own namespace only; an external secrets operator or a reflector can keep the copy current)", s.Namespace, s.Name, CopyName(s)))
		}
	}

	// The policies, as a configuration or as the chart's values.
	policies := &yaml.Node{Kind: yaml.MappingNode}
	for _, m := range out {
		policies.Content = append(policies.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: m.PolicyName()}, m.Plugin)
	}
	cfg := mapping("policies", policies)
	var head string
	if o.Values {
		head = "# Values for the extauthz Helm chart (deploy/helm/extauthz), from Traefik Middleware\n" +
			"# manifests by extauthz migrate: helm upgrade --install extauthz deploy/helm/extauthz -f <this file>\n"
		mounts := &yaml.Node{Kind: yaml.SequenceNode}
		for _, s := range secrets {
			m := mapping("name", scalar(s.Name))
			if s.Namespace != "" {
				m.Content = append(m.Content, scalar("namespace"), scalar(s.Namespace), scalar("secretName"), scalar(CopyName(s)))
				m.Content[5].LineComment = "its copy in extauthz's namespace"
			}
			mounts.Content = append(mounts.Content, m)
		}
		cfg = mapping("config", cfg)
		if len(secrets) > 0 {
			cfg.Content = append(cfg.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "secretMounts",
				HeadComment: "The Secrets the policies read: a Middleware's at <secretsDir>/namespaces/<namespace>/<name>, extauthz's own at <secretsDir>/<name>."}, mounts)
		}
	} else {
		head = "# extauthz policies from Traefik Middleware manifests (extauthz migrate): add them to the\n" +
			"# configuration's policies; mount the Secrets they read under secrets.dir" + secretList(secrets)
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
		meta := mapping("name", scalar(m.Name))
		if m.NamespaceSet {
			meta.Content = append(meta.Content, scalar("namespace"), scalar(m.Namespace))
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
			scalar("address"), scalar(o.Address+"/policy/"+m.PolicyName()),
			scalar("authRequestHeaders"), flow("Authorization"),
			scalar("authResponseHeaders"), flow(m.headers...))
		fa.Content[3].LineComment = "only the caller's credentials reach extauthz"
		fa.Content[5].LineComment = "the token and claim headers, onto the upstream request"
		doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: fmt.Sprintf("In place of the Middleware %s: routes that use it need no change.", &m.Manifest)}
		doc.Content = append(doc.Content,
			scalar("apiVersion"), scalar("traefik.io/v1alpha1"),
			scalar("kind"), scalar("Middleware"),
			scalar("metadata"), meta,
			scalar("spec"), mapping("forwardAuth", fa))
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
	}
	return notes, enc.Close()
}

// mapping is {key: value}.
func mapping(key string, value *yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar(key), value}}
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }

// secretList ends the configuration's head: where each Secret goes.
func secretList(secrets []secret.Ref) string {
	if len(secrets) == 0 {
		return ".\n"
	}
	var b strings.Builder
	b.WriteString(":\n")
	for _, s := range secrets {
		if s.Namespace != "" {
			fmt.Fprintf(&b, "#   %s: the Secret %s of namespace %s\n", s.Dir(), s.Name, s.Namespace)
		} else {
			fmt.Fprintf(&b, "#   %s: extauthz's own\n", s.Dir())
		}
	}
	return b.String()
}
