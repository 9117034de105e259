// Package traefik reads Traefik Middleware manifests that carry Traefik
// Hub's oAuthClientCredentials plugin: for the configuration's policyFiles
// (pkg/config turns what Read returns into policies) and for extauthz
// migrate (Migrate prints what replaces them).
//
// A manifest belongs to its namespace, as in Traefik: Read accepts the
// fields of Traefik Hub's middleware and no other (a manifest cannot turn on
// what only the operator's configuration may, such as federated_jwt's
// assertion file), no YAML aliases and no tagged values in the plugin (what
// is checked is what is decoded), and rewrites every secret reference
// urn:k8s:secret:<name>:<key> as urn:k8s:secret:<namespace>/<name>:<key>,
// which resolves under <secrets.dir>/namespaces/<namespace>/ and nowhere
// else. A reference that names a namespace itself is refused.
//
// This package imports nothing of pkg/config: it returns YAML nodes, which
// the configuration decodes as its own policies.
package traefik

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/internal/suggest"
	"github.com/extauthz/extauthz/pkg/secret"
)

// APIVersions are the Traefik API groups whose Middleware kind is read.
var APIVersions = []string{"traefik.io/v1alpha1", "traefik.containo.us/v1alpha1"}

// DefaultNamespace is a manifest's namespace when its metadata has none, as
// kubectl applies it without --namespace.
const DefaultNamespace = "default"

// PluginPath is where a Middleware holds the plugin.
const PluginPath = "spec.plugin.oAuthClientCredentials"

// maxPolicyName is the longest policy name the configuration accepts.
const maxPolicyName = 63

// objectNameRE is a Kubernetes object's name, a DNS subdomain.
var objectNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// hubRef is the Traefik Hub document's way of writing a secret reference,
// urn:k8s:<a>:<b>:<c>, for urn:k8s:secret:<b>:<c>.
var hubRef = regexp.MustCompile(`^urn:k8s:([^:]+):([^:]+):([^:]+)$`)

// Plugin is spec.plugin.oAuthClientCredentials with exactly the fields the
// Traefik Hub document defines; a manifest may set these and no other.
type Plugin struct {
	URL            string            `yaml:"url"`
	ClientID       string            `yaml:"clientID"`
	ClientSecret   string            `yaml:"clientSecret"`
	Audience       string            `yaml:"audience"`
	Claims         string            `yaml:"claims"`
	ForwardHeaders map[string]string `yaml:"forwardHeaders"`
	UsernameClaim  string            `yaml:"usernameClaim"`
	ClientConfig   *ClientConfig     `yaml:"clientConfig"`
	Store          *Store            `yaml:"store"`
}

// ClientConfig is how the token endpoint is reached.
type ClientConfig struct {
	TLS            *TLS `yaml:"tls"`
	TimeoutSeconds *int `yaml:"timeoutSeconds"`
	MaxRetries     *int `yaml:"maxRetries"`
}

