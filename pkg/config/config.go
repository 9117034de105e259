// Package config loads extauthz's YAML configuration: defaults, then a strict
// decode that names the line of every unknown field, then validation that
// collects every problem at once and compiles what requests need (claims
// programs, claim paths, TLS configurations, resolved secrets), so that a bad
// configuration stops start-up and never fails a request.
package config

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/pkg/callers"
	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// Defaults, all in one place.
const (
	DefaultGRPCAddress      = ":9001"
	DefaultHTTPAddress      = ":8001"
	DefaultAdminAddress     = ":9090"
	DefaultLogLevel         = "info"
	DefaultLogFormat        = "json"
	DefaultSecretsDir       = "/var/run/secrets/extauthz"
	DefaultContextExtension = "policy"
	DefaultMaxEntries       = 100_000
	DefaultKeyPrefix        = "extauthz:"
	DefaultRedisTimeout     = tokencache.DefaultRedisTimeout
	DefaultAuthMethod       = idp.ClientSecretBasic
	DefaultTTL              = 300 * time.Second
	DefaultNegativeTTL      = tokencache.DefaultNegativeTTL
	DefaultTokenHeader      = "Authorization"
	DefaultTokenPrefix      = "Bearer "
	DPoPTokenPrefix         = "DPoP "
	DefaultTimeoutSeconds   = int(idp.DefaultTimeout / time.Second)
	DefaultMaxRetries       = 3

	// DefaultMaxRequestBytes bounds a CheckRequest: Envoy's largest default
	// header block (60 KiB) with room for a forwarded body.
	DefaultMaxRequestBytes       = 1 << 20
	DefaultMaxConcurrentStreams  = 1024
	DefaultMaxConnectionAge      = 5 * time.Minute
	DefaultMaxConnectionAgeGrace = 30 * time.Second
	DefaultShutdownTimeout       = 15 * time.Second
	DefaultMaxHeaderBytes        = 64 << 10
	// DefaultMaxGRPCHeaderBytes bounds a gRPC stream's header list, as
	// HTTP/2 counts it (each field's name and value, plus 32 bytes).
	DefaultMaxGRPCHeaderBytes = 64 << 10
	// OpenHeaderLists is how many full-size header lists (maxHeaderBytes
	// each) the gRPC streams open at once may hold, all connections
	// together: 16 MiB at the default. Envoy's Checks take a few hundred
	// bytes each.
	OpenHeaderLists = 256
	// A client id whose credentials the token endpoint rejected
	// DefaultMaxRejections times within DefaultRejectionWindow is not sent
	// there with unknown secrets until the window passes.
	DefaultMaxRejections   = 5
	DefaultRejectionWindow = time.Minute
	// DefaultMaxConcurrentRequests bounds the token requests under way to
	// one token endpoint.
	DefaultMaxConcurrentRequests = tokencache.DefaultMaxConcurrent
	// DefaultMaxQueuedRequests bounds the token requests waiting for a
	// place at one token endpoint, per class (trusted, other).
	DefaultMaxQueuedRequests = tokencache.DefaultMaxQueued
	// DefaultMaxEndpointRejections bounds the rejections of unknown
	// credentials, of any client ids, one replica causes at one token
	// endpoint per window.
	DefaultMaxEndpointRejections = tokencache.DefaultMaxEndpointRejections
)

// Config is the whole configuration file.
type Config struct {
	Server         Server             `yaml:"server"`
	Log            Log                `yaml:"log"`
	Tracing        Tracing            `yaml:"tracing"`
	Secrets        Secrets            `yaml:"secrets"`
	PolicySelector PolicySelector     `yaml:"policySelector"`
	Routes         []Route            `yaml:"routes"`
	DefaultPolicy  string             `yaml:"defaultPolicy"`
	Store          Store              `yaml:"store"`
	Policies       map[string]*Policy `yaml:"policies"`
	// PolicyFiles are globs of Traefik Middleware manifests whose
	// oAuthClientCredentials plugin becomes a policy named after the
	// Middleware. Relative globs start at the configuration's directory.
	PolicyFiles []string `yaml:"policyFiles"`

	// Path is the file the configuration was loaded from.
	Path string `yaml:"-"`
	// Warnings are things Load accepted but a reader should know, such as a
	// setting that has no effect.
	Warnings []string `yaml:"-"`
	// Files lists every file the configuration read: itself, the policy
	// files, the secret files and the assertion files. The Watcher reloads
	// when one of them changes, so a file Load reads and leaves out of it is
	// not reloaded.
	Files []string `yaml:"-"`
	// Fingerprint changes when the file or any secret it read changes.
	Fingerprint string `yaml:"-"`
}

