package tokencache

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"math"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Failure budgets.
//
// IdPs lock a client out, or throttle the gateway, after repeated failures,
// and callers choose client ids and secrets. So once the endpoint rejected
// one client id's credentials MaxRejections times within RejectionWindow,
// credentials of that id it never accepted are refused without asking it
// (ReasonFailureBudget); and once it rejected MaxEndpointRejections
// credentials of any ids within the window, so are all credentials it never
// accepted (ReasonEndpointBudget), so that spraying ids cannot get the
// gateway's address or the IdP tenant throttled. Requests under way with
// unknown credentials count against both, so that a burst cannot overshoot
// them.
//
// Credentials the endpoint accepted are remembered — a keyed fingerprint,
// never the secret — beyond their token's life (in memory, and with a
// Redis tier fleet-wide and across restarts) and are never refused: an
// attacker who floods a client id with wrong secrets locks out nobody who
// has the right one and was accepted before.
//
// Client ids are case-folded (many IdPs match them without case) and
// hashed with a per-process random key, so that no one can choose ids
// that share a record or a queue. A record lives while its id has
// requests under way or rejections in the window — at most the endpoint's
// cap of them, whatever the ids — so records are never evicted to make
// room, and strangers cannot push a client's record out.

// DefaultMaxEndpointRejections bounds, by default, the rejections of
// unknown credentials one replica causes at one endpoint per window.
const DefaultMaxEndpointRejections = 50

// maxAccepted bounds the accepted credentials remembered in memory. Only
// the endpoint's acceptances add to them: strangers cannot evict one.
const maxAccepted = 1 << 16

// budgetState is a gate's failure budgets; the gate's mutex guards it.
type budgetState struct {
	records map[[16]byte]*budgetRecord // by keyed hash of the folded client id
	sweepAt int                        // sweep empty records when len(records) reaches it
	// rejected and inflight are the endpoint-wide count.
	rejected []time.Time
	inflight int
	// cleared are the purge tags of client ids an operator purged, until
	// when they pass a spent endpoint-wide count: the operator vouches for
	// them until their next rejection.
	cleared map[[8]byte]time.Time
}

// Bounds of the operator's purges of client ids.
const (
	clearedFor = time.Hour
	maxCleared = 1024
)

// isCleared reports whether an operator purged the client id lately.
func (b *budgetState) isCleared(tag [8]byte, now time.Time) bool {
	until, ok := b.cleared[tag]
	return ok && now.Before(until)
}

// budgetRecord is one client id's count at one endpoint.
type budgetRecord struct {
	rejected []time.Time // the latest rejections, oldest first
	inflight int         // requests with unknown credentials under way
	purgeTag [8]byte     // what a purge names it by: see purgeTag
}

func (r *budgetRecord) empty() bool { return r.inflight == 0 && len(r.rejected) == 0 }

// prune drops the times before since from ts, in place.
func prune(ts []time.Time, since time.Time) []time.Time {
	n := 0
	for n < len(ts) && ts[n].Before(since) {
		n++
	}
	if n == 0 {
		return ts
	}
	return append(ts[:0], ts[n:]...)
}

// push appends t to ts, keeping the last limit.
func push(ts []time.Time, t time.Time, limit int) []time.Time {
	ts = append(ts, t)
	if len(ts) > limit {
		ts = append(ts[:0], ts[len(ts)-limit:]...)
	}
	return ts
}

// refusal is the RefusedError for a full count: retry once the oldest
// rejection leaves the window, or in a second when only requests under
// way fill it.
func refusal(reason string, rejected []time.Time, window time.Duration, now time.Time) *RefusedError {
	retry := time.Second
	if len(rejected) > 0 {
		retry = max(rejected[0].Add(window).Sub(now), time.Second)
	}
	return &RefusedError{Reason: reason, RetryAfter: retry}
}

// clientRef names a client id for budgets and queues.
type clientRef struct {
	key      [16]byte // keyed hash of the folded id
	purgeTag [8]byte
}

// admission is one request's passage through the failure budgets.
type admission struct {
	g        *gate
	client   clientRef
	trusted  bool
	r        *budgetRecord // nil when trusted or without a budget
	sent     bool          // counted in the endpoint-wide requests under way
	limit    int           // the client id's budget; 0 for none
	capacity int           // the endpoint-wide cap
	window   time.Duration
}

