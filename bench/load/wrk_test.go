package main

import (
	"strings"
	"testing"
	"time"
)

// wrkOutput is wrk 4.1.0's report with --latency.
const wrkOutput = `Running 5s test @ http://127.0.0.1:41529/policy/web/orders/42
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   689.67us  304.04us  12.57ms   92.97%
    Req/Sec    49.90k     1.44k   51.82k    72.00%
  Latency Distribution
     50%  646.00us
     75%  718.00us
     90%  831.00us
     99%    1.70ms
  248310 requests in 5.00s, 102.56MB read
Requests/sec:  49655.71
Transfer/sec:     20.51MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    wrkResult
		wantErr bool
	}{
		{name: "report", give: wrkOutput, want: wrkResult{rps: 49655.71, p50: 646 * time.Microsecond, p99: 1700 * time.Microsecond, requests: 248310}},
		{
			name: "seconds, errors and non-2xx answers",
			give: "  Latency Distribution\n     50%    1.02s \n     99%    2.00s \n  10 requests in 5.00s, 1.00KB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 4\nRequests/sec:      2.00\n",
			want: wrkResult{rps: 2, p50: 1020 * time.Millisecond, p99: 2 * time.Second, requests: 10, non2xx: 4, sockErrors: 5},
		},
		{name: "no latency distribution", give: "Requests/sec:  49655.71\n", wantErr: true},
		{name: "no throughput", give: "     50%  646.00us\n     99%    1.70ms\n", wantErr: true},
		{name: "a time without unit", give: "     50%  646.00\n     99%    1.70ms\nRequests/sec: 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.give)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseWrk = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Errorf("parseWrk = %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestParseWrkDuration(t *testing.T) {
	tests := []struct {
		give    string
		want    time.Duration
		wantErr bool
	}{
		{give: "812.00us", want: 812 * time.Microsecond},
		{give: "1.24ms", want: 1240 * time.Microsecond},
		{give: "2.01s", want: 2010 * time.Millisecond},
		{give: "1.50m", want: 90 * time.Second},
		{give: "12", wantErr: true},
		{give: "x.yms", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := parseWrkDuration(tt.give)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseWrkDuration(%q) = %v, %v; want %v (error %v)", tt.give, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRotateScript(t *testing.T) {
	s := rotateScript(3)
	for _, want := range []string{`"Basic Y2xpZW50LTA6czNjcmV0"`, `"Basic Y2xpZW50LTI6czNjcmV0"`, "function request()", "function init(args)"} {
		if !strings.Contains(s, want) {
			t.Errorf("the script lacks %s:\n%s", want, s)
		}
	}
}
