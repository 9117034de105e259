package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/extauthz/extauthz/internal/bounded"
)

// Reasons a token request is refused before it reaches the endpoint; they
// are also the reason label of the refusals metric.
const (
	ReasonFailureBudget    = "failure_budget"
	ReasonConcurrencyLimit = "concurrency_limit"
)

// RefusedError is a token request that was not sent, to protect the token
// endpoint: the client id is over its failure budget, or too many requests
// to the endpoint were under way until the caller's deadline.
type RefusedError struct {
	Reason     string        // ReasonFailureBudget or ReasonConcurrencyLimit
	RetryAfter time.Duration // when asking again may succeed; 0 when unknown
}

func (e *RefusedError) Error() string {
	switch e.Reason {
	case ReasonFailureBudget:
		return fmt.Sprintf("not sent to the token endpoint: it rejected this client id's credentials too often lately; retry in %s", e.RetryAfter.Round(time.Second))
	case ReasonConcurrencyLimit:
		return "not sent to the token endpoint: too many token requests to it are under way"
	}
	return "not sent to the token endpoint: " + e.Reason
}

// Bounds of the failure budget's bookkeeping.
const (
	// maxBudgetClients bounds the client ids whose rejections are counted.
	maxBudgetClients = 10_000
	// maxAcceptedKeys is how many credentials of one client id the
	// endpoint accepted are remembered as known good: a secret and its
	// successor during a rotation.
	maxAcceptedKeys = 2
)

// budgets keeps the failure budget of every client id per token endpoint:
// once the endpoint rejected one id's credentials MaxRejections times
// within RejectionWindow, credentials of that id it never accepted are
// refused without asking it, until the oldest of those rejections leaves
// the window. Requests under way with unknown credentials count against the
// budget too, so that a burst cannot overshoot it. Credentials the endpoint
// accepted, and those with a token in the cache, are never refused: an
// attacker who floods one id with wrong secrets locks out nobody who has
// the right one.
type budgets struct {
	mu      sync.Mutex // guards the records' fields
	clients *bounded.Map[[16]byte, *budgetRecord]
}

type budgetRecord struct {
	rejected []time.Time // the latest rejections, oldest first
	inflight int32       // requests with unknown credentials under way
	next     int32       // where the next accepted key goes in accepted
	// accepted holds the first 16 bytes of the ids of accepted keys: as
	// unforgeable as the whole, in a third of the memory (a record per
	// client id).
	accepted [maxAcceptedKeys][16]byte
}

func newBudgets() *budgets {
	return &budgets{clients: bounded.New[[16]byte, *budgetRecord](maxBudgetClients, func(k [16]byte) uint64 { return uint64(k[0]) })}
}

// budgetKey names a client id at a token endpoint: IdPs count failures per
// client, whatever the scope or audience asked for.
// Its first 16 bytes of SHA-256 are as unforgeable for the purpose as all 32.
func budgetKey(url, clientID string) [16]byte {
	buf := make([]byte, 0, 16+len(url)+len(clientID))
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(url)))
	buf = append(buf, url...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(clientID)))
	buf = append(buf, clientID...)
	sum := sha256.Sum256(buf)
	return [16]byte(sum[:16])
}

// admit decides whether a token request for key may be sent. known says
// the cache holds a token for key. On success the caller must call done
// with what the endpoint said once the request has finished; exhausted
// then reports that this rejection used up the budget.
func (b *budgets) admit(e *Endpoint, clientID string, key Key, known bool, now time.Time) (done func(rejected, accepted bool) (exhausted bool), err error) {
	limit, window := e.MaxRejections, e.RejectionWindow
	if limit <= 0 {
		return func(bool, bool) bool { return false }, nil
	}
	bk := budgetKey(e.Client.URL(), clientID)
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.clients.Get(bk, now.UnixNano())
	if !ok {
		// A record that is evicted while a request of its client id is
		// under way only forgets that request: the least recently used go.
		r = &budgetRecord{}
		b.clients.Put(bk, r, bounded.Never, now.UnixNano())
	}
	r.prune(now.Add(-window))
	trusted := known || r.knows(key)
	if !trusted {
		if len(r.rejected)+int(r.inflight) >= limit {
			retry := time.Second // only requests under way: they end soon
			if len(r.rejected) > 0 {
				retry = max(r.rejected[0].Add(window).Sub(now), time.Second)
			}
			return nil, &RefusedError{Reason: ReasonFailureBudget, RetryAfter: retry}
		}
		r.inflight++
	}
	return func(rejected, accepted bool) bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if !trusted {
			r.inflight--
		}
		switch {
		case rejected:
			r.forget(key)
			r.rejected = append(r.rejected, now)
			if len(r.rejected) > limit {
				r.rejected = append(r.rejected[:0], r.rejected[len(r.rejected)-limit:]...)
			}
			return len(r.rejected) == limit
		case accepted && !r.knows(key):
			r.accepted[r.next] = acceptedID(key)
			r.next = (r.next + 1) % maxAcceptedKeys
		}
		return false
	}, nil
}

// prune drops the rejections made before since.
func (r *budgetRecord) prune(since time.Time) {
	n := 0
	for n < len(r.rejected) && r.rejected[n].Before(since) {
		n++
	}
	if n > 0 {
		r.rejected = append(r.rejected[:0], r.rejected[n:]...)
	}
}

// acceptedID is what a record keeps of an accepted key.
func acceptedID(key Key) [16]byte { return [16]byte(key.id[:16]) }

func (r *budgetRecord) knows(key Key) bool {
	id := acceptedID(key)
	for _, k := range r.accepted {
		if k == id {
			return true
		}
	}
	return false
}

func (r *budgetRecord) forget(key Key) {
	id := acceptedID(key)
	for i, k := range r.accepted {
		if k == id {
			r.accepted[i] = [16]byte{}
		}
	}
}

// bulkhead bounds the token requests under way to one token endpoint.
type bulkhead struct {
	slots chan struct{}
}

// bulkhead returns the bulkhead of e's token endpoint, shared by every
// endpoint with the same URL. A new limit replaces it: requests under way
// finish against the old one.
func (c *Cache) bulkhead(e *Endpoint) *bulkhead {
	limit := e.MaxConcurrent
	if limit <= 0 {
		limit = DefaultMaxConcurrent
	}
	url := e.Client.URL()
	c.mu.Lock()
	defer c.mu.Unlock()
	bh := c.bulkheads[url]
	if bh == nil || cap(bh.slots) != limit {
		bh = &bulkhead{slots: make(chan struct{}, limit)}
		c.bulkheads[url] = bh
	}
	return bh
}

// acquire takes a slot, waiting until ctx ends; release gives it back.
func (bh *bulkhead) acquire(ctx context.Context) (release func(), err error) {
	select {
	case bh.slots <- struct{}{}:
		return func() { <-bh.slots }, nil
	default:
	}
	select {
	case bh.slots <- struct{}{}:
		return func() { <-bh.slots }, nil
	case <-ctx.Done():
		return nil, &RefusedError{Reason: ReasonConcurrencyLimit}
	}
}
