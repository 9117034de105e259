package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/harness"
)

const watchConfig = `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", adminAddress: "127.0.0.1:0"}
secrets: {dir: secrets}
policies:
  orders: {url: "https://idp.invalid/token", clientID: app, clientSecret: "urn:k8s:secret:idp:clientSecret"}
`

// TestWatchIgnoresItsOwnLog runs the built binary as
// `extauthz serve --config dir/config.yaml 2>> dir/extauthz.log`, with
// another writer appending to that log too: a log beside the configuration
// reloads nothing (each reload used to log a line that caused the next, ten
// a second), and a real change still reloads within a second.
func TestWatchIgnoresItsOwnLog(t *testing.T) {
	dir := t.TempDir()
	if err := harness.MountSecret(filepath.Join(dir, "secrets", "idp"), 1, map[string]string{"clientSecret": "s3cret\n"}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(cfgPath+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfgPath+".tmp", cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	write(watchConfig)
	logPath := filepath.Join(dir, "extauthz.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	cmd := exec.Command(binPath, "serve", "--config", cfgPath)
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logs := func() string {
		data, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	wait := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within %v; the log:\n%s", what, timeout, logs())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var admin string
	wait("serving line", 30*time.Second, func() bool {
		admin = servingAdminAddress(logs())
		return admin != ""
	})

	// Another writer appends to the same log for two seconds, a line every
	// 200ms: more than the watcher's quiet period, so that each line would
	// be looked at if the log mattered.
	other, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); <-tick.C {
		if _, err := fmt.Fprintf(other, `{"level":"info","msg":"another writer","ts":%q}`+"\n", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	other.Close()
	for _, result := range []string{"applied", "refused", "unchanged"} {
		if n := metric(t, admin, `extauthz_config_reloads_total{result="`+result+`"}`); n != 0 {
			t.Errorf("%v reloads %s while a log beside the configuration was written", n, result)
		}
	}
	if n := strings.Count(logs(), "configuration unchanged"); n != 0 {
		t.Errorf(`%d "configuration unchanged" lines`, n)
	}

	// A real change still reloads, within a second.
	write(watchConfig + `  extra: {url: "https://idp.invalid/token"}` + "\n")
	wait("reload", time.Second, func() bool {
		return metric(t, admin, `extauthz_config_reloads_total{result="applied"}`) == 1
	})
	if n := metric(t, admin, `extauthz_config_reloads_total{result="unchanged"}`); n != 0 {
		t.Errorf("%v reloads found the configuration unchanged", n)
	}
}

// servingAdminAddress returns the admin address of the "serving" line of a
// JSON log, or "" before it is written.
func servingAdminAddress(log string) string {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var entry struct {
			Msg          string `json:"msg"`
			AdminAddress string `json:"admin_address"`
		}
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte("{")) && json.Unmarshal(line, &entry) == nil && entry.Msg == "serving" {
			return entry.AdminAddress
		}
	}
	return ""
}
