package tokencache

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a token request is not sent, to protect the token endpoint; they
// are also the reason label of the refusals metric.
const (
	// ReasonFailureBudget: the endpoint rejected this client id's
	// credentials too often lately, and these are not ones it accepted.
	ReasonFailureBudget = "failure_budget"
	// ReasonEndpointBudget: the endpoint rejected credentials of any
	// client ids too often lately, and these are not ones it accepted.
	ReasonEndpointBudget = "endpoint_budget"
	// ReasonQueueFull: every place in the endpoint's queue was taken.
	ReasonQueueFull = "queue_full"
	// ReasonAbandoned: every caller waiting for a queued request had gone
	// (only counted: no one is told).
	ReasonAbandoned = "abandoned"
)

// RefusedError is a token request that was not sent, to protect the token
// endpoint.
type RefusedError struct {
	Reason     string        // one of the Reason constants
	RetryAfter time.Duration // when asking again may succeed; 0 when unknown
}

func (e *RefusedError) Error() string {
	switch e.Reason {
	case ReasonFailureBudget:
		return fmt.Sprintf("not sent to the token endpoint: it rejected this client id's credentials too often lately; retry in %s", e.RetryAfter.Round(time.Second))
	case ReasonEndpointBudget:
		return fmt.Sprintf("not sent to the token endpoint: it rejected too many credentials lately; retry in %s", e.RetryAfter.Round(time.Second))
	case ReasonQueueFull:
		return "not sent to the token endpoint: its queue of token requests is full"
	}
	return "not sent to the token endpoint: " + e.Reason
}

// Queue classes, served in this order.
const (
	classTrusted = iota // refreshes, and credentials the endpoint accepted before
	classOther          // credentials it has not accepted (yet)
	classes
)

// DefaultMaxQueued bounds the token requests waiting for a place at one
// endpoint, per class, by default.
const DefaultMaxQueued = 256

// gate guards one token endpoint, shared by every Endpoint with its URL: a
// bulkhead bounds the requests open there, the others wait in a fair,
// bounded queue, and the failure budgets decide which may be sent at all.
// A cache hit never touches it.
type gate struct {
	mu       sync.Mutex
	limit    int // requests open at the endpoint at most
	open     int
	maxQueue int // tickets waiting per class at most
	queues   [classes]fairQueue
	// held is a moving average of how long a request keeps its place, for
	// the Retry-After of a full queue.
	held time.Duration

	budget budgetState
	// endpoints are the short identity hashes of the Endpoints that use
	// the gate, so that a purge another replica announces finds it.
	endpoints map[[8]byte]struct{}

	openGauge, queuedGauge prometheus.Gauge
}

func newGate(openGauge, queuedGauge prometheus.Gauge) *gate {
	g := &gate{openGauge: openGauge, queuedGauge: queuedGauge, endpoints: map[[8]byte]struct{}{}, held: time.Second}
	for i := range g.queues {
		g.queues[i].clients = map[[16]byte]*clientQueue{}
	}
	g.budget.records = map[[16]byte]*budgetRecord{}
	return g
}

