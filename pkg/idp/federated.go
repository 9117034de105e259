package idp

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/pkg/secret"
)

// minAssertionLife is how long a federated assertion must still be valid
// to be sent: the kubelet renews a projected token long before that.
const minAssertionLife = time.Minute

// maxAssertionBytes bounds an assertion file.
const maxAssertionBytes = 64 << 10

// assertionFile is a federated_jwt assertion kept in a file that another
// party rewrites (the kubelet, through ..data): read again only when the
// file changes, never per request.
type assertionFile struct {
	path string

	mu   sync.Mutex
	seen os.FileInfo // the file the assertion was read from
	jwt  string
	exp  time.Time
}

// read returns the assertion, or why it cannot be sent: the file cannot be
// read, holds no JWT, or the JWT expires within a minute of now.
func (f *assertionFile) read(now time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	// The kubelet swaps in a new file (another inode); an editor may
	// rewrite it in place (another modification time or size).
	if f.seen == nil || !os.SameFile(f.seen, st) || !st.ModTime().Equal(f.seen.ModTime()) || st.Size() != f.seen.Size() {
		jwtText, exp, err := ReadAssertion(f.path)
		if err != nil {
			return "", err
		}
		f.jwt, f.exp, f.seen = jwtText, exp, st
	}
	if f.exp.Sub(now) < minAssertionLife {
		return "", fmt.Errorf("client assertion in %s expires at %s: the file is not being renewed", f.path, f.exp.UTC().Format(time.RFC3339))
	}
	return f.jwt, nil
}

// AssertionIdentity is what stays of a federated assertion across its
// rotations: its issuer, subject and audience.
type AssertionIdentity struct {
	Issuer, Subject string
	Audience        []string
}

// ReadAssertion reads a JWT from path (one trailing newline dropped) and
// its exp, unverified: the token endpoint verifies it.
func ReadAssertion(path string) (string, time.Time, error) {
	text, claims, err := readAssertion(path)
	if err != nil {
		return "", time.Time{}, err
	}
	if claims.ExpiresAt == nil {
		return "", time.Time{}, fmt.Errorf("client assertion in %s has no exp", path)
	}
	return text, claims.ExpiresAt.Time, nil
}

// ReadAssertionIdentity reads the issuer, subject and audience of the JWT
// in path, unverified.
func ReadAssertionIdentity(path string) (AssertionIdentity, error) {
	_, claims, err := readAssertion(path)
	if err != nil {
		return AssertionIdentity{}, err
	}
	return AssertionIdentity{Issuer: claims.Issuer, Subject: claims.Subject, Audience: claims.Audience}, nil
}

func readAssertion(path string) (string, *jwt.RegisteredClaims, error) {
	data, err := secret.ReadFile(path, maxAssertionBytes)
	if err != nil {
		return "", nil, fmt.Errorf("client assertion: %w", err)
	}
	text := strings.TrimSpace(string(data))
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(text, &claims); err != nil {
		return "", nil, fmt.Errorf("client assertion in %s is not a JWT", path)
	}
	return text, &claims, nil
}