// admit decides whether a request of client, with credentials the endpoint
// may not know (trusted false), may wait for a place at the endpoint: the
// client id's budget counts it from now, and the endpoint-wide one when it
// is sent (see send). Whatever becomes of it, the caller must call done.
func (g *gate) admit(e *Endpoint, client clientRef, trusted bool, now time.Time) (*admission, error) {
	a := &admission{g: g, client: client, trusted: trusted, limit: e.MaxRejections, window: e.RejectionWindow,
		capacity: cmp.Or(e.MaxEndpointRejections, DefaultMaxEndpointRejections)}
	if a.limit <= 0 || trusted {
		return a, nil
	}
	b := &g.budget
	g.mu.Lock()
	defer g.mu.Unlock()
	since := now.Add(-a.window)
	b.rejected = prune(b.rejected, since)
	r := b.records[client.key]
	if r != nil {
		r.rejected = prune(r.rejected, since)
		if len(r.rejected)+r.inflight >= a.limit {
			return nil, refusal(ReasonFailureBudget, r.rejected, a.window, now)
		}
	}
	// Spent by rejections alone: no use waiting for a place.
	if len(b.rejected) >= a.capacity && !b.isCleared(client.purgeTag, now) {
		return nil, refusal(ReasonEndpointBudget, b.rejected, a.window, now)
	}
	if r == nil {
		r = b.add(client, since)
	}
	r.inflight++
	a.r = r
	return a, nil
}

// send decides, once the request has its place, whether the endpoint-wide
// cap lets it go: rejections in the window and requests with unknown
// credentials under way may not pass the cap, so that a burst cannot
// overshoot it. Requests waiting do not count: a cold start of many
// clients queues rather than being refused.
func (a *admission) send(now time.Time) error {
	if a.r == nil {
		return nil
	}
	g, b := a.g, &a.g.budget
	g.mu.Lock()
	defer g.mu.Unlock()
	b.rejected = prune(b.rejected, now.Add(-a.window))
	if len(b.rejected)+b.inflight >= a.capacity && !b.isCleared(a.client.purgeTag, now) {
		return refusal(ReasonEndpointBudget, b.rejected, a.window, now)
	}
	b.inflight++
	a.sent = true
	return nil
}

// done records what the endpoint said (rejected: the credentials), or
// that the request was not sent (false). It reports whether this
// rejection used up the client id's budget.
func (a *admission) done(rejected bool, now time.Time) (exhausted bool) {
	if a.limit <= 0 {
		return false
	}
	g, b := a.g, &a.g.budget
	g.mu.Lock()
	defer g.mu.Unlock()
	r := a.r
	if r != nil {
		r.inflight--
	}
	if a.sent {
		b.inflight--
	}
	if !rejected {
		if r != nil && r.empty() && b.records[a.client.key] == r {
			delete(b.records, a.client.key)
		}
		return false
	}
	if r == nil || b.records[a.client.key] != r {
		if r = b.records[a.client.key]; r == nil {
			r = b.add(a.client, now.Add(-a.window))
		}
	}
	r.rejected = push(r.rejected, now, a.limit)
	delete(b.cleared, a.client.purgeTag)
	if !a.trusted {
		b.rejected = push(b.rejected, now, a.capacity)
	}
	return len(r.rejected) == a.limit
}

// add makes client's record, first sweeping records that hold nothing
// since since when the map has doubled since the last sweep.
func (b *budgetState) add(client clientRef, since time.Time) *budgetRecord {
	if len(b.records) >= b.sweepAt {
		for k, r := range b.records {
			if r.rejected = prune(r.rejected, since); r.empty() {
				delete(b.records, k)
			}
		}
		b.sweepAt = max(2*len(b.records), 1024)
	}
	r := &budgetRecord{purgeTag: client.purgeTag}
	b.records[client.key] = r
	return r
}

