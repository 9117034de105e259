// Package gctune keeps the garbage collector's headroom in proportion to
// what extauthz holds. Most of a busy extauthz's heap is cached answers,
// which live as long as their tokens: Go's default GOGC of 100 lets the
// heap, and resident memory, reach twice that before collecting. A lower
// percentage keeps resident memory close to what is cached; but a process
// that caches little and allocates per request (HTTP mode) would then
// collect dozens of times a second, and each collection takes a quarter of
// a one-core replica while it marks, which is what requests wait behind at
// the 99th percentile. So the headroom is Percent of the live heap, never
// less than Floor bytes, and enough for the heap to reach MinHeap before
// it collects: a large cache costs a fifth more, a small one (a few
// thousand clients) collects two to three times less often than with Go's
// default. MinHeap is below the heap of 20,000 cached clients, so that it
// costs a large cache nothing.
package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// Defaults.
const (
	Percent = 20
	Floor   = 4 << 20  // bytes
	MinHeap = 16 << 20 // bytes
	// maxPercent bounds the percentage for a nearly empty heap.
	maxPercent = 1000
)

// percent returns the GC percentage that gives a heap of live bytes a
// headroom of pct of it, but at least floor bytes, and at least what lets
// the heap reach minHeap.
func percent(live uint64, pct int, floor, minHeap uint64) int {
	if live == 0 {
		return maxPercent
	}
	if minHeap > live {
		floor = max(floor, minHeap-live)
	}
	if live*uint64(pct)/100 >= floor {
		return pct
	}
	return int(min(floor*100/live, maxPercent))
}

const liveHeap = "/gc/heap/live:bytes"

// Run sets the GC percentage after every collection, from the live heap it
// left, until ctx ends: a cache that fills fast is followed at once. It
// does nothing when the environment sets GOGC: an operator's choice stands.
func Run(ctx context.Context, getenv func(string) string) {
	if getenv("GOGC") != "" {
		return
	}
	t := &tuner{current: -1, done: ctx.Done(), sample: []metrics.Sample{{Name: liveHeap}}}
	t.tune()
	t.arm()
}

type tuner struct {
	current int
	done    <-chan struct{}
	sample  []metrics.Sample
}

// tune sets the percentage for the live heap of the last collection; small
// changes, within a tenth, are left alone. Only one goroutine calls it at a
// time: Run, then the finalizer goroutine.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := percent(t.sample[0].Value.Uint64(), Percent, Floor, MinHeap)
	if t.current < 0 || p < t.current*9/10 || p > t.current*11/10 {
		debug.SetGCPercent(p)
		t.current = p
	}
}

// sentinel is garbage whose finalizer runs after the collection that found
// it unreachable: the hook that tunes after every cycle.
type sentinel struct{ t *tuner }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{t}, func(s *sentinel) {
		select {
		case <-s.t.done:
			return
		default:
		}
		s.t.tune()
		s.t.arm()
	})
}
