// Package builder turns a configuration into running objects: the HTTP
// transports, token endpoint clients, JWKS verifiers, Redis pools and
// tiers and token endpoints, gathered in a Runtime that pkg/authz decides
// with. It is the one place where a configuration reaches the packages
// below it, which take their own option types, and the owner of everything
// it creates: a reload reuses every part whose settings did not change,
// and closes a replaced part only once no work started with it can still
// hold it (the longest token request of its Runtime, plus a second).
package builder

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// Runtime is one configuration, built: every policy with its token
// endpoint, and how requests select them. It is immutable.
type Runtime struct {
	Policies         []Policy // sorted by name
	Routes           []Route
	DefaultPolicy    string // "" for none
	ContextExtension string // the context extension that names a policy
	PolicyFromPath   bool   // HTTP mode: /policy/<name> names the policy
	PolicyHeader     string // HTTP mode: the header that names a policy; "" for none
	// Tiers are the Redis tiers the policies use, for purges of everything.
	Tiers []*tokencache.Shared
}

// Policy is one policy, built.
type Policy struct {
	Name     string
	Endpoint *tokencache.Endpoint
	// Credentials are the policy's own client in gateway mode; zero in
	// application mode, where callers send theirs.
	Credentials idp.Credentials
	Program     *claims.Program // nil: any claims
	Forward     []ForwardHeader // headers filled from claims, sorted by name
	Username    *claims.Path    // the clientusername metadata's claim, if any
	TokenHeader string
	TokenPrefix string
	// DPoP, when set, signs a proof for every request the policy allows;
	// its tokens are bound to it.
	DPoP *dpop.Key
	// Subject, for a delegated grant (token_exchange, jwt_bearer), says
	// where the caller's token is; nil for client credentials.
	Subject *Subject
	Info    PolicyInfo // how the admin API lists it
}

// Subject is where a delegated grant finds the caller's token, and what
// it must look like.
type Subject struct {
	Grant  idp.GrantType
	Header string // lower case; "authorization" holds it after "Bearer "
	Type   string // the subject token type (a JWT for jwt_bearer)
	// ActorPolicy names the policy whose token is the actor token; empty
	// for none (or an actor token file, which the idp.Client reads).
	ActorPolicy string
}

// ForwardHeader is a request header filled from a claim.
type ForwardHeader struct {
	Name  string
	Claim claims.Path
}

// Route selects a policy for requests that meet every condition it sets.
type Route struct {
	Host       string // normalized (hostname.Normalize); empty for any
	HostSuffix bool   // Host matches its subdomains: "*.example.com"
	Port       string // compared when set
	PathPrefix string // of the normalized path
	Header     map[string]string
	Policy     string
}

// PolicyInfo describes a policy in service. It holds no secret.
type PolicyInfo struct {
	Name           string
	TokenURL       string // secret.RedactURL: without its query
	Gateway        bool
	AuthMethod     string
	ClientID       string // gateway mode only
	Audience       string
	Scopes         []string
	Store          string // "memory" or "redis/<mode>"
	VerifiesTokens bool
	HasClaims      bool
	ForwardHeaders []string
	DPoP           string // the DPoP key's thumbprint; empty without DPoP
}

// ErrUnknownPolicy reports a policy that is not in service.
var ErrUnknownPolicy = errors.New("no such policy")

// Deps are what every configuration is built with.
type Deps struct {
	// Serve puts a Runtime into service (authz.Server.Update); an error
	// refuses it.
	Serve   func(*Runtime) error
	Cache   *tokencache.Cache // the token cache, shared by every Runtime
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Tracer  trace.Tracer // traces token requests; none when nil
	// RetryBackoff is the first wait between token endpoint retries; the
	// idp package's default when zero.
	RetryBackoff time.Duration
	// Grace is how long a replaced part outlives the Runtime it served;
	// when zero, the longest token request of that Runtime plus a second.
	Grace time.Duration
}

// Builder builds Runtimes from configurations and owns their parts. It is
// safe for concurrent use.
type Builder struct {
	d Deps

	mu       sync.Mutex
	parts    map[string]*part // in service, by the settings they were built from
	retiring map[*time.Timer][]*part
	current  *Runtime // in service
	closed   bool
}

