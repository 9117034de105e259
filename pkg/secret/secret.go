// Package secret holds secret values so that they cannot be printed by
// accident, and resolves the references a configuration uses to name them.
//
// A reference has the form urn:k8s:secret:<name>:<key> and names the file
// <dir>/<name>/<key>: a Kubernetes Secret mounted as a volume at dir. Any
// other value that starts with "urn:" is a malformed reference; a value that
// does not is the secret itself.
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

var (
	// A Secret's name is a DNS subdomain; a key is letters, digits, "-", "_" and ".".
	nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	keyRE  = regexp.MustCompile(`^[-._a-zA-Z0-9]{1,253}$`)
)

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
	name, key, err := ParseRef(s)
	if err != nil {
		return Value{}, err
	}
	path := filepath.Join(r.Dir, name, key)
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

// ParseRef splits a reference urn:k8s:secret:<name>:<key>. A malformed one
// gets an error that shows the expected form and, when the mistake is
// plain, how to mend it. The error never repeats the value: a literal
// secret may start with "urn:" too.
func ParseRef(ref string) (name, key string, err error) {
	rest, ok := strings.CutPrefix(ref, RefPrefix)
	parts := strings.Split(rest, ":")
	if ok && len(parts) == 2 && nameRE.MatchString(parts[0]) && keyRE.MatchString(parts[1]) && parts[1] != "." && parts[1] != ".." {
		return parts[0], parts[1], nil
	}
	hint := ""
	switch all := strings.Split(ref, ":"); {
	case ok && len(parts) == 2:
		hint = `; a name is a DNS subdomain (lower-case letters, digits, "-" and "."), a key is letters, digits, "-", "_" and "."`
	case !ok && len(all) == 5 && all[0] == "urn" && all[1] == "k8s" && nameRE.MatchString(all[3]) && keyRE.MatchString(all[4]):
		// The Traefik Hub document's own example reads urn:k8s:<name>:<name>:<key>.
		hint = "; it reads urn:k8s:<a>:<b>:<c>, like the Traefik Hub document's example: write urn:k8s:secret:<b>:<c>"
	}
	return "", "", fmt.Errorf(`%w: want urn:k8s:secret:<name>:<key>%s (the value is not repeated: a secret may start with "urn:" too)`, ErrMalformedRef, hint)
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
