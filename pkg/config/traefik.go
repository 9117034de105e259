package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/traefik"
)

// policyFiles loads the Middleware manifests cfg.PolicyFiles name, with
// pkg/traefik: each becomes the policy <namespace>.<name>, with Traefik
// Hub's fields only, reading Secrets of its own namespace only.
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

// middlewares reads one file of Traefik manifests.
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

	f, err := traefik.Read(file, data, traefik.Options{})
	for _, e := range flatten(err) {
		var tp *traefik.Problem
		if !errors.As(e, &tp) {
			l.problem(0, "", "%v", e)
			continue
		}
		l.problems = append(l.problems, &Problem{File: tp.File, Line: tp.Line, Path: tp.Path, Msg: tp.Msg})
	}
	if f == nil {
		return
	}
	for _, s := range f.Skipped {
		l.warnings = append(l.warnings, fmt.Sprintf("%s: line %d: skipped %s %q: %s", l.file, s.Line, s.Kind, s.Name, s.Why))
	}
	for _, mw := range f.Middlewares {
		l.middleware(mw, cfg)
	}
}

// middleware turns one Middleware into the policy <namespace>.<name>. What
// traefik.Read returns holds Traefik Hub's fields only, its secret
// references in the Middleware's namespace.
func (l *loader) middleware(mw *traefik.Middleware, cfg *Config) {
	name := mw.PolicyName()
	path := "policies." + name
	if _, ok := cfg.Policies[name]; ok {
		l.problem(mw.Line, path, "a policy named %q is already defined", name)
		return
	}
	l.walk(mw.Plugin, reflect.TypeFor[Policy](), path)
	l.lines[path] = position{l.file, mw.Line}
	p := &Policy{}
	if err := mw.Plugin.Decode(p); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			l.problem(mw.Plugin.Line, path, "%v", err)
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

// flatten lists the errors errors.Join joined.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}