// part is something built: a transport, a client, a verifier, a Redis pool
// or tier, an endpoint.
type part struct {
	value  any
	order  int           // closing order: tiers before their pools
	close  func()        // nil when there is nothing to close
	budget time.Duration // clients: how long one token request may run
}

// Closing order of parts.
const (
	orderTier = iota
	orderPool
	orderOther
)

// New returns a Builder with nothing built.
func New(d Deps) *Builder {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = metrics.Nop()
	}
	return &Builder{d: d, parts: map[string]*part{}, retiring: map[*time.Timer][]*part{}}
}

// ErrClosed reports a configuration applied after Close.
var ErrClosed = errors.New("builder: closed")

// Apply builds cfg, reusing the parts in service whose settings are equal,
// and puts the Runtime into service. The parts it no longer uses are
// closed after the grace period. On an error nothing changes: what Apply
// built is closed, and the Runtime in service stays.
func (b *Builder) Apply(cfg *config.Config) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	g := &generation{b: b, used: map[string]*part{}}
	rt, err := g.build(cfg)
	if err == nil {
		err = b.d.Serve(rt)
	}
	if err != nil {
		for key, p := range g.used {
			if b.parts[key] != p && p.close != nil {
				p.close()
			}
		}
		return err
	}
	b.current = rt
	var retired []*part
	grace := b.d.Grace
	for key, p := range b.parts {
		grace = max(grace, p.budget+time.Second)
		if g.used[key] != p {
			retired = append(retired, p)
			delete(b.parts, key)
		}
	}
	for key, p := range g.used {
		b.parts[key] = p
	}
	if b.d.Grace > 0 {
		grace = b.d.Grace
	}
	if len(retired) > 0 {
		var t *time.Timer
		t = time.AfterFunc(grace, func() {
			b.mu.Lock()
			parts, ok := b.retiring[t]
			delete(b.retiring, t)
			b.mu.Unlock()
			if ok {
				closeParts(parts)
			}
		})
		b.retiring[t] = retired
	}
	return nil
}

// Close closes every part at once, in service or retiring: the servers
// that used them have stopped.
func (b *Builder) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	var all []*part
	for t, parts := range b.retiring {
		t.Stop()
		all = append(all, parts...)
	}
	for _, p := range b.parts {
		all = append(all, p)
	}
	b.retiring, b.parts = map[*time.Timer][]*part{}, map[string]*part{}
	closeParts(all)
	return nil
}

// Parts counts the parts in service and the ones waiting to be closed.
func (b *Builder) Parts() (inService, retiring int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, parts := range b.retiring {
		retiring += len(parts)
	}
	return len(b.parts), retiring
}

func closeParts(parts []*part) {
	sort.SliceStable(parts, func(i, j int) bool { return parts[i].order < parts[j].order })
	for _, p := range parts {
		if p.close != nil {
			p.close()
		}
	}
}

// inService returns the Runtime in service; an empty one before Apply.
func (b *Builder) inService() *Runtime {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.current == nil {
		return &Runtime{}
	}
	return b.current
}

// Policies describes the policies in service, sorted by name.
func (b *Builder) Policies() []PolicyInfo {
	rt := b.inService()
	out := make([]PolicyInfo, 0, len(rt.Policies))
	for _, p := range rt.Policies {
		out = append(out, p.Info)
	}
	return out
}

// Purge drops the cached tokens of a policy (all when empty), of a client
// (all when empty), or of a client under a policy: from memory, from Redis,
// and through Redis from every other replica's memory.
func (b *Builder) Purge(ctx context.Context, policy, clientID string) (tokencache.Purged, error) {
	rt := b.inService()
	r := tokencache.PurgeRequest{ClientID: clientID, Tiers: rt.Tiers}
	if policy != "" {
		i := slices.IndexFunc(rt.Policies, func(p Policy) bool { return p.Name == policy })
		if i < 0 {
			return tokencache.Purged{}, fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
		}
		r.Endpoints = []*tokencache.Endpoint{rt.Policies[i].Endpoint}
	}
	return b.d.Cache.Purge(ctx, r)
}

