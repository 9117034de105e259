package bounded

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func TestMap(t *testing.T) {
	m := New[string, int](4, nil)
	m.Put("a", 1, 100, 1)
	if v, ok := m.Get("a", 50); !ok || v != 1 {
		t.Errorf("Get before expiry = %v, %v", v, ok)
	}
	if _, ok := m.Get("a", 100); ok {
		t.Error("an entry was returned at its expiry")
	}
	if v, ok := m.Get("a", 0); !ok || v != 1 {
		t.Error("a now of 0 checks expiry")
	}
	m.Update("a", 50, func(v int, ok bool) (int, int64, bool) { return v + 1, Never, ok })
	if v, _ := m.Get("a", 1000); v != 2 {
		t.Errorf("after Update: %d", v)
	}
	m.Update("a", 50, func(int, bool) (int, int64, bool) { return 0, 0, false })
	if _, ok := m.Get("a", 0); ok {
		t.Error("Update that keeps nothing left the entry")
	}
	m.Put("b", 2, Never, 1)
	m.Delete("b")
	if m.Len() != 0 {
		t.Errorf("Len = %d after Delete", m.Len())
	}
}

// TestEviction: a full map drops an expired entry first, else the least
// recently used; it never holds more than its bound.
func TestEviction(t *testing.T) {
	m := New[string, int](4, nil)
	m.Put("old", 0, Never, 1)
	m.Put("expired", 0, 5, 2)
	m.Put("x", 0, Never, 3)
	m.Put("y", 0, Never, 4)
	m.Put("z", 0, Never, 10) // full: the expired one goes
	if _, ok := m.Get("expired", 0); ok || m.Len() != 4 {
		t.Errorf("the expired entry was kept (Len %d)", m.Len())
	}
	m.Get("old", 5_000_000_000) // used now: the least recent is x
	m.Put("w", 0, Never, 5_000_000_001)
	if _, ok := m.Get("x", 0); ok {
		t.Error("the least recently used entry was kept")
	}
	if _, ok := m.Get("old", 0); !ok {
		t.Error("a recently used entry was dropped")
	}
	big := New[int, int](1000, nil)
	for i := range 5000 {
		big.Put(i, i, Never, int64(i+1))
	}
	if n := big.Len(); n > 1000 {
		t.Errorf("Len = %d, want at most 1000", n)
	}
	if n := big.DeleteFunc(func(k, _ int) bool { return k%2 == 0 }); n == 0 || big.Len() == 0 {
		t.Errorf("DeleteFunc dropped %d, left %d", n, big.Len())
	}

}

// TestReadersAndWriters: readers on every CPU and writers at once see every
// value as one writer left it (the race detector checks the lock's edges).
func TestReadersAndWriters(t *testing.T) {
	m := New[int, [2]int](1000, nil)
	for k := range 100 {
		m.Put(k, [2]int{k, k}, Never, 1)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var reads atomic.Int64
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v, ok := m.Get(i%100, 0)
				if !ok || v[0] != v[1] {
					t.Errorf("read %v %v: torn or missing", v, ok)
					return
				}
				reads.Add(1)
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := range 20_000 {
				k := (i*7 + w) % 100
				m.Put(k, [2]int{i, i}, Never, 1)
				if i%100 == 0 {
					m.Update(k, 1, func(v [2]int, ok bool) ([2]int, int64, bool) { return [2]int{v[0] + 1, v[1] + 1}, Never, true })
				}
			}
		})
	}
	for reads.Load() < 100_000 {
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	if n := m.Len(); n != 100 {
		t.Errorf("%d entries, want 100", n)
	}
}

// BenchmarkGetParallel reads one hot key from every P: with -cpu 1,2 it
// shows whether readers contend (without contention, ns/op halves).
func BenchmarkGetParallel(b *testing.B) {
	m := New[string, int](1000, nil)
	m.Put("hot", 1, Never, 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := m.Get("hot", 0); !ok {
				b.Fatal("miss")
			}
		}
	})
}

// TestOnRemove: every value that leaves the map is reported once, however
// it leaves, and values still held are not.
func TestOnRemove(t *testing.T) {
	m := New[string, int](4, nil)
	removed := map[int]int{}
	m.OnRemove(func(v int) { removed[v]++ })
	m.Put("a", 1, Never, 1)
	m.Put("a", 2, Never, 2) // replaced
	m.Update("a", 3, func(v int, ok bool) (int, int64, bool) { return v + 1, Never, true })
	m.Update("a", 4, func(int, bool) (int, int64, bool) { return 0, 0, false }) // dropped
	m.Put("b", 10, Never, 5)
	m.Delete("b")
	m.Delete("b") // gone already: nothing to report
	m.Put("c", 20, Never, 6)
	m.Put("d", 21, Never, 7)
	m.DeleteFunc(func(_ string, v int) bool { return v == 20 })
	for i := range 10 { // more than the bound: evictions
		m.Put(fmt.Sprint("e", i), 100+i, Never, int64(8+i))
	}
	for _, v := range []int{1, 2, 3, 10, 20} {
		if removed[v] != 1 {
			t.Errorf("value %d reported %d times, want once", v, removed[v])
		}
	}
	held := 0
	for v, n := range removed {
		if n != 1 {
			t.Errorf("value %d reported %d times", v, n)
		}
		if v >= 21 {
			held++
		}
	}
	if want := 1 + 10 - m.Len(); held != want { // d and the e's, less what the map still holds
		t.Errorf("%d evictions reported, want %d (the map holds %d)", held, want, m.Len())
	}
}
