package tokencache

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/config"
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
	now      func() time.Time
	down     atomic.Bool
	retryAt  atomic.Int64
	failures atomic.Int64
}

// ErrRedisDown reports a call skipped because Redis is marked down.
var ErrRedisDown = errors.New("redis is marked down")

func newRedis(o *config.RedisCompiled, log *zap.Logger, m *metrics.Metrics, now func() time.Time) (*Redis, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 50 * time.Millisecond
	}
	var client redis.UniversalClient
	switch o.Mode {
	case config.RedisSingle:
		if len(o.Endpoints) != 1 {
			return nil, fmt.Errorf("redis: single mode takes one endpoint, got %d", len(o.Endpoints))
		}
		client = redis.NewClient(&redis.Options{
			Addr: o.Endpoints[0], Username: o.Username, Password: o.Password.Reveal(), DB: o.Database, TLSConfig: o.TLS,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
			MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true,
		})
	case config.RedisCluster:
		client = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: o.Endpoints, Username: o.Username, Password: o.Password.Reveal(), TLSConfig: o.TLS,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
			MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true,
		})
	case config.RedisSentinel:
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
	label := o.Mode + ":" + strings.Join(o.Endpoints, ",")
	r := &Redis{
		client: client, timeout: timeout, now: now,
		log: log.With(zap.String("redis_mode", o.Mode), zap.Strings("redis_endpoints", o.Endpoints)),
		up:  m.RedisUp.WithLabelValues(label), errors: m.RedisErrors.WithLabelValues(label),
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
	if r.down.Load() {
		at := r.retryAt.Load()
		if r.now().UnixNano() < at || !r.retryAt.CompareAndSwap(at, r.now().Add(redisRetryInterval).UnixNano()) {
			return ErrRedisDown
		}
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := fn(cctx)
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

// Shared is a Redis tier as a policy sees it: a key prefix and, optionally,
// an encryption key.
type Shared struct {
	redis  *Redis
	prefix string
	aead   cipher.AEAD // nil: values are stored in the clear
	names  *sync.Pool  // of HMAC-SHA-256 hashes that tag key names; nil: plain hashes
}

// namesInfo derives the key of the key names from the encryption key (HKDF).
const namesInfo = "extauthz redis key names v1"

func newShared(r *Redis, prefix string, encryptionKey []byte) (*Shared, error) {
	s := &Shared{redis: r, prefix: prefix}
	if len(encryptionKey) > 0 {
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
		s.names = &sync.Pool{New: func() any { return hmac.New(sha256.New, namesKey) }}
	}
	return s, nil
}

// Parts of a key name, for tag.
const (
	tagEndpoint = 'e'
	tagClient   = 'c'
	tagKey      = 'k'
)

// tag writes one part of a key name: its hash in hex without an
// encryption key; with one, an HMAC of it, so that Redis holds nothing a
// guessed client id or secret could be checked against offline.
func (s *Shared) tag(kind byte, b []byte) string {
	if s.names == nil {
		return hex.EncodeToString(b)
	}
	m := s.names.Get().(hash.Hash)
	m.Reset()
	k := [1]byte{kind}
	m.Write(k[:])
	m.Write(b)
	var sum [sha256.Size]byte
	tag := hex.EncodeToString(m.Sum(sum[:0])[:len(b)])
	s.names.Put(m)
	return tag
}

// Redis returns the connection the tier uses.
func (s *Shared) Redis() *Redis { return s.redis }

// valueKey is <prefix><endpoint>:<client>:<key>, each a tag in hex: the
// short ones let a purge find a policy's or a client's tokens with SCAN.
func (s *Shared) valueKey(k Key) string {
	return s.prefix + s.tag(tagEndpoint, k.endpoint[:]) + ":" + s.tag(tagClient, k.client[:]) + ":" + s.tag(tagKey, k.id[:])
}

func (s *Shared) lockKey(k Key) string { return s.prefix + "lock:" + s.tag(tagKey, k.id[:]) }

// Get returns the token stored under k, or nil when there is none that has
// not expired. A value that cannot be read (another format, another
// encryption key) is a miss; it is overwritten by the next Set.
func (s *Shared) Get(ctx context.Context, k Key) (*Token, error) {
	var data []byte
	rk := s.valueKey(k)
	err := s.redis.call(ctx, func(ctx context.Context) error {
		var err error
		data, err = s.redis.client.Get(ctx, rk).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := s.decode(data, rk)
	if err != nil {
		s.redis.log.Debug("unreadable value in redis, treated as a miss", zap.String("key", rk), zap.Error(err))
		return nil, nil
	}
	if !s.redis.now().Before(t.Expiry) {
		return nil, nil
	}
	return t, nil
}

// Set stores t under k until the token expires.
func (s *Shared) Set(ctx context.Context, k Key, t *Token) error {
	ttl := t.Expiry.Sub(s.redis.now())
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

// Value format. A value starts with its format byte, so that a reader
// meeting a format it does not know treats it as a miss.
const (
	formatPlain     byte = 1
	formatEncrypted byte = 2
)

// encode lays a token out as: fetched and expiry in Unix milliseconds (8
// bytes each), the type's length (1 byte), the type, the token. With an
// encryption key the layout is sealed with AES-256-GCM, the Redis key as
// associated data, so that a value cannot be moved to another key.
func (s *Shared) encode(t *Token, redisKey string) ([]byte, error) {
	typ, tok := t.Type, t.AccessToken.Reveal()
	if len(typ) > 255 {
		typ = typ[:255]
	}
	body := make([]byte, 0, 17+len(typ)+len(tok))
	body = binary.BigEndian.AppendUint64(body, uint64(t.Fetched.UnixMilli()))
	body = binary.BigEndian.AppendUint64(body, uint64(t.Expiry.UnixMilli()))
	body = append(body, byte(len(typ)))
	body = append(body, typ...)
	body = append(body, tok...)
	if s.aead == nil {
		return append([]byte{formatPlain}, body...), nil
	}
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(body)+s.aead.Overhead())
	out[0] = formatEncrypted
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return s.aead.Seal(out, out[1:], body, []byte(redisKey)), nil
}

func (s *Shared) decode(data []byte, redisKey string) (*Token, error) {
	if len(data) == 0 {
		return nil, errors.New("empty value")
	}
	body := data[1:]
	switch {
	case data[0] == formatPlain && s.aead == nil:
	case data[0] == formatEncrypted && s.aead != nil:
		n := s.aead.NonceSize()
		if len(body) < n {
			return nil, errors.New("short value")
		}
		var err error
		if body, err = s.aead.Open(nil, body[:n], body[n:], []byte(redisKey)); err != nil {
			return nil, errors.New("cannot decrypt value")
		}
	default:
		return nil, fmt.Errorf("value format %d, want %d", data[0], s.format())
	}
	if len(body) < 17 || len(body) < 17+int(body[16]) {
		return nil, errors.New("short value")
	}
	typeLen := int(body[16])
	t := &Token{
		Fetched:     time.UnixMilli(int64(binary.BigEndian.Uint64(body))),
		Expiry:      time.UnixMilli(int64(binary.BigEndian.Uint64(body[8:]))),
		Type:        string(body[17 : 17+typeLen]),
		AccessToken: secret.New(string(body[17+typeLen:])),
	}
	if t.AccessToken.Empty() || !t.Fetched.Before(t.Expiry) {
		return nil, errors.New("value holds no usable token")
	}
	t.decodeClaims()
	return t, nil
}

func (s *Shared) format() byte {
	if s.aead != nil {
		return formatEncrypted
	}
	return formatPlain
}
