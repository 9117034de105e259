package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/internal/suggest"
	"github.com/extauthz/extauthz/pkg/secret"
)

// MaxFileBytes bounds the configuration file.
const MaxFileBytes = 4 << 20

// Problem is one thing wrong with a configuration, placed by line and path.
type Problem struct {
	File string // a policy file the problem is in; empty for the configuration file
	Line int    // 1-based line in the file, 0 when unknown
	Path string // dotted path of the field, such as policies.orders.url
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

// Load reads, decodes, validates and compiles the configuration in path. Its
// error joins every Problem found (see errors.Join).
func Load(path string) (*Config, error) {
	data, err := secret.ReadFile(path, MaxFileBytes)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse is Load for data already read; path places relative secret
// directories and is recorded in the Config.
func Parse(data []byte, path string) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Problem{Msg: "the file is empty: at least one policy is needed"}
		}
		return nil, &Problem{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, &Problem{Line: next.Line, Msg: "more than one YAML document: the configuration is one document"}
	}

	l := &loader{lines: map[string]position{}, dir: filepath.Dir(path)}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	l.walk(root, reflect.TypeFor[Config](), "")

	cfg := &Config{Path: path}
	if err := root.Decode(cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &Problem{Msg: err.Error()}
		}
		for _, msg := range te.Errors {
			l.problems = append(l.problems, typeProblem(msg))
		}
	}
	if path != "" {
		cfg.Files = append(cfg.Files, path)
	}
	l.policyFiles(cfg)
	if len(l.problems) > 0 {
		return nil, errors.Join(l.problems...)
	}
	cfg.applyDefaults()
	if cfg.Secrets.Dir != "" && !filepath.IsAbs(cfg.Secrets.Dir) && path != "" {
		cfg.Secrets.Dir = filepath.Join(filepath.Dir(path), cfg.Secrets.Dir)
	}
	v := &validator{lines: l.lines}
	if path != "" {
		v.dir = filepath.Dir(path)
	}
	v.validate(cfg)
	if len(v.problems) > 0 {
		return nil, errors.Join(v.problems...)
	}
	cfg.Warnings = append(l.warnings, cfg.Warnings...)
	h := sha256.New()
	h.Write(data)
	h.Write(l.digest)
	h.Write(v.digest)
	cfg.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return cfg, nil
}

// loader checks the YAML tree against the Go types before decoding, so that
// an unknown field is reported with its line and full path, and records the
// line of every field for later problems.
type loader struct {
	lines    map[string]position
	file     string // the policy file being read; empty for the configuration
	dir      string // the configuration's directory, for relative globs
	problems []error
	warnings []string
	digest   []byte // of the policy files read
}

// position is where a field was written.
type position struct {
	file string
	line int
}

func (l *loader) problem(line int, path, format string, args ...any) {
	l.problems = append(l.problems, &Problem{File: l.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (l *loader) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	l.lines[path] = position{l.file, n.Line}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode && t != reflect.TypeFor[Duration]():
		fields := suggest.Fields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			f, ok := fields[key.Value]
			if !ok {
				l.problem(key.Line, path, "%s", unknownField(key.Value, fields))
				continue
			}
			l.walk(val, f.Type, join(path, key.Value))
			l.lines[join(path, key.Value)] = position{l.file, key.Line}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			l.walk(n.Content[i+1], t.Elem(), join(path, key.Value))
			l.lines[join(path, key.Value)] = position{l.file, key.Line}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			l.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// unknownField names the field and the closest known one.
func unknownField(name string, fields map[string]reflect.StructField) string {
	known := slices.Sorted(maps.Keys(fields))
	best, bestDist := "", 3
	lower := strings.ToLower(name)
	for _, k := range known {
		lk := strings.ToLower(k)
		d := suggest.Distance(lower, lk)
		if len(lower) >= 3 && (strings.HasPrefix(lk, lower) || strings.HasPrefix(lower, lk)) {
			d = min(d, 2) // "timeout" for "timeoutSeconds"
		}
		if lk == lower {
			d = 0
		}
		if d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field %q (did you mean %q?)", name, best)
	}
	return fmt.Sprintf("unknown field %q: want one of %s", name, strings.Join(known, ", "))
}

// typeProblem turns a yaml.v3 decoding message into a Problem, keeping its line.
func typeProblem(msg string) error {
	var line int
	if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
		_, rest, _ := strings.Cut(msg, ": ")
		return &Problem{Line: line, Msg: rest}
	}
	return &Problem{Msg: msg}
}
