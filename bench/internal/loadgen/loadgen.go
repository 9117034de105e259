// Package loadgen is the closed-loop load both bench commands drive:
// clients that each call a server over their own connection for a while,
// alternating rounds between servers, with latencies, throughput and the
// server's CPU time per call, and servers pinned apart from the load.
package loadgen

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one server's measurements.
type Result struct {
	Latencies []time.Duration // sorted
	Elapsed   time.Duration
	Errors    atomic.Int64
	CPU       time.Duration // the server's CPU time (user and system) over the rounds; 0 if unknown
}

// Add adds o's measurements to r.
func (r *Result) Add(o *Result) {
	r.Latencies = append(r.Latencies, o.Latencies...)
	r.Elapsed += o.Elapsed
	r.CPU += o.CPU
	r.Errors.Add(o.Errors.Load())
	slices.Sort(r.Latencies)
}

// RPS is calls per second.
func (r *Result) RPS() float64 { return float64(len(r.Latencies)) / r.Elapsed.Seconds() }

// Quantile is the q quantile of the latencies.
func (r *Result) Quantile(q float64) time.Duration { return Quantile(r.Latencies, q) }

// Quantile is the q quantile of sorted, to the microsecond.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)].Round(time.Microsecond)
}

// CPUPerCall is the server's CPU time per call: what a call costs it,
// whatever else the machine did meanwhile.
func (r *Result) CPUPerCall() time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.CPU / time.Duration(len(r.Latencies))
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// Linux everywhere).
const clockTick = 10 * time.Millisecond

// CPUTime returns the CPU time process pid has used, or 0 when it cannot
// be read (not Linux, or pid 0).
func CPUTime(pid int) time.Duration {
	user, sys := CPUTimes(pid)
	return user + sys
}

// CPUTimes returns the user and system CPU time process pid has used, or
// zeros when they cannot be read (not Linux, or pid 0).
func CPUTimes(pid int) (user, sys time.Duration) {
	if pid == 0 {
		return 0, 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	_, rest, ok := strings.Cut(string(data), ") ")
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		return 0, 0
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return time.Duration(utime) * clockTick, time.Duration(stime) * clockTick
}

// Syscalls returns how many read- and write-class system calls process pid
// has made (/proc/<pid>/io: syscr and syscw), or 0 when they cannot be read.
func Syscalls(pid int) int64 {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	var n int64
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if k == "syscr" || k == "syscw" {
			c, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0
			}
			n += c
		}
	}
	return n
}

// Target is a server and how one client of the load calls it: Client(w)
// returns client w's call, which reports whether it was allowed, and what
// to close when the round ends.
type Target struct {
	Name   string
	Client func(w int) (call func() bool, closer func(), err error)
	PID    int // the server's process, for its CPU time; 0 if not measured
}

// HTTPTarget sends GET url over one keep-alive connection per client, with
// client w's own Basic credentials, client-<w>:s3cret.
func HTTPTarget(name, url string, pid int) Target {
	return Target{Name: name, PID: pid, Client: func(w int) (func() bool, func(), error) {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", Basic(fmt.Sprintf("client-%d", w)))
		req.Header.Set("User-Agent", "load/1.0")
		return func() bool { return Get(client, req) }, tr.CloseIdleConnections, nil
	}}
}

// Basic is the Authorization header of client id with the load's secret.
func Basic(id string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":s3cret"))
}

// Get sends req and reports a 200, the body read and closed.
func Get(client *http.Client, req *http.Request) bool {
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Measure runs closed-loop calls of t from n clients for d, after one call
// each (so that connecting, and a cold token, are not measured).
func Measure(t Target, n int, d time.Duration) (*Result, error) {
	calls := make([]func() bool, n)
	for w := range n {
		call, closer, err := t.Client(w)
		if err != nil {
			return nil, err
		}
		defer closer()
		if !call() {
			return nil, fmt.Errorf("%s: the first call of client %d failed", t.Name, w)
		}
		calls[w] = call
	}
	res := &Result{}
	per := make([][]time.Duration, n)
	cpu := CPUTime(t.PID)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(deadline) {
				began := time.Now()
				ok := calls[w]()
				lat = append(lat, time.Since(began))
				if !ok {
					res.Errors.Add(1)
				}
			}
			per[w] = lat
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if cpu > 0 {
		res.CPU = CPUTime(t.PID) - cpu
	}
	for _, l := range per {
		res.Latencies = append(res.Latencies, l...)
	}
	slices.Sort(res.Latencies)
	return res, nil
}

// Compare measures the targets in alternating rounds, printing each round,
// and returns their results in order. A failed or denied call fails it.
func Compare(rounds, clients int, duration time.Duration, targets ...Target) ([]*Result, error) {
	results := make([]*Result, len(targets))
	for i := range results {
		results[i] = &Result{}
	}
	for r := range rounds {
		for i, t := range targets {
			res, err := Measure(t, clients, duration)
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", t.Name, r+1, err)
			}
			results[i].Add(res)
			fmt.Printf("  round %d %-11s %9.0f rps  p50 %-9v p99 %v\n", r+1, t.Name, res.RPS(), res.Quantile(0.5), res.Quantile(0.99))
		}
	}
	for i, r := range results {
		if errs := r.Errors.Load(); errs > 0 {
			return nil, fmt.Errorf("%s: %d calls failed or were denied", targets[i].Name, errs)
		}
	}
	return results, nil
}
