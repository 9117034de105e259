package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"

	"github.com/extauthz/extauthz/pkg/callers"
	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/hostname"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/secret"
	"github.com/extauthz/extauthz/pkg/tokencache"
	"github.com/extauthz/extauthz/pkg/urlpath"
)

// Bounds on numbers a file may hold.
const (
	maxTimeoutSeconds        = 300
	maxRetries               = 10
	minTTL                   = time.Second
	maxNegativeTTL           = tokencache.MaxNegativeTTL
	minRequestBytes          = 4 << 10
	maxRequestBytes          = 64 << 20
	maxConcurrentStreams     = 1 << 16
	minHeaderBytes           = 4 << 10
	maxHeaderBytes           = 1 << 20
	maxMaxRejections         = 1000
	minRejectionWindow       = time.Second
	maxRejectionWindow       = time.Hour
	maxConcurrentRequests    = 1024
	maxQueuedRequests        = 1 << 16
	maxEndpointRejections    = 100_000
	minAdminTokenBytes       = 16
	maxAdminTokenBytes       = 4096
	maxPolicyHeaderNameBytes = 256
	minGRPCHeaderBytes       = 4 << 10
	maxGRPCHeaderBytes       = 1 << 20
	maxAllowedCallers        = 256
	// maxSocketPathBytes is what every Unix's sockaddr_un holds.
	maxSocketPathBytes = 104
)

var policyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// reservedHeaders may not be set from claims or carry the token: they
// belong to the HTTP connection, to Envoy, to the proxies' own bookkeeping
// (client address, request id, routing), or to the browser session.
var reservedHeaders = map[string]bool{
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true, "te": true,
	"upgrade": true, "keep-alive": true, "proxy-connection": true, "trailer": true,
	"proxy-authorization": true, "forwarded": true, "x-real-ip": true, "x-request-id": true,
	"x-original-uri": true, "cookie": true, "set-cookie": true, "x-extauthz-policy": true,
}

// reservedHeader reports a header name, in lower case, that no claim may
// set and no token may travel in: the list above, HTTP/2 pseudo-headers,
// x-envoy-* and x-forwarded-*, and HTTP mode's policy header.
func (v *validator) reservedHeader(lower string) bool {
	return reservedHeaders[lower] || lower == v.policyHeader || strings.HasPrefix(lower, ":") ||
		strings.HasPrefix(lower, "x-envoy-") || strings.HasPrefix(lower, "x-forwarded-")
}

// reservedParams are form parameters extauthz sets itself.
var reservedParams = map[string]bool{
	"grant_type": true, "scope": true, "audience": true, "client_id": true, "client_secret": true,
	"client_assertion": true, "client_assertion_type": true,
	"subject_token": true, "subject_token_type": true, "actor_token": true, "actor_token_type": true,
	"requested_token_type": true, "assertion": true,
}

type validator struct {
	lines        map[string]position
	policyHeader string   // server.http.policyHeader, lower case
	dir          string   // the configuration's directory, for relative files
	files        []string // other files read (federated assertions), to watch
	identities   []string // what of them the configuration depends on, for the fingerprint
	problems     []error
	warnings     []string
	secrets      *secret.Resolver
	digest       []byte // of the secret files read
}

func (v *validator) warnf(path, format string, args ...any) {
	v.warnings = append(v.warnings, v.problem(path, format, args...).Error())
}

func (v *validator) addf(path, format string, args ...any) {
	v.problems = append(v.problems, v.problem(path, format, args...))
}

// problem places a message at the position of path or of its nearest parent.
func (v *validator) problem(path, format string, args ...any) *Problem {
	p := &Problem{Path: path, Msg: fmt.Sprintf(format, args...)}
	for at := path; ; {
		if pos, ok := v.lines[at]; ok {
			p.File, p.Line = pos.file, pos.line
			return p
		}
		i := strings.LastIndexAny(at, ".[")
		if i < 0 {
			return p
		}
		at = at[:i]
	}
}

func (v *validator) validate(c *Config) {
	v.secrets = &secret.Resolver{Dir: c.Secrets.Dir}
	v.policyHeader = strings.ToLower(c.Server.HTTP.PolicyHeader)
	v.server(&c.Server)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.addf("log.level", "%q is not a level: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		v.addf("log.format", "%q is not a format: want json or console", c.Log.Format)
	}
	if c.Store.MaxEntries < 0 {
		v.addf("store.maxEntries", "must be positive, got %d", c.Store.MaxEntries)
	}
	v.store("store", &c.Store, true)
	if e := c.Tracing.Endpoint; e != "" && !hostPort(e) {
		v.addf("tracing.endpoint", "%q is not host:port%s", secret.RedactURL(e), addressHint(e, ""))
	}
	if r := *c.Tracing.SampleRatio; r < 0 || r > 1 {
		v.addf("tracing.sampleRatio", "%v is out of range: want 0 to 1", r)
	}

	if len(c.Policies) == 0 {
		v.addf("policies", "at least one policy is needed")
	}
	names := make([]string, 0, len(c.Policies))
	for name := range c.Policies {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := c.Policies[name]
		v.policy(name, p)
		if p == nil {
			continue
		}
		p.Compiled.Store = &c.Store.Compiled
		if p.Store != nil {
			v.store("policies."+name+".store", p.Store, false)
			p.Compiled.Store = &p.Store.Compiled
		}
		v.dpopKey("policies."+name+".dpop", p)
	}
	v.sharedEndpoints(names, c.Policies)
	v.actors(names, c.Policies)
	v.unauthenticatedCallers(c, names)
	for i := range c.Routes {
		v.route(fmt.Sprintf("routes[%d]", i), &c.Routes[i], c.Policies)
	}
	if c.DefaultPolicy != "" {
		if _, ok := c.Policies[c.DefaultPolicy]; !ok {
			v.addf("defaultPolicy", "no policy is named %q%s", c.DefaultPolicy, known(c.Policies))
		}
	}
	c.Files = append(append(c.Files, v.secrets.Files()...), v.files...)
	c.Warnings = v.warnings
	h := sha256.New()
	h.Write(v.secrets.Digest())
	for _, id := range v.identities {
		fmt.Fprintf(h, "%d:%s,", len(id), id)
	}
	v.digest = h.Sum(nil)
}

