package config

import (
	"context"
	"os"
	"path/filepath"
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

func (r *recorder) last() *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[len(r.applied)-1]
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
	current, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	w, err := NewWatcher(WatcherOptions{
		Path: path, Current: current,
		Apply: func(c *Config) error {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.applied = append(rec.applied, c)
			return nil
		},
		Refused: func(err error) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.refused = append(rec.refused, err)
		},
		Unchanged: func() {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.unchanged++
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

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
