package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		live uint64
		want int
	}{
		{0, maxPercent},
		{1 << 10, maxPercent}, // 1 KiB: capped
		{1 * mib, maxPercent}, // 15 MiB to reach the 16 MiB heap: capped
		{4 * mib, 300},        // 12 MiB to reach it
		{8 * mib, 100},        // 8 MiB to reach it: Go's default
		{12 * mib, 33},        // 4 MiB, the floor
		{16 * mib, 25},        // the floor
		{20 * mib, 20},        // a fifth is the floor
		{400 * mib, 20},       // a large cache: a fifth
		{1 << 40, 20},
		{20*mib - 1, 20}, // just under: 4 MiB / (20 MiB - 1) rounds down to 20
		{10 * mib, 60},
	} {
		if got := percent(tt.live, Percent, Floor, MinHeap); got != tt.want {
			t.Errorf("percent(%d) = %d, want %d", tt.live, got, tt.want)
		}
	}
}

// sink keeps test data live.
var sink [][]byte

// gcPercent reads the current percentage.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestRun: an operator's GOGC stands; without one, Run sets a percentage
// from the live heap, and again after every collection.
func TestRun(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	Run(context.Background(), func(string) string { return "100" }) // returns at once
	if got := gcPercent(); got != 100 {
		t.Fatalf("with GOGC set, the percentage changed to %d", got)
	}

	for range 64 { // 64 MiB of live heap: a fifth of it is over the floor
		sink = append(sink, make([]byte, 1<<20))
	}
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Run(ctx, func(string) string { return "" })
	if got := gcPercent(); got != Percent {
		t.Errorf("with 64 MiB live, the percentage is %d, want %d", got, Percent)
	}
	// A collection that finds the heap nearly empty: the finalizer sets the
	// floor's percentage.
	sink = nil
	deadline := time.Now().Add(10 * time.Second)
	for gcPercent() <= 100 {
		if time.Now().After(deadline) {
			t.Fatalf("after the heap emptied, the percentage stayed %d", gcPercent())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer goroutine runs after the collection
	}
}