const maxRedisTimeoutMillis = 10_000

func (v *validator) store(path string, s *Store, top bool) {
	c := &s.Compiled
	c.KeyPrefix = *s.KeyPrefix
	if !top && s.MaxEntries != 0 {
		v.addf(path+".maxEntries", "the in-process tier is one for all policies: set maxEntries in the top-level store")
	}
	if s.EncryptionKey != "" {
		val := v.resolve(path+".encryptionKey", s.EncryptionKey)
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val.Reveal()))
		if !val.Empty() && (err != nil || len(key) != 32) {
			v.addf(path+".encryptionKey", "want the base64 of 32 random bytes, as `openssl rand -base64 32` prints")
		}
		c.EncryptionKey = secret.New(string(key))
		if s.Redis == nil {
			v.warnf(path+".encryptionKey", "has no effect without redis: the in-process tier never leaves the process")
		}
	}
	r := s.Redis
	if r == nil {
		return
	}
	if s.EncryptionKey == "" {
		v.addf(path+".encryptionKey", "is required with redis: Redis values are bearer tokens, and extauthz believes only what it sealed itself (`openssl rand -base64 32` makes a key; keep it in a Secret)")
	}
	path += ".redis"
	rc := &tokencache.RedisOptions{Endpoints: r.Endpoints, Username: r.Username, Database: r.Database}
	c.Redis = rc
	if len(r.Endpoints) == 0 {
		v.addf(path+".endpoints", "at least one host:port is needed")
	}
	for i, e := range r.Endpoints {
		if !hostPort(e) {
			v.addf(fmt.Sprintf("%s.endpoints[%d]", path, i), "%q is not host:port%s", secret.RedactURL(e), addressHint(e, ", with the credentials in username and password (secret references)"))
		}
	}
	switch {
	case r.Cluster && r.Sentinel != nil:
		v.addf(path, "cluster and sentinel exclude each other: choose one mode")
	case r.Cluster:
		rc.Mode = tokencache.RedisCluster
		if r.Database != 0 {
			v.warnf(path+".database", "Redis Cluster has only database 0: database %d is ignored", r.Database)
			rc.Database = 0
		}
	case r.Sentinel != nil:
		rc.Mode = tokencache.RedisSentinel
		rc.MasterSet = r.Sentinel.MasterSet
		rc.SentinelUsername = r.Sentinel.Username
		if r.Sentinel.MasterSet == "" {
			v.addf(path+".sentinel.masterSet", "the name of the master set is required with sentinel")
		}
		if r.Sentinel.Password != "" {
			rc.SentinelPassword = v.resolve(path+".sentinel.password", r.Sentinel.Password)
		}
	default:
		rc.Mode = tokencache.RedisSingle
		if len(r.Endpoints) > 1 {
			v.addf(path+".endpoints", "a single Redis takes one endpoint; for several, set cluster: true or sentinel.masterSet")
		}
	}
	if r.Database < 0 {
		v.addf(path+".database", "must not be negative, got %d", r.Database)
	}
	if r.Password != "" {
		rc.Password = v.resolve(path+".password", r.Password)
	}
	if t := r.TimeoutMillis; t < 1 || t > maxRedisTimeoutMillis {
		v.addf(path+".timeoutMillis", "%d is out of range: want 1 to %d", t, maxRedisTimeoutMillis)
	}
	rc.Timeout = time.Duration(r.TimeoutMillis) * time.Millisecond
	if r.TLS != (RedisTLS{}) {
		rc.TLS = v.tlsConfig(path+".tls", "caBundle", r.TLS.CABundle, r.TLS.Cert, r.TLS.Key, r.TLS.InsecureSkipVerify)
	}
	if r.TLS.InsecureSkipVerify {
		v.warnf(path+".tls.insecureSkipVerify", "Redis's certificate is not checked: anyone on the way can read and drop the (sealed) tokens")
	}
	// Stores whose connections are configured alike share one client and pool.
	h := sha256.New()
	for _, f := range []string{
		string(rc.Mode), strings.Join(rc.Endpoints, ","), rc.Username, rc.Password.Reveal(), strconv.Itoa(rc.Database),
		rc.MasterSet, rc.SentinelUsername, rc.SentinelPassword.Reveal(), rc.Timeout.String(),
		r.TLS.CABundle, r.TLS.Cert, r.TLS.Key, strconv.FormatBool(r.TLS.InsecureSkipVerify),
	} {
		fmt.Fprintf(h, "%d:%s,", len(f), f)
	}
	rc.Identity = hex.EncodeToString(h.Sum(nil))
}

