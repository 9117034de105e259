package metrics

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// TestStripedCounters: concurrent increments all count, and the registry
// exposes what a plain CounterVec would.
func TestStripedCounters(t *testing.T) {
	striped := NewStripedCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "h"}, []string{"a", "b"})
	plain := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "h"}, []string{"a", "b"})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				lv := []string{"p", []string{"allow", "deny"}[(w+i)%2]}
				striped.WithLabelValues(lv...).Inc()
				plain.WithLabelValues(lv...).Inc()
			}
		})
	}
	wg.Wait()
	striped.WithLabelValues("p", "allow").Add(2.5)
	plain.WithLabelValues("p", "allow").Add(2.5)
	if got := testutil.ToFloat64(striped.WithLabelValues("p", "allow")); got != 40_002.5 {
		t.Errorf("allow = %v, want 40002.5", got)
	}
	want, got := prometheus.NewRegistry(), prometheus.NewRegistry()
	want.MustRegister(plain)
	got.MustRegister(striped)
	if err := testutil.GatherAndCompare(got, expose(t, want)); err != nil {
		t.Error(err)
	}
}

// TestStripedHistograms: the merged histogram is the plain one fed the same
// observations.
func TestStripedHistograms(t *testing.T) {
	opts := prometheus.HistogramOpts{Name: "d_seconds", Help: "h", Buckets: []float64{.001, .01, .1, 1}}
	striped := NewStripedHistogramVec(opts, []string{"decision"})
	plain := prometheus.NewHistogramVec(opts, []string{"decision"})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 5_000 {
				v := float64((w*5000+i)%2048) / 1024 // 0 to 2 s, exact in binary: sums agree in any order
				striped.WithLabelValues("allow").Observe(v)
				plain.WithLabelValues("allow").Observe(v)
			}
		})
	}
	wg.Wait()
	want, got := prometheus.NewRegistry(), prometheus.NewRegistry()
	want.MustRegister(plain)
	got.MustRegister(striped)
	if err := testutil.GatherAndCompare(got, expose(t, want)); err != nil {
		t.Error(err)
	}
}

// expose returns reg's metrics in the text format.
func expose(t *testing.T, reg *prometheus.Registry) *strings.Reader {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return strings.NewReader(b.String())
}
