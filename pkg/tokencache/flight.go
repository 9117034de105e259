package tokencache

import (
	"context"
	"errors"
	"sync"
)

// flights run one fill per key at a time and share its result with every
// caller that asks meanwhile, as x/sync's singleflight does, and also count
// the callers still waiting: a fill whose callers have all gone before it
// sent anything to the token endpoint is abandoned (see call.abandoned),
// so that callers who hang up cannot leave work queued for the endpoint.
type flights struct {
	mu    sync.Mutex
	calls map[[32]byte]*call
}

// call is one fill in flight.
type call struct {
	key  [32]byte
	done chan struct{} // closed when val and err are set
	val  filled
	err  error

	// Guarded by flights.mu.
	waiters   int
	committed bool // sent to the endpoint, or a refresh: runs to its end
	// ctx is the fill's until it commits: it is cancelled when the last
	// waiter left before that, and the call is then out of the map, so
	// that a new caller starts another.
	ctx     context.Context
	abandon context.CancelFunc
}

// errAbandoned ends a fill whose callers all left before it was sent.
var errAbandoned = errors.New("token request abandoned: every caller waiting for it had gone")

func newFlights() *flights { return &flights{calls: map[[32]byte]*call{}} }

// join returns key's call, starting run in a new goroutine when none is in
// flight, and counts the caller as waiting for it. The call's context
// keeps ctx's values but not its end. A refresh joins as a caller that
// never leaves, so that its fill always completes.
func (f *flights) join(ctx context.Context, key [32]byte, run func(c *call) (filled, error)) *call {
	f.mu.Lock()
	c := f.calls[key]
	if c == nil {
		c = &call{key: key, done: make(chan struct{})}
		c.ctx, c.abandon = context.WithCancel(context.WithoutCancel(ctx))
		f.calls[key] = c
		c.waiters++
		f.mu.Unlock()
		go func() {
			val, err := run(c)
			f.mu.Lock()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
			f.mu.Unlock()
			c.val, c.err = val, err
			c.abandon()
			close(c.done)
		}()
		return c
	}
	c.waiters++
	f.mu.Unlock()
	return c
}

// wait waits for c until ctx ends; a caller that stops waiting leaves c.
func (f *flights) wait(ctx context.Context, c *call) (filled, error) {
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
	}
	select {
	case <-c.done: // both ready: the result is there, take it
		return c.val, c.err
	default:
	}
	f.leave(c)
	return filled{}, ctx.Err()
}

// leave counts one caller of c gone. The last one to go before c
// committed abandons it.
func (f *flights) leave(c *call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.waiters--
	if c.waiters > 0 || c.committed {
		return
	}
	if f.calls[c.key] == c {
		delete(f.calls, c.key)
	}
	c.abandon()
}

// commit marks c as about to send its request: from now on it finishes
// whoever waits. It reports false when c was abandoned first.
func (f *flights) commit(c *call) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.waiters == 0 && !c.committed {
		return false
	}
	c.committed = true
	return true
}