// hostPort reports an address to dial, host:port, whose host is a name or
// an IP address: not a URL, and nothing that could hold a credential
// ("user:password@host" splits into a host and a port too).
func hostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	for _, c := range host + port {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune(".-_:%", c)) {
			return false
		}
	}
	return true
}

// addressHint explains an address that was written as a URL.
func addressHint(addr, credentials string) string {
	if !strings.ContainsAny(addr, "/@?#") {
		return ""
	}
	return "; write the address alone" + credentials
}

func (v *validator) server(s *Server) {
	seen := map[string]string{}
	for _, a := range []struct{ path, addr string }{
		{"server.grpcAddress", s.GRPCAddress}, {"server.httpAddress", *s.HTTPAddress}, {"server.adminAddress", s.AdminAddress},
	} {
		if a.addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			v.addf(a.path, "%q is not an address: want host:port or :port", a.addr)
			continue
		}
		if other, ok := seen[host+":"+port]; ok && port != "0" {
			v.addf(a.path, "%q is also %s", a.addr, other)
		}
		seen[host+":"+port] = a.path
	}
	if n := s.GRPC.MaxRequestBytes; n < minRequestBytes || n > maxRequestBytes {
		v.addf("server.grpc.maxRequestBytes", "%d is out of range: want %d to %d", n, minRequestBytes, maxRequestBytes)
	}
	if n := s.GRPC.MaxHeaderBytes; n < minGRPCHeaderBytes || n > maxGRPCHeaderBytes {
		v.addf("server.grpc.maxHeaderBytes", "%d is out of range: want %d to %d", n, minGRPCHeaderBytes, maxGRPCHeaderBytes)
	}
	if n := s.GRPC.MaxConcurrentStreams; n < 1 || n > maxConcurrentStreams {
		v.addf("server.grpc.maxConcurrentStreams", "%d is out of range: want 1 to %d", n, maxConcurrentStreams)
	}
	if d := time.Duration(s.GRPC.MaxConnectionAge); d < time.Second || d > 24*time.Hour {
		v.addf("server.grpc.maxConnectionAge", "%s is out of range: want 1s to 24h", s.GRPC.MaxConnectionAge)
	}
	if d := time.Duration(s.GRPC.MaxConnectionAgeGrace); d < time.Second || d > time.Hour {
		v.addf("server.grpc.maxConnectionAgeGrace", "%s is out of range: want 1s to 1h", s.GRPC.MaxConnectionAgeGrace)
	}
	if d := time.Duration(s.ShutdownTimeout); d < time.Second || d > 10*time.Minute {
		v.addf("server.shutdownTimeout", "%s is out of range: want 1s to 10m", s.ShutdownTimeout)
	}
	if n := s.HTTP.MaxHeaderBytes; n < minHeaderBytes || n > maxHeaderBytes {
		v.addf("server.http.maxHeaderBytes", "%d is out of range: want %d to %d", n, minHeaderBytes, maxHeaderBytes)
	}
	if h := s.HTTP.PolicyHeader; h != "" {
		lower := strings.ToLower(h)
		if !httpguts.ValidHeaderFieldName(h) || len(h) > maxPolicyHeaderNameBytes || lower != "x-extauthz-policy" && reservedHeaders[lower] ||
			lower == "authorization" || strings.HasPrefix(lower, "x-forwarded-") || strings.HasPrefix(lower, "x-envoy-") {
			v.addf("server.http.policyHeader", "%q cannot name the policy: want a header of its own, such as X-Extauthz-Policy, that the proxy sets", h)
		}
	}
	v.admin(&s.Admin, &s.Compiled)
	v.callers(&s.TLS, &s.Compiled)
}

// callers compiles who may call the check listeners.
func (v *validator) callers(t *ServerTLS, c *ServerCompiled) {
	const path = "server.tls"
	before := len(v.problems)
	if t.Cert == "" && t.Key == "" {
		if t.ClientCA != "" || len(t.AllowedCallers) > 0 {
			v.addf(path, "clientCA and allowedCallers need the listeners to serve TLS: set cert and key")
		}
		return
	}
	cfg := v.tlsConfig(path, "clientCA", t.ClientCA, t.Cert, t.Key, false)
	if t.ClientCA == "" && len(t.AllowedCallers) > 0 {
		v.addf(path+".allowedCallers", "needs clientCA: an identity is believed only from a certificate that chains to it")
	}
	if len(t.AllowedCallers) > maxAllowedCallers {
		v.addf(path+".allowedCallers", "%d callers: at most %d", len(t.AllowedCallers), maxAllowedCallers)
	}
	var allowed []callers.Identity
	for i, a := range t.AllowedCallers {
		id, err := callers.ParseIdentity(a)
		if err != nil {
			v.addf(fmt.Sprintf("%s.allowedCallers[%d]", path, i), "%q: %v", a, err)
			continue
		}
		allowed = append(allowed, id)
	}
	if len(cfg.Certificates) == 0 || len(v.problems) > before {
		return // the problems above say why
	}
	var clientCAs *x509.CertPool
	if t.ClientCA != "" {
		clientCAs = cfg.RootCAs
	}
	p, err := callers.NewPolicy(cfg.Certificates[0], clientCAs, allowed)
	if err != nil {
		v.addf(path, "%v", err)
		return
	}
	c.Callers = p
}

