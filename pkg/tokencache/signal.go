package tokencache

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Purge signals.
//
// Anyone who can write to Redis or PUBLISH on it could otherwise steer the
// replicas' purges: announce a purge that wipes every replica's memory, or
// a generation so far ahead that values written under it outlive every
// later purge. So the purge generation counter and the announcements are
// authenticated with a key derived from the encryption key (HKDF), and a
// replica believes only what carries its tag:
//
//   - the counter holds "<generation>:<tag>"; a value without a valid tag
//     is ignored, and the next purge counts on from the highest
//     authenticated generation any replica knows;
//   - an announcement is {"payload": …, "tag": …}, its payload the
//     selector, the generation, when it was sent and a random nonce; one
//     with a bad tag is forged, one sent more than purgeSignalMaxAge ago
//     (or ahead) or whose nonce was seen is replayed, one whose generation
//     is implausibly far ahead of the counter is refused: each is ignored,
//     logged and counted (extauthz_purge_signals_refused_total{reason}),
//     and never wipes memory.
//
// A value sealed in Redis records the generation it was written under (see
// encode): one written before the latest authenticated purge is refused.

// Refusal reasons of purge signals.
const (
	SignalForged      = "forged"
	SignalReplayed    = "replayed"
	SignalImplausible = "implausible"
)

const (
	purgeSignalInfo = "extauthz redis purge signals v1"
	// purgeSignalMaxAge bounds how old (or, clocks differing, how far
	// ahead) an announcement may be.
	purgeSignalMaxAge = time.Minute
	// maxGenerationJump is how far past the highest generation a replica
	// knows an authenticated announcement may claim: purges come one at a
	// time, a replica that knows none believes any.
	maxGenerationJump = 1 << 20
	// maxSeenNonces bounds the announcements remembered to refuse replays.
	maxSeenNonces = 4096
)

// signals authenticates purge signals for one tier.
type signals struct {
	key []byte // HMAC-SHA-256 key

	mu   sync.Mutex
	seen map[string]time.Time // nonces of announcements, until they are too old anyway
	bad  string               // the last unauthenticated counter value logged
}

func newSignals(encryptionKey []byte) (*signals, error) {
	key, err := hkdf.Key(sha256.New, encryptionKey, nil, purgeSignalInfo, sha256.Size)
	if err != nil {
		return nil, err
	}
	return &signals{key: key, seen: map[string]time.Time{}}, nil
}

func (sg *signals) tag(kind, prefix, data string) string {
	m := hmac.New(sha256.New, sg.key)
	fmt.Fprintf(m, "%s\x00%d:%s\x00", kind, len(prefix), prefix)
	m.Write([]byte(data))
	return hex.EncodeToString(m.Sum(nil))
}

// formatGeneration is the counter's value for generation g.
func (sg *signals) formatGeneration(prefix string, g int64) string {
	n := strconv.FormatInt(g, 10)
	return n + ":" + sg.tag("generation", prefix, n)
}

// parseGeneration reads the counter's value; ok is false when it carries
// no valid tag (or there is none).
func (sg *signals) parseGeneration(prefix, raw string) (int64, bool) {
	n, tag, found := strings.Cut(raw, ":")
	if !found || !hmac.Equal([]byte(tag), []byte(sg.tag("generation", prefix, n))) {
		return 0, false
	}
	g, err := strconv.ParseInt(n, 10, 64)
	return g, err == nil && g > 0
}

// announcement is what a purge publishes.
type announcement struct {
	Payload string `json:"payload"` // JSON of announced
	Tag     string `json:"tag"`
}

type announced struct {
	purgeSelector
	At    int64  `json:"at"`    // Unix milliseconds
	Nonce string `json:"nonce"` // random, hex
}

// seal makes the announcement of sel on channel.
func (sg *signals) seal(prefix, channel string, sel purgeSelector, now time.Time) ([]byte, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(announced{purgeSelector: sel, At: now.UnixMilli(), Nonce: hex.EncodeToString(nonce[:])})
	if err != nil {
		return nil, err
	}
	return json.Marshal(announcement{Payload: string(payload), Tag: sg.tag("announcement", prefix, channel+"\x00"+string(payload))})
}