// Server holds the listening addresses, with the limits and settings of
// each server; an empty HTTPAddress disables HTTP mode.
type Server struct {
	GRPCAddress  string     `yaml:"grpcAddress"`
	HTTPAddress  *string    `yaml:"httpAddress"`
	AdminAddress string     `yaml:"adminAddress"`
	GRPC         GRPCServer `yaml:"grpc"`
	HTTP         HTTPServer `yaml:"http"`
	Admin        Admin      `yaml:"admin"`
	// TLS serves the check listeners (gRPC and HTTP mode) over TLS and,
	// with a client CA, answers only the proxies it names.
	TLS ServerTLS `yaml:"tls"`
	// ShutdownTimeout bounds how long Checks in flight may take to finish
	// after SIGTERM, for every listener together.
	ShutdownTimeout Duration `yaml:"shutdownTimeout"`

	// Compiled is filled in by Load.
	Compiled ServerCompiled `yaml:"-"`
}

// GRPCServer bounds what one gRPC client may ask of the server.
// MaxConnectionAge makes clients reconnect now and then (after
// MaxConnectionAgeGrace for the calls under way), so that connections
// spread over replicas that started after them.
type GRPCServer struct {
	MaxRequestBytes int `yaml:"maxRequestBytes"`
	// MaxHeaderBytes bounds a stream's HTTP/2 header list.
	MaxHeaderBytes        int      `yaml:"maxHeaderBytes"`
	MaxConcurrentStreams  int      `yaml:"maxConcurrentStreams"`
	MaxConnectionAge      Duration `yaml:"maxConnectionAge"`
	MaxConnectionAgeGrace Duration `yaml:"maxConnectionAgeGrace"`
}

// HTTPServer configures HTTP mode. PolicyFromPath lets a check's path
// /policy/<name> select a policy: right behind proxies that write that path
// (nginx, Caddy, Traefik), wrong behind those that pass the caller's path
// (Envoy's http_service without path_prefix). PolicyHeader, when set, names
// the request header that selects a policy (after the path, before routes):
// the proxy in front must set it, overwriting what a caller sent.
type HTTPServer struct {
	PolicyFromPath *bool  `yaml:"policyFromPath"`
	PolicyHeader   string `yaml:"policyHeader"`
	MaxHeaderBytes int    `yaml:"maxHeaderBytes"`
}

// Admin says who may call the admin gRPC API and /debug/pprof/ on the admin
// address: a caller with the bearer Token, or with a client certificate from
// TLS.ClientCA. With neither, they are not served over TCP at all. Socket,
// when set, serves them on a Unix socket created 0600, to whoever can open
// it (kubectl exec).
type Admin struct {
	Token  string   `yaml:"token"`
	TLS    AdminTLS `yaml:"tls"`
	Socket string   `yaml:"socket"`
}

// ServerTLS puts the check listeners behind TLS. Cert and Key are the
// server's certificate; with ClientCA, a caller must present a certificate
// that chains to it, and with AllowedCallers its identity — a URI SAN such
// as a SPIFFE ID, or dns:<name> for a DNS SAN — must be one of them. PEM
// inline or secret references, reloaded like every secret.
type ServerTLS struct {
	Cert           string   `yaml:"cert"`
	Key            string   `yaml:"key"`
	ClientCA       string   `yaml:"clientCA"`
	AllowedCallers []string `yaml:"allowedCallers"`
}