// unauthenticatedCallers warns when policies hand out what only the
// operator's proxies should get — a gateway-mode token, a DPoP proof for
// the method and URL the caller names — on listeners that do not know who
// calls them.
func (v *validator) unauthenticatedCallers(c *Config, names []string) {
	if c.Server.Compiled.CallersAuthenticated() {
		return
	}
	var exposed []string
	for _, name := range names {
		if p := c.Policies[name]; p != nil && (p.Compiled.GatewayMode() || p.DPoP != nil) {
			exposed = append(exposed, name)
		}
	}
	if len(exposed) == 0 {
		return
	}
	listeners := "server.grpcAddress"
	if *c.Server.HTTPAddress != "" {
		listeners += " and server.httpAddress"
	}
	v.warnf("server.tls", "policies %s give their token (gateway mode) or a DPoP proof for the method and URL a caller names to whoever reaches %s: "+
		"set server.tls.clientCA and allowedCallers to answer only your proxies, or keep everyone else off these ports (the Helm chart's NetworkPolicy, a mesh AuthorizationPolicy)",
		strings.Join(exposed, ", "), listeners)
}

// admin checks who may call the admin gRPC API.
func (v *validator) admin(a *Admin, c *ServerCompiled) {
	if a.Token != "" {
		c.AdminToken = v.resolve("server.admin.token", a.Token)
		if tok := c.AdminToken.Reveal(); tok != "" && (len(tok) < minAdminTokenBytes || len(tok) > maxAdminTokenBytes || !headerToken(tok)) {
			v.addf("server.admin.token", "want %d to %d printable characters without spaces (`openssl rand -hex 32` makes one)", minAdminTokenBytes, maxAdminTokenBytes)
		}
	}
	if s := a.Socket; s != "" {
		switch {
		case !filepath.IsAbs(s):
			v.addf("server.admin.socket", "%q is not an absolute path", s)
		case len(s) > maxSocketPathBytes:
			v.addf("server.admin.socket", "%q is longer than a Unix socket's path may be (%d bytes)", s, maxSocketPathBytes)
		}
	}
	t := a.TLS
	if t == (AdminTLS{}) {
		return
	}
	if t.Cert == "" || t.Key == "" {
		v.addf("server.admin.tls", "cert and key are required to serve the admin address over TLS")
		return
	}
	cfg := v.tlsConfig("server.admin.tls", "clientCA", t.ClientCA, t.Cert, t.Key, false)
	// The server verifies client certificates against RootCAs' pool, which
	// tlsConfig fills for clients; callers without one may still scrape
	// /metrics and probe /healthz.
	server := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: cfg.Certificates, NextProtos: []string{"h2", "http/1.1"}}
	if t.ClientCA != "" {
		server.ClientCAs, server.ClientAuth = cfg.RootCAs, tls.VerifyClientCertIfGiven
		c.AdminClientCA = true
	}
	c.AdminTLS = server
}

// headerToken reports visible ASCII without spaces, as a bearer token is.
func headerToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func (v *validator) route(path string, r *Route, policies map[string]*Policy) {
	if r.Policy == "" {
		v.addf(path+".policy", "a route needs a policy")
	} else if _, ok := policies[r.Policy]; !ok {
		v.addf(path+".policy", "no policy is named %q%s", r.Policy, known(policies))
	}
	if h := r.Host; h != "" {
		pattern, suffix := strings.CutPrefix(h, "*.")
		host, port, err := hostname.Normalize(pattern)
		if err != nil || host == "" || suffix && strings.HasPrefix(host, "[") {
			v.addf(path+".host", "%q is not a host: want a name such as api.example.com, or *.example.com for every subdomain", h)
		}
		r.Compiled = RouteCompiled{Host: host, HostSuffix: suffix, Port: port}
	}
	if r.PathPrefix != "" {
		// Requests are matched on their normalized path, so a prefix
		// in any other form would never match.
		norm, err := urlpath.Normalize(r.PathPrefix)
		switch {
		case !strings.HasPrefix(r.PathPrefix, "/"):
			v.addf(path+".pathPrefix", "%q does not start with /", r.PathPrefix)
		case err != nil:
			v.addf(path+".pathPrefix", "%q: %v, so no request could match it", r.PathPrefix, err)
		case norm != r.PathPrefix:
			v.addf(path+".pathPrefix", "%q is not in normal form: requests are matched on normalized paths, write %q", r.PathPrefix, norm)
		}
	}
	for name := range r.Header {
		if !httpguts.ValidHeaderFieldName(name) {
			v.addf(path+".header."+name, "%q is not a header name", name)
		}
	}
}