// TLS is the token endpoint's TLS: PEM, or secret references.
type TLS struct {
	CA                 string `yaml:"ca"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// Store is where tokens are kept.
type Store struct {
	KeyPrefix *string `yaml:"keyPrefix"`
	Redis     *Redis  `yaml:"redis"`
}

// Redis is a Redis instance, cluster or Sentinel set.
type Redis struct {
	Endpoints []string  `yaml:"endpoints"`
	Username  string    `yaml:"username"`
	Password  string    `yaml:"password"`
	Database  int       `yaml:"database"`
	Cluster   bool      `yaml:"cluster"`
	TLS       *RedisTLS `yaml:"tls"`
	Sentinel  *Sentinel `yaml:"sentinel"`
}

// RedisTLS is Redis's TLS.
type RedisTLS struct {
	CABundle           string `yaml:"caBundle"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// Sentinel is Redis Sentinel's master set and credentials.
type Sentinel struct {
	MasterSet string `yaml:"masterSet"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// Manifest is a Kubernetes object as Read found it.
type Manifest struct {
	APIVersion string
	Kind       string
	Name       string
	// Namespace is metadata.namespace, or DefaultNamespace without one;
	// NamespaceSet says which.
	Namespace    string
	NamespaceSet bool
	Line         int // where the object starts
}

// String is <namespace>/<name>.
func (m *Manifest) String() string { return m.Namespace + "/" + m.Name }

// Middleware is a Middleware with the plugin.
type Middleware struct {
	Manifest
	// Plugin is spec.plugin.oAuthClientCredentials, checked, with its secret
	// references rewritten to name Secrets of Namespace.
	Plugin *yaml.Node
	// Spec is Plugin decoded.
	Spec Plugin
	// Secrets are the Secrets Plugin reads, each once, in order.
	Secrets []secret.Ref
}

// PolicyName is the name of the policy the Middleware becomes,
// <namespace>.<name>: a namespace has no dot, so Middlewares of different
// namespaces never share one, and none is an operator's policy without a dot.
func (m *Middleware) PolicyName() string { return PolicyName(m.Namespace, m.Name) }

// PolicyName is the policy name of the Middleware name in namespace.
func PolicyName(namespace, name string) string { return namespace + "." + name }

// Skipped is a manifest Read passed over, and why.
type Skipped struct {
	Manifest
	Why string
}

// File is what Read found in one file of manifests.
type File struct {
	Middlewares []*Middleware
	Skipped     []Skipped
	// Notes say what Options.HubRefs rewrote.
	Notes []string
}

// Options say how Read treats what it could mend.
type Options struct {
	// HubRefs rewrites the Traefik Hub document's urn:k8s:<a>:<b>:<c> as
	// urn:k8s:secret:<b>:<c> (then in the manifest's namespace), with a
	// note; without it the value is left for the configuration to refuse,
	// with a hint.
	HubRefs bool
}

// Problem is one thing wrong with a manifest.
type Problem struct {
	File string
	Line int    // 1-based, 0 when unknown
	Path string // the field, such as spec.plugin.oAuthClientCredentials.authMethod; empty for the object
	Msg  string
}

func (p *Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File + ": ")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Read reads one file of manifests, one YAML document each. Its error joins
// every *Problem found; a Middleware with a problem is left out of the File.
// Read must not resolve anything: it reads no Secret and no other file.
func Read(file string, data []byte, o Options) (*File, error) {
	r := &reader{file: file, o: o, out: &File{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			r.problem(0, "", "%v", err)
			break
		}
		if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
			continue // an empty document, as after a trailing ---
		}
		r.manifest(doc.Content[0])
	}
	return r.out, errors.Join(r.problems...)
}

type reader struct {
	file     string
	o        Options
	out      *File
	problems []error
}

func (r *reader) problem(line int, path, format string, args ...any) {
	r.problems = append(r.problems, &Problem{File: r.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// manifest reads one object: a Middleware with the plugin, or one skipped.
func (r *reader) manifest(n *yaml.Node) {
	var head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string `yaml:"name"`
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
	}
	if err := n.Decode(&head); err != nil {
		r.problem(n.Line, "", "not a Kubernetes manifest: %v", err)
		return
	}
	m := Manifest{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name,
		Namespace: head.Metadata.Namespace, NamespaceSet: head.Metadata.Namespace != "", Line: n.Line}
	if !m.NamespaceSet {
		m.Namespace = DefaultNamespace
	}
	plugin := child(n, "spec", "plugin", "oAuthClientCredentials")
	switch {
	case m.Kind != "Middleware" || !slices.Contains(APIVersions, m.APIVersion):
		r.out.Skipped = append(r.out.Skipped, Skipped{m, "not a Traefik Middleware"})
		return
	case plugin == nil:
		r.out.Skipped = append(r.out.Skipped, Skipped{m, "no " + PluginPath})
		return
	}
	before := len(r.problems)
	switch {
	case m.Name == "":
		r.problem(n.Line, "metadata.name", "a Middleware without a name")
	case !objectNameRE.MatchString(m.Name):
		r.problem(n.Line, "metadata.name", "%q is not a Kubernetes object name (lower-case letters, digits, '-' and '.')", m.Name)
	case !secret.ValidNamespace(m.Namespace):
		r.problem(n.Line, "metadata.namespace", "%q is not a namespace (a DNS label: lower-case letters, digits and '-')", m.Namespace)
	case len(PolicyName(m.Namespace, m.Name)) > maxPolicyName:
		r.problem(n.Line, "metadata.name", "the policy's name, %s, is longer than %d characters: shorten the Middleware's name", PolicyName(m.Namespace, m.Name), maxPolicyName)
	}
	if len(r.problems) > before {
		return
	}
	mw := &Middleware{Manifest: m, Plugin: plugin}
	r.check(mw, plugin, reflect.TypeFor[Plugin](), PluginPath, true)
	if len(r.problems) > before {
		return
	}
	if err := plugin.Decode(&mw.Spec); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			r.problem(plugin.Line, PluginPath, "%v", err)
			return
		}
		for _, msg := range te.Errors {
			var line int
			if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
				_, msg, _ = strings.Cut(msg, ": ")
			}
			r.problem(line, PluginPath, "%s", msg)
		}
		return
	}
	r.out.Middlewares = append(r.out.Middlewares, mw)
}

// scalarTags are the tags a plugin's value may have: those YAML resolves
// plain values to. Any other (!!binary decodes into other text than it
// reads; a local tag means nothing here) is refused.
var scalarTags = []string{"!!str", "!!int", "!!bool", "!!float", "!!null", "!!timestamp"}

// check walks n against the Traefik Hub fields t allows, refusing other
// fields, aliases and tagged values, and rewrites the secret references of
// its values into mw's namespace. value says n is a value (not a key).
func (r *reader) check(mw *Middleware, n *yaml.Node, t reflect.Type, path string, value bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.AliasNode:
		r.problem(n.Line, path, "a YAML alias (*%s): write the value out; a Middleware's plugin is read without aliases, so that what is checked is what is loaded", n.Value)
		return
	case yaml.ScalarNode:
		if !slices.Contains(scalarTags, n.ShortTag()) {
			r.problem(n.Line, path, "a value tagged %s: write it as plain text", n.Tag)
			return
		}
		if value {
			r.secretRef(mw, n, path)
		}
		return
	}
	if t == nil {
		// Not where the type has a mapping or a list: decoding refuses it,
		// once every node in it is checked all the same.
		for _, c := range n.Content {
			r.check(mw, c, nil, path, true)
		}
		return
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := suggest.Fields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			at := path + "." + key.Value
			if key.Kind != yaml.ScalarNode || !slices.Contains(scalarTags, key.ShortTag()) {
				r.problem(key.Line, path, "a key that is not plain text")
				continue
			}
			f, ok := fields[key.Value]
			switch {
			case !ok:
				r.problem(key.Line, at, "%s", unknownField(key.Value, fields))
				continue
			case seen[key.Value]:
				r.problem(key.Line, at, "set twice")
				continue
			}
			seen[key.Value] = true
			r.check(mw, val, f.Type, at, true)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			r.check(mw, key, nil, path, false)
			r.check(mw, val, t.Elem(), path+"."+key.Value, true)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range n.Content {
			r.check(mw, item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), true)
		}
	default:
		r.check(mw, n, nil, path, true)
	}
}

// secretRef rewrites a secret reference urn:k8s:secret:<name>:<key> as the
// same Secret of the Middleware's namespace; a reference that names a
// namespace, or a malformed one, is refused. Problems never repeat the
// value: a literal secret may start with "urn:" too.
func (r *reader) secretRef(mw *Middleware, n *yaml.Node, path string) {
	if g := hubRef.FindStringSubmatch(n.Value); r.o.HubRefs && g != nil && g[1] != "secret" {
		n.Value = secret.RefPrefix + g[2] + ":" + g[3]
		r.out.Notes = append(r.out.Notes, fmt.Sprintf("%s: line %d: %s: a secret reference as the Traefik Hub document writes it, urn:k8s:<a>:<b>:<c>, rewritten as urn:k8s:secret:<b>:<c> (a Secret of namespace %s)", r.file, n.Line, path, mw.Namespace))
	}
	if !strings.HasPrefix(n.Value, secret.RefPrefix) {
		return // a literal, or a malformed urn: that the configuration refuses with its hint
	}
	ref, err := secret.ParseRef(n.Value)
	switch {
	case err != nil:
		r.problem(n.Line, path, "%v", err)
		return
	case ref.Namespace != "":
		r.problem(n.Line, path, "a secret reference that names a namespace: a Middleware reads Secrets of its own namespace (%s) only, as urn:k8s:secret:<name>:<key>", mw.Namespace)
		return
	}
	ref.Namespace = mw.Namespace
	n.Value = ref.String()
	if !slices.Contains(mw.Secrets, ref) {
		mw.Secrets = append(mw.Secrets, ref)
	}
}

// child follows mapping keys from n.
func child(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// unknownField says that name is not a Traefik Hub field, with the closest
// one or the list of them.
func unknownField(name string, fields map[string]reflect.StructField) string {
	known := slices.Sorted(maps.Keys(fields))
	const msg = "not a field of Traefik Hub's oAuthClientCredentials middleware"
	best, bestDist := "", 3
	for _, k := range known {
		if d := suggest.Distance(strings.ToLower(name), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("%s (did you mean %q?)", msg, best)
	}
	return fmt.Sprintf("%s, whose fields here are %s; extauthz's own fields belong in its configuration, which a manifest cannot set", msg, strings.Join(known, ", "))
}
