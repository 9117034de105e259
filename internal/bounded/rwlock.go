package bounded

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// readerSlots is how many counters readers spread over.
const readerSlots = 8

// rwlock is a reader-biased lock for maps read on every request and
// written rarely. A sync.RWMutex counts its readers in one word, which
// every CPU then takes turns owning; here a reader announces itself in its
// P's own counter of readerSlots, each on a cache line of its own (a
// counter chosen at random per read would still travel between CPUs). A writer raises
// a flag and waits until every counter is back to zero; a reader that sees
// the flag steps back and queues behind the writer.
//
// The flag and the counters are sequentially consistent atomics: either
// the writer sees a reader's count and waits for it, or the reader sees
// the flag and waits for the writer.
//
// Whatever readers write (their counters) is 128 bytes from anything else,
// whatever the struct's alignment, so that no two of them share a cache
// line; what readers only read (the flag, and the map beside the lock)
// shares lines with nothing they write.
type rwlock struct {
	writing atomic.Bool
	_       [127]byte
	slots   [readerSlots]struct {
		n atomic.Int32
		_ [124]byte
	}
	mu sync.Mutex // writers, and readers queued behind one
}

// slotOf hands every P a reader slot of its own, as far as there are
// slots: sync.Pool keeps one item per P, so the P that runs a reader finds
// its own index, and its counters stay in its CPU's cache.
var (
	slotOf   = sync.Pool{New: func() any { i := int(nextSlot.Add(1)) % readerSlots; return &i }}
	nextSlot atomic.Int32
)

// rlock takes the lock for reading and returns the slot to release.
func (l *rwlock) rlock() *atomic.Int32 {
	i := slotOf.Get().(*int)
	s := &l.slots[*i].n
	slotOf.Put(i)
	s.Add(1)
	if !l.writing.Load() {
		return s
	}
	s.Add(-1)
	l.mu.Lock() // behind the writer
	s.Add(1)    // no writer can be writing while mu is held
	l.mu.Unlock()
	return s
}

func runlock(s *atomic.Int32) { s.Add(-1) }

func (l *rwlock) lock() {
	l.mu.Lock()
	l.writing.Store(true)
	for i := range l.slots {
		for l.slots[i].n.Load() != 0 {
			runtime.Gosched() // readers hold the lock for a map lookup
		}
	}
}

func (l *rwlock) unlock() {
	l.writing.Store(false)
	l.mu.Unlock()
}