func (v *validator) policy(name string, p *Policy) {
	path := "policies." + name
	if !policyNameRE.MatchString(name) {
		v.addf(path, "a policy name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if p == nil {
		v.addf(path, "the policy is empty: it needs at least a url")
		return
	}
	c := &p.Compiled
	c.Name = name
	c.TokenURL = v.tokenURL(path+".url", p.URL)

	v.credentials(path, p)
	v.delegation(path, p)
	for i, s := range p.Scopes {
		if !validScope(s) {
			v.addf(fmt.Sprintf("%s.scopes[%d]", path, i), "%q is not a scope: a scope is printable ASCII without spaces, quotes or backslashes", s)
		}
	}
	for k := range p.ExtraParams {
		if k == "" || reservedParams[k] {
			v.addf(path+".extraParams."+k, "%q is set by extauthz itself; use the policy's own field", k)
		}
	}

	v.forwardHeaders(path, p)
	if p.Claims != "" {
		prog, err := claims.Compile(p.Claims)
		if err != nil {
			v.addf(path+".claims", "%v", err)
		}
		c.Program = prog
	}
	if p.UsernameClaim != "" {
		u, err := claims.ParsePath(p.UsernameClaim)
		if err != nil {
			v.addf(path+".usernameClaim", "%v", err)
		}
		c.Username = &u
	}
	v.keySources(path, p.JWKSURL, p.Issuer, "tokens")
	if p.ExpectedAudience != "" && p.JWKSURL == "" && p.Issuer == "" {
		v.addf(path+".expectedAudience", "is checked only when tokens are verified: set jwksURL or issuer")
	}
	if time.Duration(p.DefaultTTL) < minTTL {
		v.addf(path+".defaultTTL", "%s is too short: at least %s", p.DefaultTTL, minTTL)
	}
	if n := time.Duration(p.NegativeTTL); n < 100*time.Millisecond || n > maxNegativeTTL {
		v.addf(path+".negativeTTL", "%s is out of range: want 100ms to %s", p.NegativeTTL, maxNegativeTTL)
	}
	if !httpguts.ValidHeaderFieldName(p.TokenHeader) || v.reservedHeader(strings.ToLower(p.TokenHeader)) {
		v.addf(path+".tokenHeader", "%q cannot carry the token", p.TokenHeader)
	}
	c.TokenPrefix = *p.TokenPrefix
	if !validHeaderValue(c.TokenPrefix) {
		v.addf(path+".tokenPrefix", "contains a control character")
	}

	cc := p.ClientConfig
	if t := *cc.TimeoutSeconds; t < 1 || t > maxTimeoutSeconds {
		v.addf(path+".clientConfig.timeoutSeconds", "%d is out of range: want 1 to %d", t, maxTimeoutSeconds)
	}
	c.Timeout = time.Duration(*cc.TimeoutSeconds) * time.Second
	if r := *cc.MaxRetries; r < 0 || r > maxRetries {
		v.addf(path+".clientConfig.maxRetries", "%d is out of range: want 0 to %d", r, maxRetries)
	}
	c.MaxRetries = *cc.MaxRetries
	if n := *cc.MaxConcurrentRequests; n < 1 || n > maxConcurrentRequests {
		v.addf(path+".clientConfig.maxConcurrentRequests", "%d is out of range: want 1 to %d", n, maxConcurrentRequests)
	}
	c.MaxConcurrentRequests = *cc.MaxConcurrentRequests
	if n := *cc.MaxQueuedRequests; n < 1 || n > maxQueuedRequests {
		v.addf(path+".clientConfig.maxQueuedRequests", "%d is out of range: want 1 to %d", n, maxQueuedRequests)
	}
	c.MaxQueuedRequests = *cc.MaxQueuedRequests
	v.failureBudget(path+".failureBudget", p)
	c.TLS, c.TrustID = v.tls(path+".clientConfig.tls", cc.TLS, c.TokenURL)
	if cc.TLS.InsecureSkipVerify {
		v.warnf(path+".clientConfig.tls.insecureSkipVerify", "the token endpoint's certificate is not checked: anyone on the way can take the client secrets and hand out tokens")
	}
	if u := c.TokenURL; u != nil && u.Scheme == "http" && !loopback(u) {
		v.warnf(path+".url", "is plain HTTP: client secrets and tokens cross the network unencrypted; use https")
	}
	if p.AuthMethod == idp.TLSClientAuth {
		if c.TLS == nil || len(c.TLS.Certificates) == 0 {
			v.addf(path+".clientConfig.tls", "tls_client_auth needs the client certificate: set cert and key")
		} else if len(c.TLS.Certificates[0].Certificate) > 0 {
			c.CredentialID = fingerprint(c.TLS.Certificates[0].Certificate[0])
		}
	}
}

// keySources checks where the keys that verify JWTs come from: jwksURL,
// or issuer's OpenID Connect discovery (path.jwksURL, path.issuer), each an
// http or https URL, with a warning for plain HTTP off loopback; what names
// the tokens they verify, for the warning.
func (v *validator) keySources(path, jwksURL, issuer, what string) {
	for _, f := range []struct{ name, value string }{{"jwksURL", jwksURL}, {"issuer", issuer}} {
		u, err := url.Parse(f.value)
		switch {
		case f.value == "" || !v.urlText(path+"."+f.name, f.value):
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			v.addf(path+"."+f.name, "%q is not an http or https URL", secret.RedactURL(f.value))
		case u.Scheme == "http" && !loopback(u):
			v.warnf(path+"."+f.name, "is plain HTTP: anyone on the way can swap the keys %s are verified with; use https", what)
		}
	}
}

// failureBudget checks the policy's failure budget. It protects the
// callers' client ids, so a gateway-mode policy has none.
func (v *validator) failureBudget(path string, p *Policy) {
	b := p.FailureBudget
	n, w := *b.MaxRejections, time.Duration(b.Window)
	if n < 0 || n > maxMaxRejections {
		v.addf(path+".maxRejections", "%d is out of range: want 0 (no budget) to %d", n, maxMaxRejections)
	}
	if w < minRejectionWindow || w > maxRejectionWindow {
		v.addf(path+".window", "%s is out of range: want %s to %s", b.Window, minRejectionWindow, maxRejectionWindow)
	}
	e := *b.MaxEndpointRejections
	if e < 1 || e > maxEndpointRejections {
		v.addf(path+".maxEndpointRejections", "%d is out of range: want 1 to %d", e, maxEndpointRejections)
	}
	if p.Compiled.GatewayMode() && !p.Compiled.Delegated {
		if v.lines[path].line != 0 {
			v.warnf(path, "has no effect in gateway mode: callers send no credentials")
		}
		return
	}
	p.Compiled.MaxRejections, p.Compiled.RejectionWindow, p.Compiled.MaxEndpointRejections = n, w, e
}

// sharedEndpoints checks that policies sharing a token endpoint agree on
// what bounds it as a whole: the requests open there and queued for it,
// and the rejections all client ids may cause there.
func (v *validator) sharedEndpoints(names []string, policies map[string]*Policy) {
	first := map[string]string{} // token URL → the first policy using it
	for _, name := range names {
		p := policies[name]
		if p == nil || p.Compiled.TokenURL == nil {
			continue
		}
		u := p.Compiled.TokenURL.String()
		other, ok := first[u]
		if !ok {
			first[u] = name
			continue
		}
		o := policies[other]
		for _, f := range []struct {
			field string
			a, b  int
		}{
			{"clientConfig.maxConcurrentRequests", *o.ClientConfig.MaxConcurrentRequests, *p.ClientConfig.MaxConcurrentRequests},
			{"clientConfig.maxQueuedRequests", *o.ClientConfig.MaxQueuedRequests, *p.ClientConfig.MaxQueuedRequests},
			{"failureBudget.maxEndpointRejections", o.Compiled.MaxEndpointRejections, p.Compiled.MaxEndpointRejections},
		} {
			if f.a != f.b && (f.a != 0 && f.b != 0 || !strings.HasPrefix(f.field, "failureBudget")) {
				v.addf("policies."+name+"."+f.field,
					"%d, but policy %s sets %d for the same token endpoint: policies that share an endpoint share one bound", f.b, other, f.a)
			}
		}
	}
}

// credentials checks how the policy authenticates at the token endpoint:
// its own id and secret (gateway mode), its own id with a key or a
// certificate, or the caller's id and secret (application mode).
func (v *validator) credentials(path string, p *Policy) {
	c := &p.Compiled
	if p.ClientID != "" {
		c.ClientID = v.resolve(path+".clientID", p.ClientID).Reveal()
		if !utf8.ValidString(c.ClientID) || !validHeaderValue(c.ClientID) {
			v.addf(path+".clientID", "holds a control character or is not UTF-8")
		}
	}
	if p.AuthMethod != idp.PrivateKeyJWT && p.AuthMethod != idp.FederatedJWT && p.ClientAssertion != nil {
		v.addf(path+".clientAssertion", "is only for authMethod: %s or %s", idp.PrivateKeyJWT, idp.FederatedJWT)
	}
	switch p.AuthMethod {
	case idp.ClientSecretBasic, idp.ClientSecretPost, idp.ClientSecretJWT:
		switch {
		case p.ClientID != "" && p.ClientSecret == "":
			v.addf(path+".clientSecret", "clientID is set, so clientSecret must be too (or neither, for callers to send their own)")
		case p.ClientID == "" && p.ClientSecret != "":
			v.addf(path+".clientID", "clientSecret is set, so clientID must be too (or neither, for callers to send their own)")
		case p.ClientID != "":
			c.ClientSecret = v.resolve(path+".clientSecret", p.ClientSecret)
		}
	case idp.PrivateKeyJWT, idp.TLSClientAuth, idp.FederatedJWT:
		if p.ClientID == "" {
			v.addf(path+".clientID", "%s authenticates the policy's own client: clientID is required", p.AuthMethod)
		}
		if p.ClientSecret != "" {
			v.addf(path+".clientSecret", "%s uses no client secret", p.AuthMethod)
		}
		switch {
		case p.AuthMethod == idp.PrivateKeyJWT && p.ClientAssertion != nil && p.ClientAssertion.File != "":
			v.addf(path+".clientAssertion.file", "is for federated_jwt; private_key_jwt signs its own assertions with key")
		case p.AuthMethod == idp.PrivateKeyJWT:
			v.assertion(path+".clientAssertion", p)
		case p.AuthMethod == idp.FederatedJWT:
			v.federated(path+".clientAssertion", p)
		}
	default:
		v.addf(path+".authMethod", "%q is not supported: want %s, %s, %s, %s, %s or %s", p.AuthMethod,
			idp.ClientSecretBasic, idp.ClientSecretPost, idp.ClientSecretJWT, idp.PrivateKeyJWT, idp.TLSClientAuth, idp.FederatedJWT)
	}
}

// federated checks federated_jwt's assertion file: present, a JWT. Its
// issuer, subject and audience are the client's identity (the token cache
// key holds them, not the JWT, which the kubelet rotates); its expiry is
// checked when a token is requested.
func (v *validator) federated(path string, p *Policy) {
	a := p.ClientAssertion
	if a == nil || a.File == "" {
		v.addf(path+".file", "federated_jwt needs the file that holds the assertion (a projected service account token)")
		return
	}
	if a.Key != "" || a.KeyID != "" || a.Algorithm != "" || a.Audience != "" {
		v.addf(path, "federated_jwt sends the file's assertion as it is: key, keyID, algorithm and audience are private_key_jwt's")
	}
	file := a.File
	if !filepath.IsAbs(file) && v.dir != "" {
		file = filepath.Join(v.dir, file)
	}
	id, err := idp.ReadAssertionIdentity(file)
	if err != nil {
		v.addf(path+".file", "%v", err)
		return
	}
	p.Compiled.AssertionFile = file
	p.Compiled.CredentialID = fingerprint([]byte("federated\x00" + id.Issuer + "\x00" + id.Subject + "\x00" + strings.Join(id.Audience, " ")))
	v.files = append(v.files, file) // watched: a new identity reloads
	v.identities = append(v.identities, p.Compiled.CredentialID)
}

// dpopKey loads a policy's DPoP key, or notes that one is made at start.
func (v *validator) dpopKey(path string, p *Policy) {
	d := p.DPoP
	if d == nil {
		return
	}
	if !strings.EqualFold(p.TokenHeader, "authorization") || *p.TokenPrefix != DPoPTokenPrefix {
		v.addf(path, "a DPoP token travels as Authorization: DPoP <token>: leave tokenHeader and tokenPrefix out")
	}
	switch d.Algorithm {
	case dpop.ES256, dpop.EdDSA, dpop.RS256:
	default:
		v.addf(path+".algorithm", "%q is not supported: want ES256, EdDSA or RS256", d.Algorithm)
		return
	}
	if d.Key == "" {
		if s := p.Compiled.Store; s != nil && s.Redis != nil {
			v.addf(path+".key", "is required with Redis: every replica must sign with the key the shared tokens are bound to")
			return
		}
		if d.Algorithm != dpop.ES256 {
			v.addf(path+".key", "a generated key is ES256: give a key for %s", d.Algorithm)
		}
		p.Compiled.DPoPGenerate = true
		return
	}
	pemText := v.resolve(path+".key", d.Key)
	if pemText.Empty() {
		return
	}
	signer, err := parsePrivateKey([]byte(pemText.Reveal()))
	if err != nil {
		v.addf(path+".key", "%v", err)
		return
	}
	k, err := dpop.NewKey(signer, d.Algorithm)
	if err != nil {
		v.addf(path+".key", "%v", err)
		return
	}
	p.Compiled.DPoPKey = k
}

// assertion loads the private_key_jwt signing key and checks it fits the algorithm.
func (v *validator) assertion(path string, p *Policy) {
	a := p.ClientAssertion
	if a == nil || a.Key == "" {
		v.addf(path+".key", "private_key_jwt needs the signing key (PEM, inline or a secret reference)")
		return
	}
	pemText := v.resolve(path+".key", a.Key)
	if pemText.Empty() {
		return
	}
	key, err := parsePrivateKey([]byte(pemText.Reveal()))
	if err != nil {
		v.addf(path+".key", "%v", err)
		return
	}
	alg := a.Algorithm
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg == "" {
			alg = "RS256"
		}
	case *ecdsa.PrivateKey:
		if alg == "" && k.Curve.Params().Name == "P-256" {
			alg = "ES256"
		}
	}
	ok := alg == "RS256" && isRSA(key) || alg == "ES256" && isP256(key)
	if !ok {
		v.addf(path+".algorithm", "a %s key cannot sign %q: want RS256 with an RSA key or ES256 with a P-256 key", keyKind(key), a.Algorithm)
		return
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		v.addf(path+".key", "%v", err)
		return
	}
	p.Compiled.Assertion = &idp.Assertion{Key: key, KeyID: a.KeyID, Algorithm: alg, Audience: a.Audience}
	p.Compiled.CredentialID = fingerprint(der)
	if a.Audience != "" {
		if u, err := url.Parse(a.Audience); err != nil || u.Scheme == "" {
			v.addf(path+".audience", "%q is not a URL", secret.RedactURL(a.Audience))
		}
	}
}

