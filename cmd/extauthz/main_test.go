package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const referenceClaims = `{"active": true, "grp": "admin", "scope": "reader writer deploy",
 "referrer": "http://example.com/foo/bar", "areas": ["office", "home"],
 "user": {"name": "John Snow", "status": "undead"}, "exp": 1700000000}`

func TestRun(t *testing.T) {
	dir := t.TempDir()
	claimsFile := filepath.Join(dir, "claims.json")
	validConfig := filepath.Join(dir, "valid.yaml")
	badConfig := filepath.Join(dir, "bad.yaml")
	for path, content := range map[string]string{
		claimsFile:  referenceClaims,
		validConfig: "policies:\n  orders: {url: 'https://idp.example.com/oauth/token'}\n",
		badConfig:   "defaultPolicy: nope\npolicies:\n  orders:\n    url: ftp://x\n    claims: Equals(`a`)\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		give     []string
		stdin    string
		wantOut  string
		wantErr  string // in the error report on stderr
		wantCode int
	}{
		{"true from stdin", []string{"claims", "--expr", "Equals(`grp`, `admin`)"}, referenceClaims, "true\n", "", exitOK},
		{"false from stdin", []string{"claims", "--expr", "Equals(`grp`, `testers`)"}, referenceClaims, "false\n", "", exitOK},
		{"dash is stdin", []string{"claims", "--claims", "-", "--expr", "Equals(`user.name`, `John Snow`)"}, referenceClaims, "true\n", "", exitOK},
		{"from file", []string{"claims", "--expr", "Equals(`exp`, `1700000000`) && !Contains(`areas`, `lab`)", "--claims", claimsFile}, "", "true\n", "", exitOK},
		{"single dash flags", []string{"claims", "-expr", "OneOf(`areas`, `lab`)", "-claims", claimsFile}, "", "false\n", "", exitOK},
		{"syntax error", []string{"claims", "--expr", "Equals(`grp`, `admin`) & Equals(`a`, `b`)"}, referenceClaims, "",
			"extauthz: claims: --expr: column 24: a single \"&\" is not an operator: use \"&&\"\n" +
				"\tEquals(`grp`, `admin`) & Equals(`a`, `b`)\n" +
				"\t                       ^\n", exitUsage},
		{"empty expression", []string{"claims", "--expr", ""}, referenceClaims, "", "empty expression", exitUsage},
		{"no expression", []string{"claims"}, referenceClaims, "", "extauthz: claims: --expr is required\n", exitUsage},
		{"bad JSON", []string{"claims", "--expr", "Equals(`a`, `b`)"}, `{"a": `, "", "extauthz: claims from standard input: claims: invalid JSON: unexpected EOF\n", exitUsage},
		{"not an object", []string{"claims", "--expr", "Equals(`a`, `b`)"}, `["a"]`, "", "claims: JSON is an array, not an object", exitUsage},
		{"empty input", []string{"claims", "--expr", "Equals(`a`, `b`)"}, "", "", "claims from standard input: claims: no JSON object", exitUsage},
		{"too much input", []string{"claims", "--expr", "Equals(`a`, `b`)"}, `{"a": "` + strings.Repeat("x", maxClaimsBytes) + `"}`, "", "claims from standard input: more than 1048576 bytes of claims", exitUsage},
		{"missing file", []string{"claims", "--expr", "Equals(`a`, `b`)", "--claims", filepath.Join(dir, "nope.json")}, "", "", "no such file or directory", exitUsage},
		{"directory as file", []string{"claims", "--expr", "Equals(`a`, `b`)", "--claims", filepath.Join(dir)}, "", "", "is a directory", exitUsage},
		{"unknown flag", []string{"claims", "--exp", "x"}, "", "", "flag provided but not defined: -exp", exitUsage},
		{"extra argument", []string{"claims", "--expr", "Equals(`a`, `b`)", "extra"}, "", "", `claims: unexpected argument "extra"`, exitUsage},
		{"help flag", []string{"claims", "-h"}, "", "", "", exitOK},
		{"version", []string{"version"}, "", "extauthz dev go", "", exitOK},
		{"validate a valid file", []string{"validate", "--config", validConfig}, "", validConfig + ": valid, 1 policies\n", "", exitOK},
		{"validate prints every problem", []string{"validate", "--config", badConfig}, "", "",
			badConfig + ": line 4: policies.orders.url: \"ftp://x\" is not an http or https URL\n" +
				badConfig + ": line 5: policies.orders.claims: column 1: Equals takes 2 arguments (key, value), got 1 argument\n\tEquals(`a`)\n\t^\n" +
				badConfig + ": line 1: defaultPolicy: no policy is named \"nope\" (policies: orders)\n" +
				"extauthz: " + badConfig + ": 3 problem(s)\n", exitFailure},
		{"validate a missing file", []string{"validate", "--config", filepath.Join(dir, "nope.yaml")}, "", "", "no such file or directory", exitFailure},
		{"validate without a file", []string{"validate"}, "", "", "validate: give --config FILE or set EXTAUTHZ_CONFIG", exitUsage},
		{"serve a bad file", []string{"serve", "--config", badConfig}, "", "", "is not an http or https URL", exitFailure},
		{"serve without a file", []string{"serve"}, "", "", "no configuration: give --config FILE or set EXTAUTHZ_CONFIG", exitUsage},
		{"help", []string{"help"}, "", "Usage: extauthz <command>", "", exitOK},
		{"unknown command", []string{"serve-me"}, "", "", `extauthz: unknown command "serve-me"`, exitUsage},
		{"no command", nil, "", "", "extauthz: no command given", exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.give, stdio{strings.NewReader(tt.stdin), &out, &errOut})
			code := report(err, &errOut)
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d (error %v)", code, tt.wantCode, err)
			}
			if !strings.HasPrefix(out.String(), tt.wantOut) || tt.wantOut == "" && out.Len() > 0 {
				t.Errorf("stdout %q, want %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), tt.wantErr)
			}
			if tt.wantCode == exitOK && err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Errorf("error %v on success", err)
			}
		})
	}
}

// TestBinary runs the built command, so that exit statuses and standard
// streams are what a shell sees.
func TestBinary(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{"true", []string{"claims", "--expr", "SplitContains(`scope`, ` `, `writer`)"}, referenceClaims, "true\n", "", 0},
		{"false", []string{"claims", "--expr", "!Prefix(`referrer`, `http://example.com`)"}, referenceClaims, "false\n", "", 0},
		{"syntax error", []string{"claims", "--expr", "Equals(`grp`)"}, referenceClaims, "", "Equals takes 2 arguments (key, value), got 1 argument\n\tEquals(`grp`)\n\t^\n", 2},
		{"bad JSON", []string{"claims", "--expr", "Equals(`grp`, `admin`)"}, "{grp: admin}", "", "invalid JSON", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binPath, tt.args...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			code := 0
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || out.String() != tt.wantOut || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
					code, out.String(), errOut.String(), tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}