// errSignal is a purge signal refused, with the reason label.
type errSignal struct{ reason, why string }

func (e *errSignal) Error() string { return e.reason + ": " + e.why }

// open checks an announcement and returns its selector. known is the
// highest generation the replica knows.
func (sg *signals) open(prefix, channel string, msg []byte, known int64, now time.Time) (purgeSelector, error) {
	var a announcement
	if err := json.Unmarshal(msg, &a); err != nil || a.Payload == "" ||
		!hmac.Equal([]byte(a.Tag), []byte(sg.tag("announcement", prefix, channel+"\x00"+a.Payload))) {
		return purgeSelector{}, &errSignal{SignalForged, "no valid tag"}
	}
	var p announced
	if err := json.Unmarshal([]byte(a.Payload), &p); err != nil || p.Nonce == "" {
		return purgeSelector{}, &errSignal{SignalForged, "an unreadable payload under a valid tag"}
	}
	at := time.UnixMilli(p.At)
	if age := now.Sub(at); age > purgeSignalMaxAge || age < -purgeSignalMaxAge {
		return purgeSelector{}, &errSignal{SignalReplayed, fmt.Sprintf("sent %s ago", age.Round(time.Second))}
	}
	if known > 0 && p.Generation > known+maxGenerationJump {
		return purgeSelector{}, &errSignal{SignalImplausible, fmt.Sprintf("generation %d, %d known", p.Generation, known)}
	}
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if _, ok := sg.seen[p.Nonce]; ok {
		return purgeSelector{}, &errSignal{SignalReplayed, "seen before"}
	}
	if len(sg.seen) >= maxSeenNonces {
		for n, until := range sg.seen {
			if now.After(until) {
				delete(sg.seen, n)
			}
		}
		if len(sg.seen) >= maxSeenNonces {
			// Only authenticated purges get here: thousands a minute is
			// an operator's loop, not an attack; keep the newest.
			clear(sg.seen)
		}
	}
	sg.seen[p.Nonce] = at.Add(2 * purgeSignalMaxAge)
	return p.purgeSelector, nil
}

// nextGeneration starts a new purge generation: the highest authenticated
// one the counter or this replica knows, plus one, written with its tag.
func (s *Shared) nextGeneration(ctx context.Context) (int64, error) {
	key := s.generationKey()
	for range 16 {
		var next int64
		err := s.redis.client.Watch(ctx, func(tx *redis.Tx) error {
			raw, err := tx.Get(ctx, key).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			next = s.generation.Load()
			if g, ok := s.sig.parseGeneration(s.prefix, raw); ok {
				next = max(next, g)
			} else if raw != "" {
				s.refusedCounter(raw)
			}
			next++
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, s.sig.formatGeneration(s.prefix, next), 0)
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue // another purge at the same moment: count on from it
		}
		if err != nil {
			return 0, err
		}
		return next, nil
	}
	return 0, errors.New("the purge generation kept changing")
}

// observeCounter raises the generation to what the counter says, if it
// carries a valid tag.
func (s *Shared) observeCounter(raw string) {
	if g, ok := s.sig.parseGeneration(s.prefix, raw); ok {
		s.observe(g)
	} else if raw != "" {
		s.refusedCounter(raw)
	}
}

// refusedCounter logs and counts an unauthenticated counter value, once
// per value: it is read every generationRecheck.
func (s *Shared) refusedCounter(raw string) {
	s.sig.mu.Lock()
	fresh := s.sig.bad != raw
	s.sig.bad = raw
	s.sig.mu.Unlock()
	if fresh {
		s.refusedSignal(&errSignal{SignalForged, "the purge generation counter has no valid tag"}, "")
	}
}

// refusedSignal logs and counts a purge signal refused.
func (s *Shared) refusedSignal(err error, channel string) {
	var es *errSignal
	reason := SignalForged
	if errors.As(err, &es) {
		reason = es.reason
	}
	s.redis.signals.WithLabelValues(reason).Inc()
	s.redis.log.Warn("purge signal refused: it does not come from a replica holding the encryption key, or it is old",
		zap.String("reason", reason), zap.String("channel", channel), zap.Error(err))
}