// reset forgets the counts of the client ids match selects, and with all
// the endpoint-wide count too, as a purge asks; a purge of one client id
// (tag, when not nil) also lets it pass a spent endpoint-wide count until
// its next rejection.
func (g *gate) reset(match func(purgeTag [8]byte) bool, all bool, tag *[8]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := &g.budget
	if tag != nil {
		if b.cleared == nil || len(b.cleared) >= maxCleared {
			b.cleared = map[[8]byte]time.Time{}
		}
		b.cleared[*tag] = time.Now().Add(clearedFor)
	}
	for k, r := range b.records {
		if match(r.purgeTag) {
			r.rejected = nil
			if r.empty() {
				delete(b.records, k)
			}
		}
	}
	if all {
		b.rejected = nil
	}
}

// identities keys the hashes that name client ids and accepted credentials
// in this process.
type identities struct {
	seed [32]byte
}

func newIdentities() *identities {
	var id identities
	if _, err := rand.Read(id.seed[:]); err != nil {
		panic("tokencache: no randomness: " + err.Error()) // crypto/rand never fails on supported systems
	}
	return &id
}

func (id *identities) sum(kind byte, b []byte) [16]byte {
	m := hmac.New(sha256.New, id.seed[:])
	m.Write([]byte{kind})
	m.Write(b)
	var out [sha256.Size]byte
	return [16]byte(m.Sum(out[:0]))
}

// client names a client id for budgets and queues.
func (id *identities) client(clientID string) clientRef {
	folded := foldID(clientID)
	return clientRef{key: id.sum('c', []byte(folded)), purgeTag: purgeTag(folded)}
}

// accepted is the fingerprint of key's credentials in the memory of
// accepted ones.
func (id *identities) accepted(key Key) [16]byte { return id.sum('a', key.id[:]) }

// purgeTag is the short hash of a folded client id a purge selects budget
// records by, on every replica.
func purgeTag(folded string) [8]byte {
	sum := sha256.Sum256([]byte("budget\x00" + folded))
	return [8]byte(sum[:8])
}

// foldID case-folds a client id: ids that strings.EqualFold calls equal
// fold alike (each rune becomes the least of its simple folding orbit).
func foldID(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(s)
	}
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, s)
}

// acceptedSet remembers credentials the endpoint accepted, as keyed
// fingerprints: at most maxAccepted, the least recently accepted of a
// sample going first when a shard is full. Every cached client has one, so
// an entry is its fingerprint and when it was last accepted, kept in the
// map itself: no allocation, and no pointer for the collector, per entry.
type acceptedSet struct {
	shards *[acceptedShards]acceptedShard
}

// acceptedShards spread the set over locks; the fingerprint's first byte
// picks one.
const acceptedShards = 16

type acceptedShard struct {
	mu sync.RWMutex
	m  map[[16]byte]int64 // Unix nanoseconds of the last acceptance
}

func newAcceptedSet() acceptedSet {
	s := acceptedSet{new([acceptedShards]acceptedShard)}
	for i := range s.shards {
		s.shards[i].m = map[[16]byte]int64{}
	}
	return s
}

func (s acceptedSet) shard(fp [16]byte) *acceptedShard { return &s.shards[fp[0]%acceptedShards] }

func (s acceptedSet) has(fp [16]byte) bool {
	sh := s.shard(fp)
	sh.mu.RLock()
	_, ok := sh.m[fp]
	sh.mu.RUnlock()
	return ok
}

func (s acceptedSet) add(fp [16]byte, now time.Time) {
	sh := s.shard(fp)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[fp]; !ok && len(sh.m) >= maxAccepted/acceptedShards {
		// Go's map order is random: the oldest of a sample goes.
		var victim [16]byte
		oldest, seen := int64(math.MaxInt64), 0
		for k, at := range sh.m {
			if at < oldest {
				victim, oldest = k, at
			}
			if seen++; seen == 8 {
				break
			}
		}
		delete(sh.m, victim)
	}
	sh.m[fp] = now.UnixNano()
}

func (s acceptedSet) forget(fp [16]byte) {
	sh := s.shard(fp)
	sh.mu.Lock()
	delete(sh.m, fp)
	sh.mu.Unlock()
}

// len returns how many credentials are remembered.
func (s acceptedSet) len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.RLock()
		n += len(s.shards[i].m)
		s.shards[i].mu.RUnlock()
	}
	return n
}
