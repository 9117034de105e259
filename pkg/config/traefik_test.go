package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTraefikReferenceExample(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("testdata/traefik-reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "middleware.yaml"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, filepath.Join(dir, "secrets"), "my-secret", "clientID", "my-oauth-client-name")
	writeSecret(t, filepath.Join(dir, "secrets"), "my-secret", "clientSecret", "mypasswd")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("secrets: {dir: secrets}\npolicyFiles: ['*.yaml']\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// As written, the references have a typo: the error names the fix.
	_, err = Load(cfgPath)
	want := filepath.Join(dir, "middleware.yaml") + `: line 10: policies.test-client-creds.clientID: malformed secret reference: want urn:k8s:secret:<name>:<key>; it reads urn:k8s:<a>:<b>:<c>, like the Traefik Hub document's example: write urn:k8s:secret:<b>:<c>`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}

	// With the documented form, it loads as it is.
	fixed := strings.ReplaceAll(string(data), "urn:k8s:my-secret:", "urn:k8s:secret:")
	if err := os.WriteFile(filepath.Join(dir, "middleware.yaml"), []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policies["test-client-creds"]
	if p == nil || p.Compiled.ClientID != "my-oauth-client-name" || p.Compiled.ClientSecret.Reveal() != "mypasswd" ||
		p.Audience != "https://api.example.com" || len(p.Compiled.Forward) != 2 || p.Compiled.Program == nil {
		t.Fatalf("policy %+v", p)
	}
	if len(cfg.Warnings) != 2 || !strings.Contains(cfg.Warnings[0], `skipped Secret "my-secret": not a Traefik Middleware`) ||
		!strings.Contains(cfg.Warnings[1], "policies test-client-creds give their token (gateway mode)") {
		t.Errorf("warnings %q", cfg.Warnings)
	}
	if !strings.Contains(strings.Join(cfg.Files, " "), "middleware.yaml") {
		t.Errorf("the policy file is not watched: %v", cfg.Files)
	}
}

func TestPolicyFileProblems(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"config.yaml": "policyFiles: [mw.yaml, nothing-*.yaml]\npolicies:\n  dup: {url: 'https://x/t'}\n",
		"mw.yaml": `apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: dup}
spec: {plugin: {oAuthClientCredentials: {url: "https://x/t"}}}
---
apiVersion: traefik.containo.us/v1alpha1
kind: Middleware
metadata: {name: other-plugin}
spec: {plugin: {rateLimit: {average: 10}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: typo}
spec:
  plugin:
    oAuthClientCredentials:
      url: https://x/t
      clientSecrett: x
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Load(filepath.Join(dir, "config.yaml"))
	mw := filepath.Join(dir, "mw.yaml")
	for _, want := range []string{
		mw + `: line 1: policies.dup: a policy named "dup" is already defined`,
		mw + `: line 18: policies.typo: unknown field "clientSecrett" (did you mean "clientSecret"?)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nwant:\n%s", err, want)
		}
	}
}