// AdminTLS serves the admin address over TLS; ClientCA, when set, lets
// clients with a certificate it signed call the admin gRPC API.
type AdminTLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"clientCA"`
}

// ServerCompiled is what Load derives from Server.
type ServerCompiled struct {
	AdminToken secret.Value // empty for none
	// AdminTLS is the admin listener's TLS configuration, nil for plain
	// HTTP; it verifies client certificates given, when ClientCA is set.
	AdminTLS      *tls.Config
	AdminClientCA bool
	// Callers is who may call the check listeners: nil for plaintext
	// listeners that answer whoever reaches them.
	Callers *callers.Policy
}

// CallersAuthenticated reports whether the check listeners know who their
// callers are (a client certificate from server.tls.clientCA).
func (s *ServerCompiled) CallersAuthenticated() bool {
	return s.Callers != nil && s.Callers.RequireCertificate
}

// Log sets the level (debug, info, warn, error) and format (json, console).
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Tracing exports OpenTelemetry spans over OTLP/gRPC; off while Endpoint is empty.
type Tracing struct {
	Endpoint    string   `yaml:"endpoint"`    // host:port of an OTLP/gRPC collector
	Insecure    bool     `yaml:"insecure"`    // plaintext to the collector
	SampleRatio *float64 `yaml:"sampleRatio"` // of traces this process starts; callers' sampling decisions are kept
	ServiceName string   `yaml:"serviceName"`
}

// Secrets says where Kubernetes Secrets are mounted. A relative Dir is taken
// from the configuration file's directory.
type Secrets struct {
	Dir string `yaml:"dir"`
}

// PolicySelector names the context extension that selects a policy.
type PolicySelector struct {
	ContextExtension string `yaml:"contextExtension"`
}

// Route selects a policy for requests that match all of its conditions:
// Host exactly or, as "*.example.com", by suffix; PathPrefix; and every Header
// (name: value) exactly. Routes are tried in order.
type Route struct {
	Host       string            `yaml:"host"`
	PathPrefix string            `yaml:"pathPrefix"`
	Header     map[string]string `yaml:"header"`
	Policy     string            `yaml:"policy"`

	// Compiled is filled in by Load.
	Compiled RouteCompiled `yaml:"-"`
}

// RouteCompiled is a route's host, normalized as requests' hosts are
// (hostname.Normalize).
type RouteCompiled struct {
	Host       string // without "*."; empty for any host
	HostSuffix bool   // "*.example.com": any subdomain
	Port       string // compared only when the route names one
}

// Store configures the token cache: the in-process tier always, and a
// Redis tier shared between replicas when Redis is set. The top-level store
// is every policy's unless the policy has its own.
type Store struct {
	KeyPrefix     *string `yaml:"keyPrefix"`
	EncryptionKey string  `yaml:"encryptionKey"`
	MaxEntries    int     `yaml:"maxEntries"` // in-process tier; top level only
	Redis         *Redis  `yaml:"redis"`

	// Compiled is filled in by Load.
	Compiled StoreCompiled `yaml:"-"`
}

// Redis says how to reach Redis. The mode is explicit: one endpoint for a
// single instance, Cluster for a Redis Cluster (any of its nodes as
// endpoints), Sentinel for a master set found through sentinels.
type Redis struct {
	Endpoints     []string  `yaml:"endpoints"`
	Username      string    `yaml:"username"`
	Password      string    `yaml:"password"`
	Database      int       `yaml:"database"`
	Cluster       bool      `yaml:"cluster"`
	TLS           RedisTLS  `yaml:"tls"`
	Sentinel      *Sentinel `yaml:"sentinel"`
	TimeoutMillis int       `yaml:"timeoutMillis"`
}

// RedisTLS holds PEM material, inline or as secret references.
type RedisTLS struct {
	CABundle           string `yaml:"caBundle"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// Sentinel names the master set and the sentinels' own credentials.