// gateLabel names a token endpoint in metrics: its URL without userinfo,
// query or fragment.
func gateLabel(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "unparsable"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// gate returns the gate of e's token endpoint, set to e's bounds: a new
// bound applies from the next request on.
func (c *Cache) gate(e *Endpoint) *gate {
	u := e.Client.URL()
	c.mu.Lock()
	g := c.gates[u]
	if g == nil {
		label := gateLabel(u)
		g = newGate(c.m.IdPOpen.WithLabelValues(label), c.m.IdPQueued.WithLabelValues(label))
		c.gates[u] = g
	}
	c.mu.Unlock()
	limit, queue := e.MaxConcurrent, e.MaxQueued
	if limit <= 0 {
		limit = DefaultMaxConcurrent
	}
	if queue <= 0 {
		queue = DefaultMaxQueued
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.endpoints) < maxGateEndpoints {
		g.endpoints[[8]byte(e.identity[:8])] = struct{}{}
	}
	g.maxQueue = queue
	if g.limit != limit {
		g.limit = limit
		g.dispatch()
	}
	return g
}

// usedBy reports whether an Endpoint of one of the hex short identity
// hashes uses g.
func (g *gate) usedBy(endpoints []string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, h := range endpoints {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 8 {
			continue
		}
		if _, ok := g.endpoints[[8]byte(b)]; ok {
			return true
		}
	}
	return false
}

// maxGateEndpoints bounds the identities a gate remembers for purges.
const maxGateEndpoints = 256

// ticket is one request waiting for a place.
type ticket struct {
	client  *clientQueue
	ready   chan struct{} // closed when granted
	granted bool
}

// acquire takes a place at the endpoint for a request of client (a keyed
// hash of its folded id) in class. When none is free it waits its turn
// until ctx ends; when the class's queue is full it is refused at once.
func (g *gate) acquire(ctx context.Context, client [16]byte, class int) (release func(), err error) {
	g.mu.Lock()
	if g.open < g.limit && g.queued() == 0 {
		g.open++
		g.openGauge.Set(float64(g.open))
		g.mu.Unlock()
		return g.releaser(), nil
	}
	q := &g.queues[class]
	if q.n >= g.maxQueue {
		retry := g.retryAfter()
		g.mu.Unlock()
		return nil, &RefusedError{Reason: ReasonQueueFull, RetryAfter: retry}
	}
	t := &ticket{ready: make(chan struct{})}
	q.push(client, class, t)
	g.queuedGauge.Set(float64(g.queued()))
	g.mu.Unlock()
	select {
	case <-t.ready:
		return g.releaser(), nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.granted { // granted as the caller left: pass the place on
		g.open--
		g.dispatch()
	} else {
		g.queues[class].remove(t)
		g.queuedGauge.Set(float64(g.queued()))
	}
	return nil, ctx.Err()
}

// releaser returns the release of a place taken now.
func (g *gate) releaser() func() {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.held += (time.Since(start) - g.held) / 8
			g.open--
			g.dispatch()
		})
	}
}

// dispatch grants free places to waiting tickets: the trusted class first,
// client ids in turn within a class. g.mu is held.
func (g *gate) dispatch() {
	for g.open < g.limit {
		var t *ticket
		for i := range g.queues {
			if t = g.queues[i].pop(); t != nil {
				break
			}
		}
		if t == nil {
			break
		}
		t.granted = true
		g.open++
		close(t.ready)
	}
	g.openGauge.Set(float64(g.open))
	g.queuedGauge.Set(float64(g.queued()))
}

func (g *gate) queued() int {
	n := 0
	for i := range g.queues {
		n += g.queues[i].n
	}
	return n
}

// retryAfter estimates when a place frees up for a new request: the
// queue's turns at the recent pace, between one second and a minute.
// g.mu is held.
func (g *gate) retryAfter() time.Duration {
	turns := time.Duration(g.queued()/max(g.limit, 1) + 1)
	return min(max(turns*g.held, time.Second), time.Minute).Round(time.Second)
}

// fairQueue holds the tickets of one class, per client id, and serves the
// client ids in turn: one client id with many requests waits behind each
// other client id's next one.
type fairQueue struct {
	clients map[[16]byte]*clientQueue
	order   []*clientQueue // client ids with tickets waiting, next first
	n       int            // tickets waiting
}

// clientQueue is one client id's tickets in a class, oldest first.
type clientQueue struct {
	key     [16]byte
	waiting []*ticket
}

func (q *fairQueue) push(client [16]byte, class int, t *ticket) {
	cq := q.clients[client]
	if cq == nil {
		cq = &clientQueue{key: client}
		q.clients[client] = cq
		q.order = append(q.order, cq)
	}
	t.client = cq
	cq.waiting = append(cq.waiting, t)
	q.n++
}

// pop returns the next ticket in turn, nil when none waits.
func (q *fairQueue) pop() *ticket {
	if len(q.order) == 0 {
		return nil
	}
	cq := q.order[0]
	t := cq.waiting[0]
	cq.waiting[0] = nil
	cq.waiting = cq.waiting[1:]
	q.order[0] = nil
	q.order = q.order[1:]
	if len(cq.waiting) > 0 {
		q.order = append(q.order, cq) // its next ticket waits for the others' turns
	} else {
		delete(q.clients, cq.key)
	}
	q.n--
	if len(q.order) == 0 {
		q.order = nil // let the array go
	}
	return t
}

// remove takes a ticket out of the queue, as its request gives up.
func (q *fairQueue) remove(t *ticket) {
	cq := t.client
	for i, w := range cq.waiting {
		if w == t {
			cq.waiting = append(cq.waiting[:i], cq.waiting[i+1:]...)
			q.n--
			break
		}
	}
	if len(cq.waiting) > 0 {
		return
	}
	delete(q.clients, cq.key)
	for i, o := range q.order {
		if o == cq {
			q.order = append(q.order[:i], q.order[i+1:]...)
			break
		}
	}
}
