package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// pinnedEnv marks the load generator re-run on the CPUs the servers leave.
const pinnedEnv = "EXTAUTHZ_LOAD_PINNED"

// pinSelf re-runs this process on CPUs 1 and up when taskset is there and
// the machine has two CPUs or more, so that the servers, pinned to CPU 0
// with one P (pinned), never share a core with the load: ratios then
// compare what a request costs each server, not how the scheduler placed
// two busy processes. It returns false when this process is to go on.
func pinSelf() (ran bool, code int) {
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
	cmd.Env = append(os.Environ(), pinnedEnv+"=1")
	if err := cmd.Run(); err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			return true, exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "load:", err)
		return true, 1
	}
	return true, 0
}

// pinning says how servers run; wrap returns the path to start bin by.
type pinning struct {
	on  bool
	dir string
}

func newPinning(dir string) pinning {
	_, err := exec.LookPath("taskset")
	return pinning{on: os.Getenv(pinnedEnv) != "" && err == nil, dir: dir}
}

func (p pinning) describe() string {
	if !p.on {
		return "servers and load unpinned (no taskset, or one CPU)"
	}
	return fmt.Sprintf("servers on CPU 0 with GOMAXPROCS=1, the load on CPUs 1-%d", runtime.NumCPU()-1)
}

// wrap returns a script that runs bin pinned, with the same process id
// (every step execs), or bin itself when pinning is off.
func (p pinning) wrap(bin string) (string, error) {
	if !p.on {
		return bin, nil
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	script := filepath.Join(p.dir, "pinned-"+filepath.Base(bin))
	text := fmt.Sprintf("#!/bin/sh\nGOMAXPROCS=1 exec taskset -c 0 '%s' \"$@\"\n", strings.ReplaceAll(abs, "'", `'\''`))
	return script, os.WriteFile(script, []byte(text), 0o700)
}
