// Package secret holds secret values so that they cannot be printed by
// accident, and resolves the references a configuration uses to name them.
//
// A reference has the form urn:k8s:secret:<name>:<key> and names the file
// <dir>/<name>/<key>: a Kubernetes Secret of the operator's, mounted as a
// volume at dir. urn:k8s:secret:<namespace>/<name>:<key> names a Secret of
// another namespace (a Traefik Middleware's own), mounted at
// <dir>/namespaces/<namespace>/<name>: the two never share a folder, since
// the operator's Secret named "namespaces" is refused. Any other value that
// starts with "urn:" is a malformed reference; a value that does not is the
// secret itself.
package secret

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Value is a secret: a client secret, an access token, a private key. It
// prints as [redacted] with every fmt verb, in JSON and in zap fields, so
// that redaction follows the type. Reveal is the only way to the text.
type Value struct {
	s string
}

const redacted = "[redacted]"

// New wraps s.
func New(s string) Value { return Value{s: s} }

// Reveal returns the secret itself. Call it only where the secret is sent
// where it belongs.
func (v Value) Reveal() string { return v.s }

// Empty reports whether there is no secret.
func (v Value) Empty() bool { return v.s == "" }

// Equal reports whether two secrets are the same.
func (v Value) Equal(o Value) bool { return v.s == o.s }

// String returns [redacted], or "" when there is no secret.
func (v Value) String() string {
	if v.s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from showing the secret.
func (v Value) GoString() string { return "secret.Value(" + v.String() + ")" }

// Format prints the redacted form whatever the verb.
func (v Value) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", v.String())
		return
	}
	io.WriteString(f, v.String())
}

// MarshalJSON writes the redacted form.
func (v Value) MarshalJSON() ([]byte, error) { return []byte(`"` + v.String() + `"`), nil }

// MarshalText writes the redacted form, for YAML and text encoders.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// RefPrefix starts every secret reference.
const RefPrefix = "urn:k8s:secret:"

// MaxFileBytes bounds a secret file, as Kubernetes bounds a Secret.
const MaxFileBytes = 1 << 20

// NamespacesDir is the folder of the secrets directory that holds the
// Secrets of other namespaces, <dir>/namespaces/<namespace>/<name>/<key>. It
// is no Secret of the operator's: a reference to a Secret of that name is
// refused.
const NamespacesDir = "namespaces"