// generation is one Apply at work: the parts its Runtime uses.
type generation struct {
	b     *Builder
	used  map[string]*part // by key: reused from b.parts, or built now
	tiers []*tokencache.Shared
}

// part returns the part under key: the one in service, one built earlier
// in this Apply, or a new one.
func (g *generation) part(key string, build func() (*part, error)) (*part, error) {
	if p := g.used[key]; p != nil {
		return p, nil
	}
	p := g.b.parts[key]
	if p == nil {
		var err error
		if p, err = build(); err != nil {
			return nil, err
		}
	}
	g.used[key] = p
	return p, nil
}

func (g *generation) build(cfg *config.Config) (*Runtime, error) {
	o := &Runtime{
		DefaultPolicy:    cfg.DefaultPolicy,
		ContextExtension: cfg.PolicySelector.ContextExtension,
		PolicyFromPath:   *cfg.Server.HTTP.PolicyFromPath,
		PolicyHeader:     cfg.Server.HTTP.PolicyHeader,
	}
	names := make([]string, 0, len(cfg.Policies))
	for name := range cfg.Policies {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		po, err := g.policy(name, cfg.Policies[name])
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		o.Policies = append(o.Policies, po)
	}
	for _, r := range cfg.Routes {
		c := r.Compiled
		o.Routes = append(o.Routes, Route{Host: c.Host, HostSuffix: c.HostSuffix, Port: c.Port,
			PathPrefix: r.PathPrefix, Header: r.Header, Policy: r.Policy})
	}
	o.Tiers = g.tiers
	return o, nil
}

// policy builds one policy's options, and its endpoint's parts.
func (g *generation) policy(name string, cp *config.Policy) (Policy, error) {
	c := &cp.Compiled
	key, err := g.dpopKey(name, c)
	if err != nil {
		return Policy{}, err
	}
	e, err := g.endpoint(name, cp, key)
	if err != nil {
		return Policy{}, err
	}
	po := Policy{
		Name: name, Endpoint: e, Program: c.Program, Username: c.Username,
		TokenHeader: cp.TokenHeader, TokenPrefix: c.TokenPrefix,
		Info: PolicyInfo{
			Name: name, TokenURL: secret.RedactURL(c.TokenURL.String()), Gateway: c.GatewayMode(), AuthMethod: string(cp.AuthMethod),
			Audience: cp.Audience, Scopes: cp.Scopes, Store: "memory",
			VerifiesTokens: cp.JWKSURL != "" || cp.Issuer != "", HasClaims: c.Program != nil,
		},
	}
	if c.GatewayMode() {
		po.Credentials = idp.Credentials{ID: c.ClientID, Secret: c.ClientSecret}
		po.Info.ClientID = c.ClientID
	}
	if key != nil {
		po.DPoP, po.Info.DPoP = key, key.Thumbprint()
	}
	if c.Delegated {
		po.Subject = &Subject{Grant: c.Grant.Type, Header: c.SubjectHeader, Type: c.Grant.SubjectTokenType, ActorPolicy: c.ActorPolicy}
		if c.Grant.Type == idp.JWTBearer {
			po.Subject.Type = idp.TokenTypeJWT
		}
	}
	for _, f := range c.Forward {
		po.Forward = append(po.Forward, ForwardHeader{Name: f.Name, Claim: f.Claim})
		po.Info.ForwardHeaders = append(po.Info.ForwardHeaders, f.Name)
	}
	if s := c.Store; s != nil && s.Redis != nil {
		po.Info.Store = "redis/" + string(s.Redis.Mode)
	}
	return po, nil
}

// dpopKey returns the policy's DPoP key: the configured one, or one made
// for it once and kept across reloads (its tokens are bound to it).
func (g *generation) dpopKey(name string, c *config.Compiled) (*dpop.Key, error) {
	if !c.DPoPGenerate {
		return c.DPoPKey, nil
	}
	p, err := g.part("dpop\x00"+name, func() (*part, error) {
		k, err := dpop.GenerateKey()
		if err != nil {
			return nil, err
		}
		return &part{value: k, order: orderOther}, nil
	})
	if err != nil {
		return nil, err
	}
	return p.value.(*dpop.Key), nil
}