// parsePrivateKey reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC 1 (EC).
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok && (isRSA(s) || isEC(s) || isEd25519(s)) {
			return s, nil
		}
		return nil, fmt.Errorf("a %T key cannot sign: want RSA, EC or Ed25519", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("the PEM block %q is not a private key this can read (PKCS#8, PKCS#1 or SEC 1)", block.Type)
}

func isRSA(k crypto.Signer) bool     { _, ok := k.(*rsa.PrivateKey); return ok }
func isEd25519(k crypto.Signer) bool { _, ok := k.(ed25519.PrivateKey); return ok }
func isEC(k crypto.Signer) bool      { _, ok := k.(*ecdsa.PrivateKey); return ok }
func isP256(k crypto.Signer) bool {
	ec, ok := k.(*ecdsa.PrivateKey)
	return ok && ec.Curve.Params().Name == "P-256"
}

func keyKind(k crypto.Signer) string {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return "RSA"
	case *ecdsa.PrivateKey:
		return "EC " + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", k)
}

// fingerprint names public material (a certificate, a public key) without
// revealing anything secret.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func (v *validator) tokenURL(path, raw string) *url.URL {
	if raw == "" {
		v.addf(path, "the token endpoint URL is required")
		return nil
	}
	u, err := url.Parse(raw)
	switch {
	case !v.urlText(path, raw):
		return nil
	case err != nil:
		v.addf(path, "%q is not a URL", secret.RedactURL(raw))
		return nil
	case u.Scheme != "https" && u.Scheme != "http":
		v.addf(path, "%q is not an http or https URL", secret.RedactURL(raw))
	case u.Host == "":
		v.addf(path, "%q has no host", secret.RedactURL(raw))
	case u.User != nil:
		v.addf(path, "the URL must not carry credentials: use clientID and clientSecret")
	case u.Fragment != "":
		v.addf(path, "the URL must not have a fragment")
	default:
		return u
	}
	return nil
}