type Sentinel struct {
	MasterSet string `yaml:"masterSet"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// StoreCompiled is what Load derives from a Store.
type StoreCompiled struct {
	KeyPrefix     string
	EncryptionKey secret.Value // 32 bytes; empty without Redis
	Redis         *tokencache.RedisOptions
}

// Policy is one OAuth 2.0 client-credentials configuration. Its field names
// are those of Traefik Hub's oAuthClientCredentials middleware.
type Policy struct {
	URL             string            `yaml:"url"`
	ClientID        string            `yaml:"clientID"`
	ClientSecret    string            `yaml:"clientSecret"`
	Audience        string            `yaml:"audience"`
	Scopes          []string          `yaml:"scopes"`
	ExtraParams     map[string]string `yaml:"extraParams"`
	AuthMethod      idp.AuthMethod    `yaml:"authMethod"`
	ClientAssertion *ClientAssertion  `yaml:"clientAssertion"`
	ForwardHeaders  map[string]string `yaml:"forwardHeaders"`
	Claims          string            `yaml:"claims"`
	UsernameClaim   string            `yaml:"usernameClaim"`
	// JWKSURL, or Issuer with OpenID Connect discovery, turns on
	// verification of the access token's signature, exp and nbf; Issuer and
	// ExpectedAudience are then required of its iss and aud.
	JWKSURL          string       `yaml:"jwksURL"`
	Issuer           string       `yaml:"issuer"`
	ExpectedAudience string       `yaml:"expectedAudience"`
	DefaultTTL       Duration     `yaml:"defaultTTL"`
	NegativeTTL      Duration     `yaml:"negativeTTL"`
	TokenHeader      string       `yaml:"tokenHeader"`
	TokenPrefix      *string      `yaml:"tokenPrefix"`
	ClientConfig     ClientConfig `yaml:"clientConfig"`
	Store            *Store       `yaml:"store"`
	// FailureBudget limits, in application mode, how often the token
	// endpoint hears wrong secrets for one client id.
	FailureBudget FailureBudget `yaml:"failureBudget"`
	// DPoP, when set, makes the policy's tokens sender-constrained.
	DPoP *DPoP `yaml:"dpop"`
	// Grant is how the policy asks for tokens: client_credentials (the
	// default), token_exchange (RFC 8693) or jwt_bearer (RFC 7523 §2.1),
	// the last two with the caller's token.
	Grant string `yaml:"grant"`
	// SubjectTokenHeader is where the caller's token is: Authorization
	// (Bearer) by default, or a header that holds the token alone.
	SubjectTokenHeader string `yaml:"subjectTokenHeader"`
	// SubjectTokenType is token_exchange's subject_token_type: access_token
	// (default), jwt or id_token, or their URNs.
	SubjectTokenType string `yaml:"subjectTokenType"`
	// RequestedTokenType is token_exchange's requested_token_type, if any.
	RequestedTokenType string `yaml:"requestedTokenType"`
	// Resource is sent as one resource parameter per entry (RFC 8707).
	Resource []string `yaml:"resource"`
	// ActorToken is token_exchange's actor_token, if any.
	ActorToken *ActorToken `yaml:"actorToken"`
	// SubjectValidation checks the caller's token before any exchange.
	SubjectValidation *SubjectValidation `yaml:"subjectValidation"`

	// Compiled is filled in by Load.
	Compiled Compiled `yaml:"-"`
}

// ClientAssertion configures private_key_jwt (RFC 7523).
type ClientAssertion struct {
	Key       string `yaml:"key"`       // private_key_jwt: PEM private key, inline or a secret reference
	KeyID     string `yaml:"keyID"`     // private_key_jwt: the assertion's kid
	Algorithm string `yaml:"algorithm"` // private_key_jwt: RS256 or ES256; from the key when empty
	Audience  string `yaml:"audience"`  // private_key_jwt: the token URL when empty
	// File holds the federated_jwt assertion, a JWT another issuer signed
	// (a Kubernetes projected service account token), read again when it
	// changes.
	File string `yaml:"file"`
}

// ActorToken is the actor_token of a token exchange (RFC 8693 §2.1).
type ActorToken struct {
	// File holds the token (a Kubernetes projected service account
	// token), re-read when it changes.
	File string `yaml:"file"`
	// Policy names a client-credentials policy with its own credentials
	// whose token is the actor token.
	Policy string `yaml:"policy"`
}

// SubjectValidation verifies the caller's token locally before it is
// exchanged: its signature (keys from JWKSURL, or from Issuer's discovery),
// times, iss and aud.
type SubjectValidation struct {
	Issuer   string `yaml:"issuer"`
	JWKSURL  string `yaml:"jwksURL"`
	Audience string `yaml:"audience"`
}

// DPoP binds a policy's tokens to a key (RFC 9449).
type DPoP struct {
	Key       string `yaml:"key"`       // PEM private key, inline or a secret reference; generated at start when empty (without Redis)
	Algorithm string `yaml:"algorithm"` // ES256 (P-256), EdDSA (Ed25519) or RS256
}

// ClientConfig says how to reach the token endpoint.
type ClientConfig struct {
	TLS            TLS  `yaml:"tls"`
	TimeoutSeconds *int `yaml:"timeoutSeconds"`
	MaxRetries     *int `yaml:"maxRetries"`
	// MaxConcurrentRequests bounds the token requests under way to the
	// endpoint; policies that share the endpoint share the bound.
	MaxConcurrentRequests *int `yaml:"maxConcurrentRequests"`
	// MaxQueuedRequests bounds the token requests waiting for a place,
	// per class; when full, a Check is answered 503 at once.
	MaxQueuedRequests *int `yaml:"maxQueuedRequests"`
}

// FailureBudget: once the token endpoint rejected one client id's
// credentials MaxRejections times within Window, secrets of that id it has
// not accepted are refused without asking it, until the window passes.
// MaxRejections 0 turns the budget off.
type FailureBudget struct {
	MaxRejections *int     `yaml:"maxRejections"`
	Window        Duration `yaml:"window"`
	// MaxEndpointRejections bounds the rejections of credentials the
	// endpoint never accepted, of any client ids, per window.
	MaxEndpointRejections *int `yaml:"maxEndpointRejections"`
}

// TLS holds PEM material, inline or as secret references.
type TLS struct {
	CA                 string `yaml:"ca"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// Compiled is what Load derives from a Policy for serving requests.
type Compiled struct {
	Name         string
	TokenURL     *url.URL
	ClientID     string       // resolved; empty in application mode
	ClientSecret secret.Value // resolved; empty in application mode
	Program      *claims.Program
	Forward      []ForwardHeader // sorted by header name
	Username     *claims.Path
	TLS          *tls.Config // nil for Go's defaults
	Timeout      time.Duration
	MaxRetries   int
	TokenPrefix  string
	Store        *StoreCompiled // the policy's own store, else the top-level one
	Assertion    *idp.Assertion // private_key_jwt only
	// AssertionFile is federated_jwt's assertion.
	AssertionFile string
	// DPoPKey signs the policy's DPoP proofs; nil with DPoPGenerate (no
	// key configured: one is made at start) or without DPoP.
	DPoPKey      *dpop.Key
	DPoPGenerate bool
	// MaxRejections and RejectionWindow are the failure budget; 0 for none.
	MaxRejections   int
	RejectionWindow time.Duration
	// MaxEndpointRejections bounds the endpoint-wide rejections per window.
	MaxEndpointRejections int
	// MaxConcurrentRequests bounds the requests under way to the endpoint,
	// MaxQueuedRequests those waiting for a place.
	MaxConcurrentRequests int
	MaxQueuedRequests     int
	// Grant is the policy's grant; Delegated says it carries the caller's
	// token, read from SubjectHeader (lower case).
	Grant         idp.Grant
	Delegated     bool
	SubjectHeader string
	// ActorFile is the token exchange's actor token file, if any;
	// ActorPolicy the policy whose token is the actor token, if any.
	ActorFile   string
	ActorPolicy string
	// CredentialID fingerprints the signing key or client certificate the
	// policy authenticates with; it holds no secret.
	CredentialID string
	// TrustID fingerprints how the token endpoint's certificate is checked
	// (the CA, insecureSkipVerify), so that policies that trust different
	// servers never share tokens.
	TrustID string
}

// GatewayMode reports whether the policy carries its own client credentials
// (a secret, a signing key or a client certificate), so that callers need none.
func (c *Compiled) GatewayMode() bool { return c.ClientID != "" }

// NeedsClaims reports whether the policy reads the token's claims, which
// makes a JWT access token mandatory.
func (p *Policy) NeedsClaims() bool {
	return p.Compiled.Program != nil || len(p.Compiled.Forward) > 0 || p.Compiled.Username != nil
}

// ForwardHeader is a request header filled from a claim.
type ForwardHeader struct {
	Name  string
	Claim claims.Path
}

// Duration is a time.Duration written with a unit ("300s", "5m").
type Duration time.Duration

// UnmarshalYAML refuses bare numbers, whose unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		// A TypeError lets decoding go on and report other problems too.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration: write it with a unit, such as 300s or 5m", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// applyDefaults fills every field the file left out.
func (c *Config) applyDefaults() {
	setDefault(&c.Server.GRPCAddress, DefaultGRPCAddress)
	if c.Server.HTTPAddress == nil {
		c.Server.HTTPAddress = ptr(DefaultHTTPAddress)
	}
	setDefault(&c.Server.AdminAddress, DefaultAdminAddress)
	if c.Server.GRPC.MaxRequestBytes == 0 {
		c.Server.GRPC.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.Server.GRPC.MaxHeaderBytes == 0 {
		c.Server.GRPC.MaxHeaderBytes = DefaultMaxGRPCHeaderBytes
	}
	if c.Server.GRPC.MaxConcurrentStreams == 0 {
		c.Server.GRPC.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.Server.GRPC.MaxConnectionAge == 0 {
		c.Server.GRPC.MaxConnectionAge = Duration(DefaultMaxConnectionAge)
	}
	if c.Server.GRPC.MaxConnectionAgeGrace == 0 {
		c.Server.GRPC.MaxConnectionAgeGrace = Duration(DefaultMaxConnectionAgeGrace)
	}
	if c.Server.ShutdownTimeout == 0 {
		c.Server.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	if c.Server.HTTP.PolicyFromPath == nil {
		c.Server.HTTP.PolicyFromPath = ptr(true)
	}
	if c.Server.HTTP.MaxHeaderBytes == 0 {
		c.Server.HTTP.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	setDefault(&c.Log.Level, DefaultLogLevel)
	setDefault(&c.Log.Format, DefaultLogFormat)
	setDefault(&c.Secrets.Dir, DefaultSecretsDir)
	setDefault(&c.Tracing.ServiceName, "extauthz")
	if c.Tracing.SampleRatio == nil {
		c.Tracing.SampleRatio = ptr(1.0)
	}
	setDefault(&c.PolicySelector.ContextExtension, DefaultContextExtension)
	if c.Store.MaxEntries == 0 {
		c.Store.MaxEntries = DefaultMaxEntries
	}
	c.Store.applyDefaults()
	for _, p := range c.Policies {
		if p == nil {
			continue
		}
		if p.Store != nil {
			p.Store.applyDefaults()
		}
		if strings.TrimSpace(string(p.AuthMethod)) == "" {
			p.AuthMethod = DefaultAuthMethod
		}
		if p.DefaultTTL == 0 {
			p.DefaultTTL = Duration(DefaultTTL)
		}
		if p.NegativeTTL == 0 {
			p.NegativeTTL = Duration(DefaultNegativeTTL)
		}
		setDefault(&p.TokenHeader, DefaultTokenHeader)
		if p.TokenPrefix == nil {
			p.TokenPrefix = ptr(DefaultTokenPrefix)
			if p.DPoP != nil {
				p.TokenPrefix = ptr(DPoPTokenPrefix)
			}
		}
		if p.DPoP != nil && p.DPoP.Algorithm == "" {
			p.DPoP.Algorithm = dpop.ES256
		}
		if p.ClientConfig.TimeoutSeconds == nil {
			p.ClientConfig.TimeoutSeconds = ptr(DefaultTimeoutSeconds)
		}
		if p.ClientConfig.MaxRetries == nil {
			p.ClientConfig.MaxRetries = ptr(DefaultMaxRetries)
		}
		if p.ClientConfig.MaxConcurrentRequests == nil {
			p.ClientConfig.MaxConcurrentRequests = ptr(DefaultMaxConcurrentRequests)
		}
		if p.ClientConfig.MaxQueuedRequests == nil {
			p.ClientConfig.MaxQueuedRequests = ptr(DefaultMaxQueuedRequests)
		}
		if p.FailureBudget.MaxRejections == nil {
			p.FailureBudget.MaxRejections = ptr(DefaultMaxRejections)
		}
		if p.FailureBudget.MaxEndpointRejections == nil {
			p.FailureBudget.MaxEndpointRejections = ptr(DefaultMaxEndpointRejections)
		}
		if p.FailureBudget.Window == 0 {
			p.FailureBudget.Window = Duration(DefaultRejectionWindow)
		}
	}
}

func (s *Store) applyDefaults() {
	if s.KeyPrefix == nil {
		s.KeyPrefix = ptr(DefaultKeyPrefix)
	}
	if s.Redis != nil && s.Redis.TimeoutMillis == 0 {
		s.Redis.TimeoutMillis = int(DefaultRedisTimeout / time.Millisecond)
	}
}

func setDefault(field *string, def string) {
	if strings.TrimSpace(*field) == "" {
		*field = def
	}
}

func ptr[T any](v T) *T { return &v }
