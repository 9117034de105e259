package tokencache

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/secret"
)

// RedisLogger adapts log for go-redis's own messages (sentinel discoveries,
// pool events), so that they leave the process as structured debug lines
// instead of text on standard error. go-redis has one logger per process:
// install it once, with redis.SetLogger.
func RedisLogger(log *zap.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{log.Named("go-redis")}
}

type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "redis client"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

// redisRetryInterval is how long a Redis that failed is left alone before
// one request tries it again.
const redisRetryInterval = time.Second

// Redis is a connection pool to one Redis deployment, shared by every tier
// that uses it. When calls fail it is marked down, logged once, skipped for
// a second at a time, and marked up again by the first call that succeeds.
type Redis struct {
	client   redis.UniversalClient
	timeout  time.Duration
	log      *zap.Logger
	up       prometheus.Gauge
	errors   prometheus.Counter
	signals  *prometheus.CounterVec // purge signals refused, by reason
	now      func() time.Time
	down     atomic.Bool
	retryAt  atomic.Int64
	failures atomic.Int64
}

// ErrRedisDown reports a call skipped because Redis is marked down.
var ErrRedisDown = errors.New("redis is marked down")

// RedisMode is how Redis is deployed. It is what the configuration says,
// never guessed from the number of endpoints.
type RedisMode string

// Redis modes.
const (
	RedisSingle   RedisMode = "single"   // one instance: one endpoint
	RedisCluster  RedisMode = "cluster"  // Redis Cluster: any of its nodes as endpoints
	RedisSentinel RedisMode = "sentinel" // a master set found through sentinels
)

// DefaultRedisTimeout bounds every Redis call by default: short enough for
// Checks to stay inside Envoy's default 200 ms deadline.
const DefaultRedisTimeout = 50 * time.Millisecond

// RedisOptions say how to reach one Redis deployment.
type RedisOptions struct {
	Mode             RedisMode
	Endpoints        []string
	Username         string
	Password         secret.Value
	Database         int
	TLS              *tls.Config // nil for plaintext
	MasterSet        string      // sentinel mode
	SentinelUsername string
	SentinelPassword secret.Value
	Timeout          time.Duration // DefaultRedisTimeout when zero
	// Identity is equal for deployments configured alike, so that a
	// caller can share one pool between them; it holds no secret.
	Identity string
}

// NewRedis returns a connection pool to o's deployment. It does no I/O:
// Redis may be down at start. Its owner closes it.
func NewRedis(o RedisOptions, log *zap.Logger, m *metrics.Metrics) (*Redis, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = metrics.Nop()
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultRedisTimeout
	}
	var client redis.UniversalClient
	switch o.Mode {
	case RedisSingle:
		if len(o.Endpoints) != 1 {
			return nil, fmt.Errorf("redis: single mode takes one endpoint, got %d", len(o.Endpoints))
		}
		client = redis.NewClient(&redis.Options{
			Addr: o.Endpoints[0], Username: o.Username, Password: o.Password.Reveal(), DB: o.Database, TLSConfig: o.TLS,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
			MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true,
		})
	case RedisCluster:
		client = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: o.Endpoints, Username: o.Username, Password: o.Password.Reveal(), TLSConfig: o.TLS,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
			MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true,
		})
	case RedisSentinel:
		client = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: o.MasterSet, SentinelAddrs: o.Endpoints,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword.Reveal(),
			Username: o.Username, Password: o.Password.Reveal(), DB: o.Database, TLSConfig: o.TLS,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
			MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true,
		})
	default:
		return nil, fmt.Errorf("redis: unknown mode %q", o.Mode)
	}
	// Logs and metric labels name the endpoints redacted: an address
	// written as a URL may carry the password.
	shown := make([]string, len(o.Endpoints))
	for i, e := range o.Endpoints {
		shown[i] = secret.RedactURL(e)
	}
	label := string(o.Mode) + ":" + strings.Join(shown, ",")
	r := &Redis{
		client: client, timeout: timeout, now: time.Now,
		log: log.With(zap.String("redis_mode", string(o.Mode)), zap.Strings("redis_endpoints", shown)),
		up:  m.RedisUp.WithLabelValues(label), errors: m.RedisErrors.WithLabelValues(label),
		signals: m.PurgeSignalsRefused,
	}
	r.up.Set(1)
	return r, nil
}

// Close closes the pool.
func (r *Redis) Close() error { return r.client.Close() }

// Failures counts failed Redis calls.
func (r *Redis) Failures() int64 { return r.failures.Load() }

