package tokencache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// PurgeRequest selects tokens to drop: those of the given endpoints (all
// when none), and of the given client (all when empty). Tiers are the Redis
// tiers to purge when no endpoint is given (when endpoints are, their own).
type PurgeRequest struct {
	Endpoints []*Endpoint
	ClientID  string
	Tiers     []*Shared
}

// Purged counts dropped tokens by tier.
type Purged struct {
	Memory, Redis int64
}

// purgeSelector is a PurgeRequest as hashes, as it travels to other replicas.
type purgeSelector struct {
	Endpoints []string `json:"endpoints,omitempty"` // hex short hashes; all when empty
	Client    string   `json:"client,omitempty"`    // hex short hash; all when empty
	// Budget is the purge tag of the folded client id, whose failure
	// budget the purge resets; empty with Client.
	Budget string `json:"budget,omitempty"`
	// Generation is the purge generation the purge started: a replica
	// learns it at once instead of at its next look at the counter.
	Generation int64 `json:"generation,omitempty"`
}

func (p purgeSelector) match(k Key) bool {
	if p.Client != "" && hex.EncodeToString(k.client[:]) != p.Client {
		return false
	}
	return len(p.Endpoints) == 0 || slices.Contains(p.Endpoints, hex.EncodeToString(k.endpoint[:]))
}

// PurgeSignal is a purge another replica announced.
type PurgeSignal struct{ sel purgeSelector }

// resetBudgets gives the client ids sel selects a fresh failure budget at
// the gates of its endpoints (every gate when it names none): a purge is
// how an operator says the next Check should ask again.
func (c *Cache) resetBudgets(sel purgeSelector) {
	c.mu.Lock()
	gates := make([]*gate, 0, len(c.gates))
	for _, g := range c.gates {
		gates = append(gates, g)
	}
	c.mu.Unlock()
	match := func([8]byte) bool { return true }
	var tag *[8]byte
	if sel.Client != "" {
		b, err := hex.DecodeString(sel.Budget)
		if err != nil || len(b) != 8 {
			return // a purge of an older replica: no budget named
		}
		tag = (*[8]byte)(b)
		match = func(t [8]byte) bool { return t == *tag }
	}
	for _, g := range gates {
		if len(sel.Endpoints) > 0 && !g.usedBy(sel.Endpoints) {
			continue
		}
		g.reset(match, sel.Client == "", tag)
	}
}

// Purge drops the selected tokens from memory and from the Redis tiers the
// endpoints use (every tier the cache knows when no endpoint is given), and
// tells the other replicas sharing those tiers to drop them from their
// memory too. Failures remembered for the selected keys are forgotten with
// them: a purge is how an operator says the next Check should ask again.
func (c *Cache) Purge(ctx context.Context, r PurgeRequest) (Purged, error) {
	var sel purgeSelector
	if r.ClientID != "" {
		h, b := clientHash(r.ClientID), purgeTag(foldID(r.ClientID))
		sel.Client, sel.Budget = hex.EncodeToString(h[:]), hex.EncodeToString(b[:])
	}
	tiers := map[*Shared][]string{}
	for _, e := range r.Endpoints {
		h := hex.EncodeToString(e.identity[:8])
		sel.Endpoints = append(sel.Endpoints, h)
		if e.Shared != nil {
			tiers[e.Shared] = append(tiers[e.Shared], h)
		}
	}
	if len(r.Endpoints) == 0 {
		for _, t := range r.Tiers {
			tiers[t] = nil
		}
	}
	var out Purged
	out.Memory = c.store.purge(sel.match)
	c.negative.forgetFunc(sel.match)
	c.resetBudgets(sel)
	c.m.Purges.WithLabelValues("memory").Add(float64(out.Memory))
	var errs []error
	for t, endpoints := range tiers {
		n, err := t.purge(ctx, purgeSelector{Endpoints: endpoints, Client: sel.Client, Budget: sel.Budget})
		out.Redis += n
		errs = append(errs, err)
	}
	c.m.Purges.WithLabelValues("redis").Add(float64(out.Redis))
	return out, errors.Join(errs...)
}

