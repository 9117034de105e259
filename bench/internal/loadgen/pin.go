package loadgen

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// pinnedEnv marks the load generator re-run on the CPUs the servers leave;
// its value is the machine's number of CPUs, which runtime.NumCPU no
// longer sees from inside the narrower affinity.
const pinnedEnv = "EXTAUTHZ_LOAD_PINNED"

// PinSelf re-runs this process on CPUs 1 and up when taskset is there and
// the machine has two CPUs or more, so that the servers, pinned to CPU 0
// with one P (pinned), never share a core with the load: ratios then
// compare what a request costs each server, not how the scheduler placed
// two busy processes. It reports whether it ran the process, with its exit
// status; when it did not, this process is to go on.
func PinSelf() (ran bool, code int) {
	if os.Getenv(pinnedEnv) != "" || runtime.NumCPU() < 2 {
		return false, 0
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return false, 0
	}
	self, err := os.Executable()
	if err != nil {
		return false, 0
	}
	cmd := exec.Command(taskset, append([]string{"-c", fmt.Sprintf("1-%d", runtime.NumCPU()-1), self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", pinnedEnv, runtime.NumCPU()))
	if err := cmd.Run(); err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			return true, exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, err)
		return true, 1
	}
	return true, 0
}

// Pinning says how servers run: on CPU 0 with one P when this process was
// pinned away from it (PinSelf), else as they come.
type Pinning struct {
	on  bool
	dir string // for the scripts Wrap writes
}

// NewPinning is the pinning of this process, writing its scripts in dir.
func NewPinning(dir string) Pinning {
	_, err := exec.LookPath("taskset")
	return Pinning{on: os.Getenv(pinnedEnv) != "" && err == nil, dir: dir}
}

// Describe says how servers and load run.
func (p Pinning) Describe() string {
	if !p.on {
		return "servers and load unpinned (no taskset, or one CPU)"
	}
	return fmt.Sprintf("servers on CPU 0 with GOMAXPROCS=1, the load on CPUs 1-%d", CPUs()-1)
}

// Wrap returns a script that runs bin pinned, with the same process id
// (every step execs), or bin itself when pinning is off.
func (p Pinning) Wrap(bin string) (string, error) {
	return p.script(bin, "pinned", "GOMAXPROCS=1 exec taskset -c 0")
}

// Free returns a script that runs bin on every CPU, as users run it, and
// not on the load's CPUs it would inherit; or bin itself when pinning is
// off.
func (p Pinning) Free(bin string) (string, error) {
	return p.script(bin, "free", fmt.Sprintf("exec taskset -c 0-%d", CPUs()-1))
}

func (p Pinning) script(bin, kind, command string) (string, error) {
	if !p.on {
		return bin, nil
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	script := filepath.Join(p.dir, kind+"-"+filepath.Base(bin))
	text := fmt.Sprintf("#!/bin/sh\n%s '%s' \"$@\"\n", command, strings.ReplaceAll(abs, "'", `'\''`))
	return script, os.WriteFile(script, []byte(text), 0o700)
}

// CPUs is the machine's number of CPUs, the load's own affinity aside.
func CPUs() int {
	if n, err := strconv.Atoi(os.Getenv(pinnedEnv)); err == nil && n > 0 {
		return n
	}
	return runtime.NumCPU()
}