var (
	// A Secret's name is a DNS subdomain; a key is letters, digits, "-", "_"
	// and "."; a namespace is a DNS label.
	nameRE      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	keyRE       = regexp.MustCompile(`^[-._a-zA-Z0-9]{1,253}$`)
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// ValidNamespace reports whether ns is a Kubernetes namespace's name (a DNS
// label), and so a folder name that cannot lead out of NamespacesDir.
func ValidNamespace(ns string) bool { return namespaceRE.MatchString(ns) }

// Ref is a parsed secret reference.
type Ref struct {
	Namespace string // empty for the operator's own Secrets
	Name      string
	Key       string
}

// String is the reference as a configuration writes it.
func (r Ref) String() string {
	if r.Namespace != "" {
		return RefPrefix + r.Namespace + "/" + r.Name + ":" + r.Key
	}
	return RefPrefix + r.Name + ":" + r.Key
}

// Dir is the folder under the secrets directory where r's Secret is
// mounted: <name>, or namespaces/<namespace>/<name>.
func (r Ref) Dir() string {
	if r.Namespace != "" {
		return filepath.Join(NamespacesDir, r.Namespace, r.Name)
	}
	return r.Name
}

// ErrMalformedRef reports a value that starts with "urn:" but is not a valid reference.
var ErrMalformedRef = errors.New("malformed secret reference")

// IsRef reports whether s is meant as a reference rather than a literal secret.
func IsRef(s string) bool { return strings.HasPrefix(s, "urn:") }

// Resolver reads referenced secrets from a directory and remembers which
// files it read, so that they can be watched.
type Resolver struct {
	Dir    string
	files  []string
	digest []byte // SHA-256 over every file read, in order
}

// Resolve returns s itself, or the content of the file s references with one
// trailing newline removed. Its errors name the reference, never a literal secret.
func (r *Resolver) Resolve(s string) (Value, error) {
	if !IsRef(s) {
		return New(s), nil
	}
	ref, err := ParseRef(s)
	if err != nil {
		return Value{}, err
	}
	path := filepath.Join(r.Dir, ref.Dir(), ref.Key)
	r.files = append(r.files, path)
	data, err := ReadFile(path, MaxFileBytes)
	if err != nil {
		return Value{}, fmt.Errorf("secret %s: %w", s, err)
	}
	h := sha256.New()
	h.Write(r.digest)
	fmt.Fprintf(h, "%d:%s%d:", len(path), path, len(data))
	h.Write(data)
	r.digest = h.Sum(nil)
	text := string(data)
	if t, ok := strings.CutSuffix(text, "\n"); ok {
		text = strings.TrimSuffix(t, "\r")
	}
	return New(text), nil
}

// Files returns the files Resolve has read or tried to read.
func (r *Resolver) Files() []string { return r.files }

// Digest returns a SHA-256 over the paths and contents of every file read,
// so that a change to any of them shows; it reveals nothing of them.
func (r *Resolver) Digest() []byte { return r.digest }

// ParseRef splits a reference urn:k8s:secret:[<namespace>/]<name>:<key>. A
// malformed one gets an error that shows the expected form and, when the
// mistake is plain, how to mend it. The error never repeats the value: a
// literal secret may start with "urn:" too.
func ParseRef(ref string) (Ref, error) {
	rest, ok := strings.CutPrefix(ref, RefPrefix)
	parts := strings.Split(rest, ":")
	if ok && len(parts) == 2 {
		r := Ref{Name: parts[0], Key: parts[1]}
		if ns, name, found := strings.Cut(parts[0], "/"); found {
			r.Namespace, r.Name = ns, name
		}
		switch {
		case r.Namespace == "" && r.Name == NamespacesDir:
			return Ref{}, fmt.Errorf(`%w: a Secret named %q would be mounted where the Secrets of other namespaces are (<secrets.dir>/%s/<namespace>/<name>): give it another name`, ErrMalformedRef, NamespacesDir, NamespacesDir)
		case (r.Namespace == "" && !strings.Contains(parts[0], "/") || ValidNamespace(r.Namespace)) &&
			nameRE.MatchString(r.Name) && keyRE.MatchString(r.Key) && r.Key != "." && r.Key != "..":
			return r, nil
		}
	}
	hint := ""
	switch all := strings.Split(ref, ":"); {
	case ok && len(parts) == 2 && strings.Contains(parts[0], "/"):
		hint = ` or urn:k8s:secret:<namespace>/<name>:<key>; a namespace is a DNS label (lower-case letters, digits and "-"), a name is a DNS subdomain (lower-case letters, digits, "-" and "."), a key is letters, digits, "-", "_" and "."`
	case ok && len(parts) == 2:
		hint = `; a name is a DNS subdomain (lower-case letters, digits, "-" and "."), a key is letters, digits, "-", "_" and "."`
	case !ok && len(all) == 5 && all[0] == "urn" && all[1] == "k8s" && nameRE.MatchString(all[3]) && keyRE.MatchString(all[4]):
		// The Traefik Hub document's own example reads urn:k8s:<name>:<name>:<key>.
		hint = "; it reads urn:k8s:<a>:<b>:<c>, like the Traefik Hub document's example: write urn:k8s:secret:<b>:<c>"
	}
	return Ref{}, fmt.Errorf(`%w: want urn:k8s:secret:<name>:<key>%s (the value is not repeated: a secret may start with "urn:" too)`, ErrMalformedRef, hint)
}

// ReadFile reads a file of at most limit bytes, refusing a larger one
// without reading it all. Configuration and secret files are read with it.
func ReadFile(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("more than %d bytes", limit)
	}
	return data, nil
}