// endpoint returns the policy's token endpoint, with its client, its
// transport, its verifier and its Redis tier.
func (g *generation) endpoint(name string, cp *config.Policy, key *dpop.Key) (*tokencache.Endpoint, error) {
	c := &cp.Compiled
	transportKey := "transport\x00" + c.TrustID + "\x00" + c.CredentialID
	tp, err := g.part(transportKey, func() (*part, error) {
		t := idp.NewTransport(c.TLS)
		return &part{value: t, order: orderOther, close: t.CloseIdleConnections}, nil
	})
	if err != nil {
		return nil, err
	}
	transport := tp.value.(*http.Transport)

	d := g.b.d
	log := d.Logger.With(zap.String("policy", name))
	thumbprint := ""
	if key != nil {
		thumbprint = key.Thumbprint()
	}
	clientKey := "client\x00" + name + "\x00" + fingerprint(cp.URL, string(cp.AuthMethod), cp.Audience, strings.Join(cp.Scopes, " "),
		params(cp.ExtraParams), c.Timeout.String(), fmt.Sprint(c.MaxRetries), c.CredentialID, c.TrustID, assertion(c.Assertion),
		c.AssertionFile, thumbprint, string(c.Grant.Type), c.Grant.SubjectTokenType, c.Grant.RequestedTokenType,
		strings.Join(c.Grant.Resources, " "), c.ActorFile, c.ActorPolicy)
	cl, err := g.part(clientKey, func() (*part, error) {
		client, err := idp.NewClient(idp.Options{
			URL: c.TokenURL.String(), AuthMethod: cp.AuthMethod, Audience: cp.Audience, Scopes: cp.Scopes,
			ExtraParams: cp.ExtraParams, HTTPClient: &http.Client{Transport: transport},
			Timeout: c.Timeout, MaxRetries: c.MaxRetries, Backoff: d.RetryBackoff, Logger: log,
			Assertion: c.Assertion, AssertionFile: c.AssertionFile, DPoP: key,
			CredentialID: c.CredentialID, TrustID: c.TrustID,
			Grant: c.Grant, ActorTokenFile: c.ActorFile, ActorID: c.ActorPolicy,
			Name: name, Metrics: d.Metrics, Tracer: d.Tracer,
		})
		if err != nil {
			return nil, err
		}
		return &part{value: client, order: orderOther, budget: client.Budget()}, nil
	})
	if err != nil {
		return nil, err
	}

	verifierKey := ""
	var verifier tokencache.Verifier
	if cp.JWKSURL != "" || cp.Issuer != "" {
		verifierKey = "verifier\x00" + fingerprint(cp.JWKSURL, cp.Issuer, cp.ExpectedAudience, c.TrustID, c.CredentialID)
		vp, err := g.part(verifierKey, func() (*part, error) {
			v, err := idp.NewVerifier(idp.VerifierOptions{
				JWKSURL: cp.JWKSURL, Issuer: cp.Issuer, Audience: cp.ExpectedAudience,
				HTTPClient: &http.Client{Transport: transport}, Logger: log,
			})
			if err != nil {
				return nil, err
			}
			return &part{value: v, order: orderOther, close: v.Close}, nil
		})
		if err != nil {
			return nil, err
		}
		verifier = vp.value.(*idp.Verifier)
	}

	subjectKey := ""
	var subjectVerifier tokencache.Verifier
	if sv := cp.SubjectValidation; c.Delegated && sv != nil {
		subjectKey = "subjectverifier\x00" + fingerprint(sv.JWKSURL, sv.Issuer, sv.Audience)
		vp, err := g.part(subjectKey, func() (*part, error) {
			// The caller's issuer is not the token endpoint: Go's own
			// trust, not the endpoint's CA or client certificate.
			v, err := idp.NewVerifier(idp.VerifierOptions{JWKSURL: sv.JWKSURL, Issuer: sv.Issuer, Audience: sv.Audience, Logger: log})
			if err != nil {
				return nil, err
			}
			return &part{value: v, order: orderOther, close: v.Close}, nil
		})
		if err != nil {
			return nil, err
		}
		subjectVerifier = vp.value.(*idp.Verifier)
	}

	sharedKey := ""
	var shared *tokencache.Shared
	if s := c.Store; s != nil && s.Redis != nil {
		sharedKey, shared, err = g.shared(s)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}

	endpointKey := "endpoint\x00" + fingerprint(clientKey, verifierKey, subjectKey, sharedKey, cp.DefaultTTL.String(), cp.NegativeTTL.String(),
		fmt.Sprint(c.MaxRejections), c.RejectionWindow.String(), fmt.Sprint(c.MaxEndpointRejections),
		fmt.Sprint(c.MaxConcurrentRequests), fmt.Sprint(c.MaxQueuedRequests))
	ep, err := g.part(endpointKey, func() (*part, error) {
		return &part{value: tokencache.NewEndpoint(tokencache.EndpointOptions{
			Client:      cl.value.(*idp.Client),
			DefaultTTL:  time.Duration(cp.DefaultTTL),
			NegativeTTL: time.Duration(cp.NegativeTTL),
			Shared:      shared,
			Verifier:    verifier,
			// The failure budget protects callers' client ids: a
			// gateway-mode policy has none (config leaves it zero).
			MaxRejections:         c.MaxRejections,
			RejectionWindow:       c.RejectionWindow,
			MaxEndpointRejections: c.MaxEndpointRejections,
			MaxConcurrent:         c.MaxConcurrentRequests,
			MaxQueued:             c.MaxQueuedRequests,
			SubjectVerifier:       subjectVerifier,
		}), order: orderOther}, nil
	})
	if err != nil {
		return nil, err
	}
	return ep.value.(*tokencache.Endpoint), nil
}

