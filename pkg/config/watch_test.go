package config

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/harness"
)

func mountSecret(t *testing.T, dir string, version int, data map[string]string) {
	t.Helper()
	if err := harness.MountSecret(dir, version, data); err != nil {
		t.Fatal(err)
	}
}

// writeAtomically replaces a file by renaming a new one over it, as editors
// and configuration tools do.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type recorder struct {
	mu        sync.Mutex
	applied   []*Config
	refused   []error
	unchanged int
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied), len(r.refused)
}

// all returns how many configurations were applied, refused and found unchanged.
func (r *recorder) all() (applied, refused, unchanged int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied), len(r.refused), r.unchanged
}

func (r *recorder) last() *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[len(r.applied)-1]
}

// startWatcher runs a Watcher on path until the test ends. o's Path and
// callbacks are set here, and Current when o has none.
func startWatcher(t *testing.T, path string, o WatcherOptions) (*recorder, *Watcher) {
	t.Helper()
	if o.Current == nil {
		current, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		o.Current = current
	}
	rec := &recorder{}
	o.Path = path
	o.Apply = func(c *Config) error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.applied = append(rec.applied, c)
		return nil
	}
	o.Refused = func(err error) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.refused = append(rec.refused, err)
	}
	o.Unchanged = func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.unchanged++
	}
	w, err := NewWatcher(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return rec, w
}

// wantCounts lets a reload that is not wanted happen, then checks what
// happened.
func wantCounts(t *testing.T, rec *recorder, applied, refused, unchanged int) {
	t.Helper()
	// A negative assertion: this sleep only lets time pass, three quiet
	// periods, within which a change the watcher took notice of is loaded.
	time.Sleep(3 * DefaultQuiet)
	a, r, u := rec.all()
	if a != applied || r != refused || u != unchanged {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		t.Errorf("%d applied, %d refused, %d unchanged; want %d, %d, %d (refusals: %v)", a, r, u, applied, refused, unchanged, rec.refused)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	mountSecret(t, filepath.Join(secrets, "idp"), 1, map[string]string{"clientSecret": "first\n"})
	path := filepath.Join(dir, "config.yaml")
	base := "secrets: {dir: secrets}\npolicies:\n  a: {url: 'https://x/t', clientID: app, clientSecret: 'urn:k8s:secret:idp:clientSecret'}\n"
	writeAtomically(t, path, base)
	rec, w := startWatcher(t, path, WatcherOptions{})

	t.Run("a new policy", func(t *testing.T) {
		writeAtomically(t, path, base+"  b: {url: 'https://y/t'}\n")
		waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 1 })
		if _, ok := rec.last().Policies["b"]; !ok {
			t.Error("the reloaded configuration lacks the new policy")
		}
	})
	t.Run("a rotated Kubernetes secret", func(t *testing.T) {
		mountSecret(t, filepath.Join(secrets, "idp"), 2, map[string]string{"clientSecret": "second\n"})
		waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 2 })
		if got := rec.last().Policies["a"].Compiled.ClientSecret.Reveal(); got != "second" {
			t.Errorf("client secret %q after rotation", got)
		}
	})
	t.Run("an invalid change is refused", func(t *testing.T) {
		writeAtomically(t, path, "policies:\n  a: {url: ftp://x}\n")
		waitUntil(t, "the refusal", func() bool { _, n := rec.counts(); return n == 1 })
		if n, _ := rec.counts(); n != 2 {
			t.Errorf("an invalid configuration was applied")
		}
	})
	t.Run("the same content again reloads nothing", func(t *testing.T) {
		writeAtomically(t, path, base+"  b: {url: 'https://y/t'}\n")
		mountSecret(t, filepath.Join(secrets, "idp"), 3, map[string]string{"clientSecret": "second\n"})
		w.Reload()
		// The fixed configuration is the same as the one in service.
		waitUntil(t, "the reload to find nothing new", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return rec.unchanged > 0
		})
		if n, _ := rec.counts(); n != 2 {
			t.Errorf("%d reloads, want 2: unchanged files were applied", n)
		}
	})
	t.Run("SIGHUP reloads", func(t *testing.T) {
		if err := os.WriteFile(path, []byte(base), 0o600); err != nil { // in place, as some tools write
			t.Fatal(err)
		}
		w.Reload()
		waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 3 })
	})
}

// watchedDir writes a configuration with one policy whose client secret is
// the plain file secrets/idp/clientSecret, and returns the configuration's
// path and the secret's.
func watchedDir(t *testing.T, extra string) (path, secretFile string) {
	t.Helper()
	dir := t.TempDir()
	secretFile = filepath.Join(dir, "secrets", "idp", "clientSecret")
	if err := os.MkdirAll(filepath.Dir(secretFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "config.yaml")
	writeAtomically(t, path, "secrets: {dir: secrets}\n"+extra+
		"policies:\n  a: {url: 'https://x/t', clientID: app, clientSecret: 'urn:k8s:secret:idp:clientSecret'}\n")
	return path, secretFile
}

// TestWatcherIgnoresALogBesideTheConfiguration appends to a log in the
// configuration's directory, as `extauthz serve 2>> /etc/extauthz/log`
// does: nothing is loaded, so nothing is logged that would be appended
// in turn.
func TestWatcherIgnoresALogBesideTheConfiguration(t *testing.T) {
	path, secretFile := watchedDir(t, "")
	rec, _ := startWatcher(t, path, WatcherOptions{})
	for _, name := range []string{filepath.Join(filepath.Dir(path), "extauthz.log"), filepath.Join(filepath.Dir(secretFile), "extauthz.log")} {
		log, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			if _, err := fmt.Fprintf(log, `{"level":"info","msg":"line %d"}`+"\n", i); err != nil {
				t.Fatal(err)
			}
		}
		if err := log.Close(); err != nil {
			t.Fatal(err)
		}
	}
	wantCounts(t, rec, 0, 0, 0)

	// The watcher still sees what matters.
	if err := os.WriteFile(secretFile, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 1 })
}