// urlText reports a URL that can be printed and found again in the text
// of an error (secret.URLText), so that its credentials can be redacted
// there; it reports a problem for one that cannot. Every message that
// quotes a URL of the configuration quotes secret.RedactURL of it.
func (v *validator) urlText(path, raw string) bool {
	if secret.URLText(raw) {
		return true
	}
	v.addf(path, "%q holds a space, a quote, a backslash, < or >, or a character outside printable ASCII: percent-encode it", secret.RedactURL(raw))
	return false
}

func (v *validator) forwardHeaders(path string, p *Policy) {
	seen := map[string]string{}
	for name, claim := range p.ForwardHeaders {
		hp := path + ".forwardHeaders." + name
		lower := strings.ToLower(name)
		switch {
		case !httpguts.ValidHeaderFieldName(name) || v.reservedHeader(lower):
			v.addf(hp, "%q cannot be forwarded: want a header name such as X-Group", name)
			continue
		case strings.EqualFold(name, p.TokenHeader):
			v.addf(hp, "%q is the header that carries the token", name)
			continue
		}
		if other, ok := seen[lower]; ok {
			v.addf(hp, "%q is the same header as %q", name, other)
			continue
		}
		seen[lower] = name
		cp, err := claims.ParsePath(claim)
		if err != nil {
			v.addf(hp, "%v", err)
			continue
		}
		p.Compiled.Forward = append(p.Compiled.Forward, ForwardHeader{Name: name, Claim: cp})
	}
	sort.Slice(p.Compiled.Forward, func(i, j int) bool { return p.Compiled.Forward[i].Name < p.Compiled.Forward[j].Name })
}