// shared returns a store's Redis tier, and its pool, shared by every store
// configured alike.
func (g *generation) shared(s *config.StoreCompiled) (string, *tokencache.Shared, error) {
	d := g.b.d
	poolKey := "redis\x00" + s.Redis.Identity
	pp, err := g.part(poolKey, func() (*part, error) {
		r, err := tokencache.NewRedis(*s.Redis, d.Logger, d.Metrics)
		if err != nil {
			return nil, err
		}
		return &part{value: r, order: orderPool, close: func() { _ = r.Close() }}, nil
	})
	if err != nil {
		return "", nil, err
	}
	key := []byte(s.EncryptionKey.Reveal())
	tierKey := "tier\x00" + fingerprint(poolKey, s.KeyPrefix, string(key))
	tp, err := g.part(tierKey, func() (*part, error) {
		sh, err := tokencache.NewShared(tokencache.SharedOptions{
			Redis: pp.value.(*tokencache.Redis), Prefix: s.KeyPrefix, EncryptionKey: key,
			OnPurge: func(p tokencache.PurgeSignal) { d.Cache.Forget(p) }, Logger: d.Logger,
		})
		if err != nil {
			return nil, err
		}
		return &part{value: sh, order: orderTier, close: func() { _ = sh.Close() }}, nil
	})
	if err != nil {
		return "", nil, err
	}
	sh := tp.value.(*tokencache.Shared)
	if !slices.Contains(g.tiers, sh) {
		g.tiers = append(g.tiers, sh)
	}
	return tierKey, sh, nil
}

// fingerprint names settings without holding them: a key may be built from
// secrets (an encryption key), so it is a hash.
func fingerprint(fields ...string) string {
	h := sha256.New()
	for _, f := range fields {
		fmt.Fprintf(h, "%d:%s,", len(f), f)
	}
	return string(h.Sum(nil))
}

func params(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d:%s=%d:%s,", len(k), k, len(m[k]), m[k])
	}
	return b.String()
}

func assertion(a *idp.Assertion) string {
	if a == nil {
		return ""
	}
	return a.KeyID + "\x00" + a.Algorithm + "\x00" + a.Audience
}
