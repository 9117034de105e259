// Package harness runs the built extauthz binary and grpcurl against it, for
// the end-to-end tests and the demo.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// startTimeout bounds how long the binary may take to report its addresses.
const startTimeout = 30 * time.Second

// Process is a running `extauthz serve`.
type Process struct {
	GRPCAddress  string
	HTTPAddress  string // empty when HTTP mode is off
	AdminAddress string

	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{}
	err  error
}

// Start runs `bin serve --config config` and waits until it logs the
// addresses it listens on (configs use port 0, so the kernel picks free ones).
// env, "NAME=value" each, is added to the process's environment.
func Start(bin, config string, env ...string) (*Process, error) {
	cmd := exec.Command(bin, "serve", "--config", config)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, logs: &lockedBuffer{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	serving := make(chan map[string]any, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(line, '\n'))
			var entry map[string]any
			if json.Unmarshal(line, &entry) == nil && entry["msg"] == "serving" {
				select {
				case serving <- entry:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line beyond the scanner's limit
	}()
	go func() {
		<-drained // Wait closes the pipe: every line is read first
		p.err = cmd.Wait()
		close(p.done)
	}()
	select {
	case entry := <-serving:
		p.GRPCAddress, _ = entry["grpc_address"].(string)
		p.HTTPAddress, _ = entry["http_address"].(string)
		p.AdminAddress, _ = entry["admin_address"].(string)
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("extauthz exited before serving: %v\n%s", p.err, p.logs.String())
	case <-time.After(startTimeout):
		_ = cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("extauthz did not report its addresses within %v:\n%s", startTimeout, p.logs.String())
	}
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Logs returns what the process has logged so far.
func (p *Process) Logs() string { return p.logs.String() }

// WaitLog reports whether the log shows substr within timeout. The process
// writes its log through a pipe that is read concurrently, so a line about
// an answer the test already holds may arrive a moment later.
func (p *Process) WaitLog(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.logs.String(), substr) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Stop sends SIGTERM and waits for the process to exit, returning its
// error (nil for exit status 0).
func (p *Process) Stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("extauthz did not exit within 30s of SIGTERM")
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill stops the process without ceremony; for cleanups.
func (p *Process) Kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// CheckJSON is a CheckRequest for /orders as grpcurl takes it, for the
// policy and, when set, an Authorization header.
func CheckJSON(policy, authorization string) []byte {
	return CheckPathJSON(policy, authorization, "/orders")
}

// CheckPathJSON is CheckJSON for another path.
func CheckPathJSON(policy, authorization, path string) []byte {
	headers := map[string]string{}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	b, _ := json.Marshal(map[string]any{"attributes": map[string]any{
		"contextExtensions": map[string]string{"policy": policy},
		"request":           map[string]any{"http": map[string]any{"method": "GET", "host": "api.example.com", "path": path, "headers": headers}},
	}})
	return b
}

// MountSecret lays out a Kubernetes Secret volume in dir as the kubelet
// does: each key a symlink into ..data, itself a symlink to a timestamped
// directory, swapped atomically when version changes. data holds every key.
func MountSecret(dir string, version int, data map[string]string) error {
	stamp := fmt.Sprintf("..2026_11_25_%02d", version)
	if err := os.MkdirAll(filepath.Join(dir, stamp), 0o700); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, stamp, k), []byte(v), 0o600); err != nil {
			return err
		}
		if _, err := os.Lstat(filepath.Join(dir, k)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
				return err
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(stamp, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	if version > 1 {
		return os.RemoveAll(filepath.Join(dir, fmt.Sprintf("..2026_11_25_%02d", version-1)))
	}
	return nil
}

// Grpcurl runs grpcurl with args, giving it stdin, and returns its standard
// output; an error carries standard error.
func Grpcurl(ctx context.Context, grpcurl string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, grpcurl, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("grpcurl %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes(), nil
}

// FindGrpcurl looks for grpcurl: $GRPCURL, then bin/tools/grpcurl in the
// repository (where `make tools` installs it), then $PATH.
func FindGrpcurl() (string, error) {
	if p := os.Getenv("GRPCURL"); p != "" {
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", "tools", "grpcurl")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath("grpcurl")
}

// RepoRoot returns the directory that holds go.mod.
func RepoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("no caller information")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// Build compiles cmd/extauthz into dir and returns the binary's path.
func Build(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "extauthz")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/extauthz")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
