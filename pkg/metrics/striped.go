package metrics

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Every Check counts itself (a decision, its duration, a cache lookup).
// With plain Prometheus instruments those are atomic additions to the same
// few cache lines from every CPU, which then take turns owning them. The
// striped instruments below spread each count over cells of their own
// cache line, a cell picked at random per increment, and add them up only
// when scraped. Names, labels and values are the plain instruments'.

// stripes is how many cells an instrument spreads over: twice the CPUs,
// a power of two from 8 to 64.
var stripes = func() int {
	n := min(max(2*runtime.NumCPU(), 8), 64)
	return 1 << bits.Len(uint(n-1))
}()

type cell struct {
	n atomic.Uint64
	_ [56]byte // a cache line of its own
}

// stripedCounter is a prometheus.Counter over stripes cells. Whole
// increments, the only kind extauthz makes, go to the cells; fractional
// ones to one float, under a CAS loop.
type stripedCounter struct {
	desc   *prometheus.Desc
	labels []string
	cells  []cell
	frac   atomic.Uint64 // float64 bits
}

var _ prometheus.Counter = (*stripedCounter)(nil)

func (c *stripedCounter) Inc() { c.cells[rand.Uint32()&uint32(len(c.cells)-1)].n.Add(1) }

func (c *stripedCounter) Add(v float64) {
	if v < 0 {
		panic("counter cannot decrease in value")
	}
	if whole := math.Trunc(v); whole == v && v < 1<<53 {
		c.cells[rand.Uint32()&uint32(len(c.cells)-1)].n.Add(uint64(whole))
		return
	}
	for {
		old := c.frac.Load()
		if c.frac.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (c *stripedCounter) value() float64 {
	var n uint64
	for i := range c.cells {
		n += c.cells[i].n.Load()
	}
	return float64(n) + math.Float64frombits(c.frac.Load())
}

func (c *stripedCounter) metric() prometheus.Metric {
	return prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.value(), c.labels...)
}

func (c *stripedCounter) Desc() *prometheus.Desc              { return c.desc }
func (c *stripedCounter) Write(m *dto.Metric) error           { return c.metric().Write(m) }
func (c *stripedCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *stripedCounter) Collect(ch chan<- prometheus.Metric) { ch <- c.metric() }

// StripedCounterVec is a CounterVec of striped counters.
type StripedCounterVec struct {
	desc     *prometheus.Desc
	mu       sync.Mutex
	children map[string]*stripedCounter
	order    []*stripedCounter
}

// NewStripedCounterVec returns a counter vector with the given labels.
func NewStripedCounterVec(opts prometheus.CounterOpts, labels []string) *StripedCounterVec {
	return &StripedCounterVec{
		desc:     prometheus.NewDesc(opts.Name, opts.Help, labels, nil),
		children: map[string]*stripedCounter{},
	}
}

// WithLabelValues returns the counter of the label values, made on first use.
func (v *StripedCounterVec) WithLabelValues(lvs ...string) prometheus.Counter {
	key := strings.Join(lvs, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	if c := v.children[key]; c != nil {
		return c
	}
	c := &stripedCounter{desc: v.desc, labels: append([]string(nil), lvs...), cells: make([]cell, stripes)}
	v.children[key] = c
	v.order = append(v.order, c)
	return c
}

func (v *StripedCounterVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

func (v *StripedCounterVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	children := append([]*stripedCounter(nil), v.order...)
	v.mu.Unlock()
	for _, c := range children {
		ch <- c.metric()
	}
}

// stripedHistogram is a prometheus.Observer over stripes plain histograms,
// merged when scraped.
type stripedHistogram struct {
	desc    *prometheus.Desc
	labels  []string
	buckets []float64
	parts   []prometheus.Histogram
}

func (h *stripedHistogram) Observe(v float64) {
	h.parts[rand.Uint32()&uint32(len(h.parts)-1)].Observe(v)
}

func (h *stripedHistogram) metric() prometheus.Metric {
	var count uint64
	var sum float64
	cumulative := make(map[float64]uint64, len(h.buckets))
	for _, p := range h.parts {
		var m dto.Metric
		if err := p.Write(&m); err != nil {
			continue
		}
		count += m.GetHistogram().GetSampleCount()
		sum += m.GetHistogram().GetSampleSum()
		for _, b := range m.GetHistogram().GetBucket() {
			cumulative[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	return prometheus.MustNewConstHistogram(h.desc, count, sum, cumulative, h.labels...)
}

// StripedHistogramVec is a HistogramVec of striped histograms.
type StripedHistogramVec struct {
	desc     *prometheus.Desc
	buckets  []float64
	mu       sync.Mutex
	children map[string]*stripedHistogram
	order    []*stripedHistogram
}

// NewStripedHistogramVec returns a histogram vector with the given labels.
func NewStripedHistogramVec(opts prometheus.HistogramOpts, labels []string) *StripedHistogramVec {
	return &StripedHistogramVec{
		desc:     prometheus.NewDesc(opts.Name, opts.Help, labels, nil),
		buckets:  opts.Buckets,
		children: map[string]*stripedHistogram{},
	}
}

// WithLabelValues returns the histogram of the label values, made on first use.
func (v *StripedHistogramVec) WithLabelValues(lvs ...string) prometheus.Observer {
	key := strings.Join(lvs, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	if h := v.children[key]; h != nil {
		return h
	}
	h := &stripedHistogram{desc: v.desc, labels: append([]string(nil), lvs...), buckets: v.buckets}
	for range stripes {
		h.parts = append(h.parts, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "part", Buckets: v.buckets}))
	}
	v.children[key] = h
	v.order = append(v.order, h)
	return h
}

func (v *StripedHistogramVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

func (v *StripedHistogramVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	children := append([]*stripedHistogram(nil), v.order...)
	v.mu.Unlock()
	for _, h := range children {
		ch <- h.metric()
	}
}