// Down reports whether Redis is marked down.
func (r *Redis) Down() bool { return r.down.Load() }

// call runs fn with the Redis timeout, unless Redis is marked down and not
// due for another try. A miss (redis.Nil) is a success.
func (r *Redis) call(ctx context.Context, fn func(ctx context.Context) error) error {
	return r.callIn(ctx, nil, fn)
}

// callIn is call with dc, when not nil, as the room for the call's
// context (see lookup).
func (r *Redis) callIn(ctx context.Context, dc *deadlineCtx, fn func(ctx context.Context) error) error {
	if r.down.Load() {
		at := r.retryAt.Load()
		if r.now().UnixNano() < at || !r.retryAt.CompareAndSwap(at, r.now().Add(redisRetryInterval).UnixNano()) {
			return ErrRedisDown
		}
	}
	err := fn(withDeadline(ctx, time.Now().Add(r.timeout), dc)) // the real clock, as the socket keeps it
	if err != nil && !errors.Is(err, redis.Nil) {
		r.failures.Add(1)
		r.errors.Inc()
		r.retryAt.Store(r.now().Add(redisRetryInterval).UnixNano())
		if r.down.CompareAndSwap(false, true) {
			r.up.Set(0)
			r.log.Warn("redis unavailable: serving from memory and the token endpoint", zap.Error(err))
		}
		return err
	}
	if r.down.CompareAndSwap(true, false) {
		r.up.Set(1)
		r.log.Info("redis available again")
	}
	return err
}

// deadlineCtx is ctx with an earlier deadline and no timer. go-redis sets
// a context's deadline on the socket for every step of a call
// (ContextTimeoutEnabled) and bounds a wait for a pooled connection by
// PoolTimeout, the same timeout: nothing of a call waits on Done for the
// deadline, so the timer and goroutine-safe cancellation context.WithTimeout
// sets up (five allocations a call) would buy nothing.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

