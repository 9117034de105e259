package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/pkg/secret"
)

// Traefik API groups whose Middleware kind is read.
var traefikAPIVersions = []string{"traefik.io/v1alpha1", "traefik.containo.us/v1alpha1"}

// policyFiles loads the Middleware manifests cfg.PolicyFiles name.
func (l *loader) policyFiles(cfg *Config) {
	for i, pattern := range cfg.PolicyFiles {
		path := fmt.Sprintf("policyFiles[%d]", i)
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(l.dir, pattern)
		}
		files, err := filepath.Glob(pattern)
		if err != nil {
			l.problem(l.lines[path].line, path, "%q is not a glob: %v", pattern, err)
			continue
		}
		if len(files) == 0 {
			l.warnings = append(l.warnings, fmt.Sprintf("%s: %q matches no file", path, pattern))
		}
		sort.Strings(files)
		for _, f := range files {
			if slices.Contains(cfg.Files, f) {
				continue // two globs matched it
			}
			cfg.Files = append(cfg.Files, f)
			l.middlewares(f, cfg)
		}
	}
	l.file = ""
}

// middlewares reads one file of Traefik manifests, one YAML document each.
func (l *loader) middlewares(file string, cfg *Config) {
	l.file = file
	data, err := secret.ReadFile(file, MaxFileBytes)
	if err != nil {
		l.problem(0, "", "%v", err)
		return
	}
	h := sha256.New()
	h.Write(l.digest)
	fmt.Fprintf(h, "%d:%s%d:", len(file), file, len(data))
	h.Write(data)
	l.digest = h.Sum(nil)

	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			l.problem(0, "", "%v", err)
			return
		}
		if len(doc.Content) == 0 {
			continue
		}
		l.middleware(doc.Content[0], cfg)
	}
}

// middleware turns one manifest into a policy, or skips it with a warning.
func (l *loader) middleware(n *yaml.Node, cfg *Config) {
	var head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	}
	if err := n.Decode(&head); err != nil {
		l.problem(n.Line, "", "not a Kubernetes manifest: %v", err)
		return
	}
	skip := func(why string) {
		l.warnings = append(l.warnings, fmt.Sprintf("%s: line %d: skipped %s %q: %s", l.file, n.Line, head.Kind, head.Metadata.Name, why))
	}
	if head.Kind != "Middleware" || !slices.Contains(traefikAPIVersions, head.APIVersion) {
		skip("not a Traefik Middleware")
		return
	}
	plugin := child(n, "spec", "plugin", "oAuthClientCredentials")
	if plugin == nil {
		skip("no spec.plugin.oAuthClientCredentials")
		return
	}
	name := head.Metadata.Name
	path := "policies." + name
	switch {
	case name == "":
		l.problem(n.Line, "", "a Middleware without metadata.name")
		return
	case cfg.Policies[name] != nil:
		l.problem(n.Line, path, "a policy named %q is already defined", name)
		return
	}
	l.walk(plugin, reflect.TypeFor[Policy](), path)
	l.lines[path] = position{l.file, n.Line}
	p := &Policy{}
	if err := plugin.Decode(p); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			l.problem(plugin.Line, path, "%v", err)
			return
		}
		for _, msg := range te.Errors {
			prob := typeProblem(msg).(*Problem)
			prob.File = l.file
			l.problems = append(l.problems, prob)
		}
		return
	}
	if cfg.Policies == nil {
		cfg.Policies = map[string]*Policy{}
	}
	cfg.Policies[name] = p
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
