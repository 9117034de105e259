package tokencache

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/metrics"
)

// TestPurgeSignalsAreAuthenticated attacks purges through a real Redis as
// anyone who can PUBLISH or SET there can: forged announcements, a forged
// generation counter, a real announcement replayed, and a purged value
// written back. None wipes a replica's memory or lets a purged value back.
func TestPurgeSignalsAreAuthenticated(t *testing.T) {
	single := redistest.Single(t)
	ctx := context.Background()
	replica := func() (*Shared, *metrics.Metrics, *atomic.Int64) {
		m := metrics.New(prometheus.NewRegistry())
		r, err := NewRedis(RedisOptions{Mode: RedisSingle, Endpoints: []string{single.Addr}, Timeout: time.Second}, zap.NewNop(), m)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		var purges atomic.Int64
		sh, err := NewShared(SharedOptions{Redis: r, Prefix: "sig:", EncryptionKey: testEncryptionKey,
			OnPurge: func(PurgeSignal) { purges.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sh.Close() })
		return sh, m, &purges
	}
	a, _, aPurges := replica()
	b, bm, bPurges := replica()
	rc := redis.NewClient(&redis.Options{Addr: single.Addr})
	defer rc.Close()
	channel := b.purgeChannel()
	poll(t, func() bool { return rc.PubSubNumSub(ctx, channel).Val()[channel] == 2 })
	// A spy subscriber sees what a purge announces, as an attacker would.
	spy := rc.Subscribe(ctx, channel)
	defer spy.Close()
	if _, err := spy.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	refused := func(reason string) float64 {
		return testutil.ToFloat64(bm.PurgeSignalsRefused.WithLabelValues(reason))
	}

	// A real purge reaches the other replica.
	k := testKey("victim")
	if _, err := a.purge(ctx, purgeSelector{}); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool { return bPurges.Load() == 1 && b.generation.Load() == a.generation.Load() })
	captured, err := spy.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gen := b.generation.Load()

	// Forged announcements: the old plain selector, a huge generation, a
	// tag made with another key.
	other, err := newSignals(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.seal(b.prefix, channel, purgeSelector{Generation: gen + 1}, time.Now())
	for _, msg := range []string{`{"generation":1000000}`, `{"payload":"{\"generation\":1000000,\"at\":1,\"nonce\":\"x\"}","tag":"00"}`, string(foreign), "not json"} {
		if err := rc.Publish(ctx, channel, msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, func() bool { return refused(SignalForged) == 4 })
	// Replays: the captured announcement again, and one sealed with the
	// key but sent two minutes ago (as if captured then).
	if err := rc.Publish(ctx, channel, captured.Payload).Err(); err != nil {
		t.Fatal(err)
	}
	old, _ := b.sig.seal(b.prefix, channel, purgeSelector{Generation: gen + 1}, time.Now().Add(-2*time.Minute))
	if err := rc.Publish(ctx, channel, old).Err(); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool { return refused(SignalReplayed) == 2 })
	// Implausible, though authenticated.
	far, _ := b.sig.seal(b.prefix, channel, purgeSelector{Generation: gen + maxGenerationJump + 1}, time.Now())
	if err := rc.Publish(ctx, channel, far).Err(); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool { return refused(SignalImplausible) == 1 })
	if n := bPurges.Load(); n != 1 || b.generation.Load() != gen {
		t.Errorf("after forged and replayed announcements: %d purges, generation %d; want 1 and %d", n, b.generation.Load(), gen)
	}
	if aPurges.Load() != 1 {
		t.Errorf("the purging replica heard %d purges, want its own", aPurges.Load())
	}

	// A forged counter is not believed either.
	for _, v := range []string{"1000000", "1000000:" + b.sig.tag("generation", "other:", "1000000")} {
		if err := rc.Set(ctx, b.generationKey(), v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		b.observeCounter(rc.Get(ctx, b.generationKey()).Val())
		if b.generation.Load() != gen {
			t.Errorf("counter %q raised the generation to %d", v, b.generation.Load())
		}
	}
	if refused(SignalForged) != 6 {
		t.Errorf("%v forged signals counted, want 6", refused(SignalForged))
	}

	// A purged value written back is refused, by a replica that knew of
	// the purge and by one that reads the counter anew; the next purge
	// counts on from the authenticated generation, not the forged one.
	_ = a.Set(ctx, k, newTestToken(jwtLike, time.Hour))
	saved := rawGet(t, a, k)
	if _, err := a.purge(ctx, purgeSelector{}); err != nil {
		t.Fatal(err)
	}
	if a.generation.Load() != gen+1 {
		t.Errorf("the purge after a forged counter started generation %d, want %d", a.generation.Load(), gen+1)
	}
	if err := rc.Set(ctx, a.valueKey(k), saved, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	fresh, _, _ := replica()
	for name, s := range map[string]*Shared{"the purging replica": a, "a new replica": fresh} {
		if got, err := s.Get(ctx, k); got != nil || err != nil {
			t.Errorf("%s read the value written back: %v %v", name, got, err)
		}
	}
}

// TestAnnouncementsAreBoundToTheirChannel: an announcement sealed for one
// tier's channel is refused on another's (another prefix, same key).
func TestAnnouncementsAreBoundToTheirChannel(t *testing.T) {
	sg, err := newSignals(testEncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sg.seal("a:", "a:purge", purgeSelector{Generation: 3}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sg.open("a:", "a:purge", msg, 2, time.Now()); err != nil {
		t.Errorf("on its own channel: %v", err)
	}
	if _, err := sg.open("b:", "b:purge", msg, 2, time.Now()); err == nil {
		t.Error("accepted on another tier's channel")
	}
	var a announcement
	_ = json.Unmarshal(msg, &a)
	a.Payload = a.Payload[:len(a.Payload)-1] + ` ` + a.Payload[len(a.Payload)-1:]
	tampered, _ := json.Marshal(a)
	if _, err := sg.open("a:", "a:purge", tampered, 2, time.Now()); err == nil {
		t.Error("a tampered payload was accepted")
	}
}