// tls builds the token endpoint's TLS configuration (nil for Go's
// defaults), and a fingerprint of how it checks the server's certificate:
// the CA's content (system roots when none) and insecureSkipVerify.
func (v *validator) tls(path string, t TLS, u *url.URL) (*tls.Config, string) {
	if t == (TLS{}) {
		return nil, ""
	}
	if u != nil && u.Scheme != "https" {
		v.addf(path, "TLS settings are given but the url is not https")
	}
	ca := t.CA
	if ca != "" {
		ca = v.resolve(path+".ca", ca).Reveal() // the content, not the reference
	}
	sum := sha256.Sum256([]byte(ca))
	return v.tlsConfig(path, "ca", ca, t.Cert, t.Key, t.InsecureSkipVerify), fmt.Sprintf("ca=%x,insecure=%t", sum[:8], t.InsecureSkipVerify)
}

// loopback reports a URL on this host, where plain HTTP crosses no network.
func loopback(u *url.URL) bool {
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig builds a client TLS configuration from PEM material, inline or
// referenced; caField names the CA field in problems.
func (v *validator) tlsConfig(path, caField, ca, certPEM, keyPEM string, insecure bool) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if ca != "" {
		pool := x509.NewCertPool()
		if val := v.resolve(path+"."+caField, ca); !val.Empty() && !pool.AppendCertsFromPEM([]byte(val.Reveal())) {
			v.addf(path+"."+caField, "no PEM certificate found")
		}
		cfg.RootCAs = pool
	}
	switch {
	case (certPEM == "") != (keyPEM == ""):
		v.addf(path, "cert and key go together: give both or neither")
	case certPEM != "":
		cert, key := v.resolve(path+".cert", certPEM), v.resolve(path+".key", keyPEM)
		if !cert.Empty() && !key.Empty() {
			pair, err := tls.X509KeyPair([]byte(cert.Reveal()), []byte(key.Reveal()))
			if err != nil {
				v.addf(path+".cert", "the certificate and key do not load: %v", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
	return cfg
}

// resolve reads a secret reference, reporting a problem for a bad one or an
// empty result. Errors never include a literal secret.
func (v *validator) resolve(path, s string) secret.Value {
	val, err := v.secrets.Resolve(s)
	switch {
	case err != nil:
		v.addf(path, "%v", err)
	case val.Empty():
		v.addf(path, "resolves to an empty value")
	}
	return val
}

func known(policies map[string]*Policy) string {
	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return " (policies: " + strings.Join(names, ", ") + ")"
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validScope reports an RFC 6749 §3.3 scope-token.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == '"' || c == '\\' || c > 0x7e {
			return false
		}
	}
	return true
}