// TestWatcherSecretContent changes a secret file in place: a new content
// reloads once, the same content (rewritten, touched) never.
func TestWatcherSecretContent(t *testing.T) {
	path, secretFile := watchedDir(t, "")
	rec, _ := startWatcher(t, path, WatcherOptions{})

	if err := os.WriteFile(secretFile, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 1 })
	if got := rec.last().Policies["a"].Compiled.ClientSecret.Reveal(); got != "second" {
		t.Errorf("client secret %q, want second", got)
	}
	wantCounts(t, rec, 1, 0, 0)

	if err := os.WriteFile(secretFile, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeAtomically(t, secretFile, "second\n")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(secretFile, later, later); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, rec, 1, 0, 0)
}

// TestWatcherCoalescesABurst writes the configuration 20 times in a row, in
// place, as a tool that writes in pieces does: one reload, of the last.
func TestWatcherCoalescesABurst(t *testing.T) {
	path, _ := watchedDir(t, "")
	rec, _ := startWatcher(t, path, WatcherOptions{})
	for i := range 20 {
		content := fmt.Sprintf("secrets: {dir: secrets}\npolicies:\n  a: {url: 'https://x/t', clientID: app-%d, clientSecret: 'urn:k8s:secret:idp:clientSecret'}\n", i)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n >= 1 })
	wantCounts(t, rec, 1, 0, 0)
	if got := rec.last().Policies["a"].Compiled.ClientID; got != "app-19" {
		t.Errorf("client id %q, want the last write's, app-19", got)
	}
}

// TestWatcherBoundsTheWait rewrites the configuration without pause: the
// changes are not put off until it stops, but loaded within MaxDelay.
func TestWatcherBoundsTheWait(t *testing.T) {
	path, _ := watchedDir(t, "")
	// A quiet period the writes below never leave: only the bound reloads.
	rec, _ := startWatcher(t, path, WatcherOptions{Quiet: time.Minute, MaxDelay: 200 * time.Millisecond})
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond) // paces the writes
	defer tick.Stop()
	for i := 0; ; i++ {
		if n, _ := rec.counts(); n > 0 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("rewriting the configuration without pause put the reload off")
		}
		writeAtomically(t, path, fmt.Sprintf("secrets: {dir: secrets}\npolicies:\n  a: {url: 'https://x/t', clientID: app-%d, clientSecret: 'urn:k8s:secret:idp:clientSecret'}\n", i))
		<-tick.C
	}
	t.Logf("reloaded %v after the first of the writes", time.Since(start).Round(time.Millisecond))
}

// TestWatcherPolicyFiles adds a manifest that a policyFiles glob matches:
// it is loaded; a file beside it that the glob does not match is not.
func TestWatcherPolicyFiles(t *testing.T) {
	path, _ := watchedDir(t, "policyFiles: ['middlewares/*.yaml']\n")
	dir := filepath.Join(filepath.Dir(path), "middlewares")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rec, _ := startWatcher(t, path, WatcherOptions{})

	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a manifest\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, rec, 0, 0, 0)

	writeAtomically(t, filepath.Join(dir, "orders.yaml"), `apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: orders}
spec: {plugin: {oAuthClientCredentials: {url: "https://x/t"}}}
`)
	waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 1 })
	// The policy is named after the Middleware (and its namespace).
	if names := slices.Collect(maps.Keys(rec.last().Policies)); len(names) != 2 || !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "orders") }) {
		t.Errorf("the new manifest's policy is not loaded: %v", slices.Collect(maps.Keys(rec.last().Policies)))
	}
	wantCounts(t, rec, 1, 0, 0)
}

// TestWatcherKubernetesSwap mounts the configuration as Kubernetes mounts
// a ConfigMap (config.yaml -> ..data/config.yaml, ..data -> a timestamped
// directory) and swaps it: once with new content, reloading once, then with
// the same, reloading nothing.
func TestWatcherKubernetesSwap(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config")
	path := filepath.Join(dir, "config.yaml")
	mountSecret(t, dir, 1, map[string]string{"config.yaml": "policies:\n  a: {url: 'https://x/t'}\n"})
	rec, _ := startWatcher(t, path, WatcherOptions{})

	changed := map[string]string{"config.yaml": "policies:\n  a: {url: 'https://x/t'}\n  b: {url: 'https://y/t'}\n"}
	mountSecret(t, dir, 2, changed)
	waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 1 })
	if _, ok := rec.last().Policies["b"]; !ok {
		t.Error("the swapped configuration is not loaded")
	}
	wantCounts(t, rec, 1, 0, 0)

	mountSecret(t, dir, 3, changed)
	wantCounts(t, rec, 1, 0, 0)
}

// TestWatcherChangeBeforeWatching changes the configuration after it was
// loaded and before it is watched, as may happen while extauthz starts:
// the change is not missed.
func TestWatcherChangeBeforeWatching(t *testing.T) {
	path, secretFile := watchedDir(t, "")
	current, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, _ := startWatcher(t, path, WatcherOptions{Current: current})
	waitUntil(t, "the reload", func() bool { n, _ := rec.counts(); return n == 1 })
	if got := rec.last().Policies["a"].Compiled.ClientSecret.Reveal(); got != "second" {
		t.Errorf("client secret %q, want second", got)
	}
	wantCounts(t, rec, 1, 0, 0)
}