// purgeChannel is the pub/sub channel of a tier's purges.
func (s *Shared) purgeChannel() string { return s.prefix + "purge" }

// purge starts a new purge generation, so that a purged value written back
// is refused, deletes the tier's values sel selects, then publishes sel so
// that every replica drops them from memory.
func (s *Shared) purge(ctx context.Context, sel purgeSelector) (int64, error) {
	gen, err := s.nextGeneration(ctx)
	if err != nil {
		return 0, fmt.Errorf("redis: starting a purge generation: %w", err)
	}
	s.observe(gen)
	client := "*"
	if sel.Client != "" {
		client = s.hexTag(tagClient, sel.Client)
	}
	endpoints := []string{"*"}
	if len(sel.Endpoints) > 0 {
		endpoints = endpoints[:0]
		for _, e := range sel.Endpoints {
			endpoints = append(endpoints, s.hexTag(tagEndpoint, e))
		}
	}
	var keys []string
	for _, e := range endpoints {
		found, err := s.scan(ctx, globEscape(s.prefix)+e+":"+client+":*")
		if err != nil {
			return 0, err
		}
		keys = append(keys, found...)
	}
	var deleted int64
	if len(keys) > 0 {
		// One DEL per key: in a cluster the keys live in different slots.
		cmds, err := s.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Del(ctx, k)
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("redis: deleting tokens: %w", err)
		}
		for _, c := range cmds {
			deleted += c.(*redis.IntCmd).Val()
		}
	}
	sel.Generation = gen
	msg, err := s.sig.seal(s.prefix, s.purgeChannel(), sel, time.Now())
	if err != nil {
		return deleted, err
	}
	if err := s.redis.client.Publish(ctx, s.purgeChannel(), msg).Err(); err != nil {
		return deleted, fmt.Errorf("redis: telling the other replicas: %w", err)
	}
	return deleted, nil
}

// hexTag is tag for a hash already in hex, as a purge selector carries it.
func (s *Shared) hexTag(kind byte, h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		return h // selectors are made here; a bad one matches nothing
	}
	return s.tag(kind, b)
}

// scan lists the keys matching pattern, on every master of a cluster.
func (s *Shared) scan(ctx context.Context, pattern string) ([]string, error) {
	var mu sync.Mutex // ForEachMaster runs in parallel
	var keys []string
	one := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			keys = append(keys, it.Val())
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	switch c := s.redis.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, one)
	case *redis.Client:
		err = one(ctx, c)
	default:
		err = fmt.Errorf("redis: cannot scan a %T", c)
	}
	if err != nil {
		return nil, fmt.Errorf("redis: finding tokens: %w", err)
	}
	return keys, nil
}

// subscribe tells onPurge what every purge announced through this tier
// selects, until the subscription is closed.
func (s *Shared) subscribe(onPurge func(PurgeSignal), log *zap.Logger) *redis.PubSub {
	ps := s.redis.client.Subscribe(context.Background(), s.purgeChannel())
	go func() {
		for msg := range ps.Channel() {
			sel, err := s.sig.open(s.prefix, msg.Channel, []byte(msg.Payload), s.generation.Load(), time.Now())
			if err != nil {
				s.refusedSignal(err, msg.Channel)
				continue
			}
			s.observe(sel.Generation)
			onPurge(PurgeSignal{sel})
		}
	}()
	return ps
}

// Forget drops from the memory tier the tokens another replica's purge
// selects, and the failures and budgets remembered for them, and counts
// the tokens.
func (c *Cache) Forget(p PurgeSignal) int64 {
	n := c.store.purge(p.sel.match)
	c.negative.forgetFunc(p.sel.match)
	c.resetBudgets(p.sel)
	if n > 0 {
		c.log.Info("purged tokens at another replica's request", zap.Int64("tokens", n))
	}
	return n
}

// globEscape quotes the characters Redis MATCH patterns treat specially.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}