// withDeadline is ctx, ending at deadline unless it ends sooner, kept in
// dc unless it is nil.
func withDeadline(ctx context.Context, deadline time.Time, dc *deadlineCtx) context.Context {
	if d, ok := ctx.Deadline(); ok && !deadline.Before(d) {
		return ctx
	}
	if dc == nil {
		dc = new(deadlineCtx)
	}
	*dc = deadlineCtx{Context: ctx, deadline: deadline}
	return dc
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Shared is a Redis tier as a policy sees it: a key prefix and an
// encryption key. Redis is not trusted: every value is sealed with
// AES-256-GCM, bound to its key name and to the purge generation it was
// written in, and key names are HMAC tags.
type Shared struct {
	redis  *Redis
	prefix string
	genKey string // prefix + "generation"
	aead   cipher.AEAD
	names  *sync.Pool // of *namer
	// generation is the highest purge generation seen: values written in
	// an earlier one were purged, and are refused if they come back.
	generation atomic.Int64
	// genCheckedAt is when this replica last read the generation counter
	// (Unix nanoseconds); see generationRecheck.
	genCheckedAt atomic.Int64
	sub          *redis.PubSub // purges announced by other replicas; nil without OnPurge
	sig          *signals      // authenticates purge signals
}

// SharedOptions configure NewShared.
type SharedOptions struct {
	Redis         *Redis
	Prefix        string // of every key
	EncryptionKey []byte // 32 bytes: values are sealed and key names tagged with it
	// OnPurge, when set, is told what every purge through this tier,
	// announced by any replica, selects: the caller drops those tokens from
	// its memory tier. The tier subscribes to the announcements until Close.
	OnPurge func(PurgeSignal)
	Logger  *zap.Logger
}

// namesInfo derives the key of the key names from the encryption key (HKDF).
const namesInfo = "extauthz redis key names v1"

// ErrNoEncryptionKey reports a Redis tier without an encryption key.
var ErrNoEncryptionKey = errors.New("the Redis tier needs a 32-byte encryption key: Redis values are bearer tokens, and nothing read from Redis is believed unless sealed")

// NewShared returns the Redis tier of o. Its owner closes it (the
// subscription; the pool is the Redis owner's).
func NewShared(o SharedOptions) (*Shared, error) {
	s, err := newShared(o.Redis, o.Prefix, o.EncryptionKey)
	if err != nil {
		return nil, err
	}
	if o.OnPurge != nil {
		if o.Logger == nil {
			o.Logger = zap.NewNop()
		}
		s.sub = s.subscribe(o.OnPurge, o.Logger)
	}
	return s, nil
}

// Close ends the tier's subscription to purge announcements.
func (s *Shared) Close() error {
	if s.sub == nil {
		return nil
	}
	return s.sub.Close()
}

func newShared(r *Redis, prefix string, encryptionKey []byte) (*Shared, error) {
	if len(encryptionKey) != 32 {
		return nil, ErrNoEncryptionKey
	}
	// Not "generation", which replicas before authenticated purge signals
	// INCR: they would fail on a tagged value.
	s := &Shared{redis: r, prefix: prefix, genKey: prefix + "purge-generation"}
	var err error
	if s.sig, err = newSignals(encryptionKey); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(encryptionKey)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	namesKey, err := hkdf.Key(sha256.New, encryptionKey, nil, namesInfo, sha256.Size)
	if err != nil {
		return nil, err
	}
	s.names = &sync.Pool{New: func() any { return &namer{mac: hmac.New(sha256.New, namesKey)} }}
	return s, nil
}

// Parts of a key name, for tag.
const (
	tagEndpoint = 'e'
	tagClient   = 'c'
	tagKey      = 'k'
	tagAccepted = 'a'
)

// tag writes one part of a key name: an HMAC of it, in hex, so that Redis
// holds nothing a guessed client id or secret could be checked against
// offline.
func (s *Shared) tag(kind byte, b []byte) string { return string(s.appendTag(nil, kind, b)) }

// namer is an HMAC-SHA-256 that tags key names, with room for its input
// and output so that tagging allocates nothing.
type namer struct {
	mac hash.Hash
	in  [1 + len(Key{}.id)]byte // the kind and the part
	sum [sha256.Size]byte
}

// appendTag appends tag(kind, b) to dst.
func (s *Shared) appendTag(dst []byte, kind byte, b []byte) []byte {
	n := s.names.Get().(*namer)
	n.mac.Reset()
	// Through n.in, so that b does not escape through the interface; b
	// is at most an id, which n.in holds (a longer one panics below).
	n.in[0] = kind
	n.mac.Write(n.in[:1+copy(n.in[1:], b)])
	dst = hex.AppendEncode(dst, n.mac.Sum(n.sum[:0])[:len(b)])
	s.names.Put(n)
	return dst
}

// Redis returns the connection the tier uses.
func (s *Shared) Redis() *Redis { return s.redis }

// valueKey is <prefix><endpoint>:<client>:<key>, each a tag in hex: the
// short ones let a purge find a policy's or a client's tokens with SCAN.
func (s *Shared) valueKey(k Key) string {
	return s.valueKeyIn(make([]byte, 0, len(s.prefix)+2*(len(k.endpoint)+len(k.client)+len(k.id))+2), k)
}

// valueKeyIn is valueKey written into b's room (or more, if it is short).
func (s *Shared) valueKeyIn(b []byte, k Key) string {
	b = append(b, s.prefix...)
	b = append(s.appendTag(b, tagEndpoint, k.endpoint[:]), ':')
	b = append(s.appendTag(b, tagClient, k.client[:]), ':')
	b = s.appendTag(b, tagKey, k.id[:])
	return unsafe.String(&b[0], len(b)) // b is never written again
}

// readOnly is s as bytes, for calls that only read them (such as the
// associated data of a seal): a key name needs no copy per Redis read.
func readOnly(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func (s *Shared) lockKey(k Key) string { return s.prefix + "lock:" + s.tag(tagKey, k.id[:]) }

// generationKey holds the tier's purge generation, which every purge
// increments (INCR): a plain counter, since a forged one can only make
// replicas refuse values, never accept old ones.
func (s *Shared) generationKey() string { return s.genKey }

// generationRecheck is how often a read also fetches the generation
// counter. Purges announce their generation, so a replica normally knows it
// at once; the counter is what it falls back on when it missed an
// announcement (pub/sub delivers at most once), and what a replica that
// just started learns from on its first read.
const generationRecheck = time.Second

// observe raises the generation this replica knows to g.
func (s *Shared) observe(g int64) {
	for cur := s.generation.Load(); g > cur && !s.generation.CompareAndSwap(cur, g); cur = s.generation.Load() {
	}
}

// lookup is what one read of the tier keeps on the heap, in one
// allocation rather than two: the call's context and the key name (which
// fits unless the key prefix is longer than 62 bytes).
type lookup struct {
	ctx deadlineCtx
	key [160]byte
}

// Get returns the token stored under k, or nil when there is none that has
// not expired. A value that cannot be read (another format, another
// encryption key, another key name) or that was written before the latest
// purge is a miss; it is overwritten by the next Set.
func (s *Shared) Get(ctx context.Context, k Key) (*Token, error) {
	var data []byte
	l := new(lookup)
	rk := s.valueKeyIn(l.key[:0], k)
	asked := s.redis.now().UnixNano()
	recheck := asked >= s.genCheckedAt.Load()+int64(generationRecheck)
	err := s.redis.callIn(ctx, &l.ctx, func(ctx context.Context) error {
		if !recheck {
			var err error
			data, err = s.redis.client.Get(ctx, rk).Bytes()
			return err
		}
		var value, gen *redis.StringCmd
		if _, err := s.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			value, gen = p.Get(ctx, rk), p.Get(ctx, s.generationKey())
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if g, err := gen.Result(); err == nil || errors.Is(err, redis.Nil) {
			s.observeCounter(g)
			s.genCheckedAt.Store(asked)
		}
		var err error
		data, err = value.Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := s.redis.now()
	t, err := s.decode(data, rk, k.issuedTo(), now)
	if errors.Is(err, errOtherClient) {
		// Sealed under this key name, yet issued to another client: not
		// served, whatever wrote it.
		s.redis.log.Warn("token in redis was issued to another client; fetching a new one", zap.String("key", rk))
		return nil, nil
	}
	if err != nil {
		s.redis.log.Debug("unreadable value in redis, treated as a miss", zap.String("key", rk), zap.Error(err))
		return nil, nil
	}
	if !now.Before(t.Expiry()) {
		return nil, nil
	}
	return t, nil
}

// Set stores t under k until the token expires.
func (s *Shared) Set(ctx context.Context, k Key, t *Token) error {
	ttl := t.Expiry().Sub(s.redis.now())
	if ttl < time.Millisecond {
		return nil
	}
	rk := s.valueKey(k)
	data, err := s.encode(t, rk)
	if err != nil {
		return err
	}
	return s.redis.call(ctx, func(ctx context.Context) error {
		return s.redis.client.Set(ctx, rk, data, ttl).Err()
	})
}

// Delete removes the value under k, as when the endpoint revoked it.
func (s *Shared) Delete(ctx context.Context, k Key) error {
	rk := s.valueKey(k)
	return s.redis.call(ctx, func(ctx context.Context) error {
		return s.redis.client.Del(ctx, rk).Err()
	})
}

// AcceptedTTL is how long the Redis tier remembers credentials the
// endpoint accepted after their last acceptance: far beyond a token's
// life, so that a client whose token expired, or a replica that just
// started, still knows them.
const AcceptedTTL = 30 * 24 * time.Hour

// acceptedKey is <prefix>accepted:<tag of k>: the name alone records that
// the endpoint accepted k's credentials, and only the encryption key's
// holder can make it.
func (s *Shared) acceptedKey(k Key) string {
	return s.prefix + "accepted:" + s.tag(tagAccepted, k.id[:])
}

// Accepted reports whether any replica recorded that the endpoint accepted
// k's credentials (within AcceptedTTL). An error counts as not known.
func (s *Shared) Accepted(ctx context.Context, k Key) bool {
	ak := s.acceptedKey(k)
	var n int64
	err := s.redis.call(ctx, func(ctx context.Context) error {
		var err error
		n, err = s.redis.client.Exists(ctx, ak).Result()
		return err
	})
	return err == nil && n > 0
}

// Accept records that the endpoint accepted k's credentials, for every
// replica, or forgets it when the endpoint rejected them.
func (s *Shared) Accept(ctx context.Context, k Key, accepted bool) error {
	ak := s.acceptedKey(k)
	return s.redis.call(ctx, func(ctx context.Context) error {
		if accepted {
			return s.redis.client.Set(ctx, ak, "1", AcceptedTTL).Err()
		}
		return s.redis.client.Del(ctx, ak).Err()
	})
}

// ErrLocked reports a lock that another holder has.
var ErrLocked = errors.New("locked")

// unlockScript deletes a lock only if it is still the caller's.
var unlockScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0`)

// Lock takes the fleet-wide lock for fetching k's token, for at most ttl.
// It returns ErrLocked when another replica holds it.
func (s *Shared) Lock(ctx context.Context, k Key, ttl time.Duration) (unlock func(), err error) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	token, lk := hex.EncodeToString(id[:]), s.lockKey(k)
	var ok bool
	err = s.redis.call(ctx, func(ctx context.Context) error {
		var err error
		ok, err = s.redis.client.SetNX(ctx, lk, token, ttl).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrLocked
	}
	// Releasing a lock this replica holds is tried even while Redis is
	// marked down, since the write that marked it down may have been the
	// last, and a lock left behind makes other replicas wait.
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.redis.timeout)
		defer cancel()
		_ = unlockScript.Run(ctx, s.redis.client, []string{lk}, token).Err()
	}, nil
}

// formatSealed starts every value, so that a reader meeting a format it
// does not know (an older version's) treats it as a miss.
const formatSealed byte = 3

// sealedHeader is the generation, fetched and expiry times (8 bytes each)
// and the type's length (1 byte).
const sealedHeader = 25

// encode lays a token out as: the purge generation, fetched and expiry in
// Unix milliseconds (8 bytes each), the type's length (1 byte), the type,
// the token; and seals it with AES-256-GCM, the Redis key as associated
// data, so that a value can be neither read, changed, nor moved to another
// key.
func (s *Shared) encode(t *Token, redisKey string) ([]byte, error) {
	typ, tok := t.Type(), t.AccessToken.Reveal()
	if len(typ) > 255 {
		typ = typ[:255]
	}
	body := make([]byte, 0, sealedHeader+len(typ)+len(tok))
	body = binary.BigEndian.AppendUint64(body, uint64(s.generation.Load()))
	body = binary.BigEndian.AppendUint64(body, uint64(t.Fetched().UnixMilli()))
	body = binary.BigEndian.AppendUint64(body, uint64(t.Expiry().UnixMilli()))
	body = append(body, byte(len(typ)))
	body = append(body, typ...)
	body = append(body, tok...)
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(body)+s.aead.Overhead())
	out[0] = formatSealed
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return s.aead.Seal(out, out[1:], body, []byte(redisKey)), nil
}

// errOtherClient reports a value whose JWT names another client than the
// key's.
var errOtherClient = errors.New("the token was issued to another client")

// decode opens a value and checks what it says: written in the current
// purge generation, fetched before now, an expiry no later than the JWT's
// exp nor a year away, and a JWT that names a client names the key's
// (client; else errOtherClient).
func (s *Shared) decode(data []byte, redisKey string, client [8]byte, now time.Time) (t *Token, err error) {
	n := s.aead.NonceSize()
	switch {
	case len(data) == 0:
		return nil, errors.New("empty value")
	case data[0] != formatSealed:
		return nil, fmt.Errorf("value format %d, want %d", data[0], formatSealed)
	case len(data) < 1+n:
		return nil, errors.New("short value")
	}
	body, err := s.aead.Open(nil, data[1:1+n], data[1+n:], readOnly(redisKey))
	if err != nil {
		return nil, errors.New("cannot decrypt value: another key, another key name, or changed")
	}
	if len(body) < sealedHeader || len(body) < sealedHeader+int(body[sealedHeader-1]) {
		return nil, errors.New("short value")
	}
	if gen := int64(binary.BigEndian.Uint64(body)); gen < s.generation.Load() {
		return nil, fmt.Errorf("value from purge generation %d, before the latest purge (%d)", gen, s.generation.Load())
	}
	typeLen := int(body[sealedHeader-1])
	tok := body[sealedHeader+typeLen:]
	if len(tok) == 0 {
		return nil, errors.New("value holds no usable token")
	}
	t = &Token{
		bound: bytes.EqualFold(body[sealedHeader:sealedHeader+typeLen], []byte("DPoP")),
		// body is this call's own plaintext, never written again: the token
		// can stay where it is.
		AccessToken: secret.New(unsafe.String(&tok[0], len(tok))),
	}
	fetched := minTime(time.UnixMilli(int64(binary.BigEndian.Uint64(body[8:]))), now)
	expiry := time.UnixMilli(int64(binary.BigEndian.Uint64(body[16:])))
	if !fetched.Before(expiry) {
		return nil, errors.New("value holds no usable token")
	}
	// What the JWT says is checked again, without decoding all of it: the
	// exp clamps the stored expiry, and the client must be the key's.
	peek, _ := claims.PeekJWT(t.AccessToken.Reveal()) // zero for a token that is not a JWT
	t.fetched = fetched.UnixNano()
	t.setExpiryAt(expiry, peek.Expiry, now)
	if id, ok := peek.ClientBytes(); ok && clientHashBytes(id) != client {
		return nil, errOtherClient
	}
	return t, nil
}
