package authz

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/hostname"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// policy is a configured policy ready to serve requests.
type policy struct {
	name     string
	config   *config.Policy
	endpoint *tokencache.Endpoint
	gateway  bool
	creds    idp.Credentials // gateway mode: the policy's own
	key      tokencache.Key  // gateway mode: the key of creds

	program     *claims.Program
	forward     []config.ForwardHeader
	username    *claims.Path
	needsClaims bool
	tokenHeader string
	tokenPrefix string
	// callers remembers application-mode Authorization headers.
	callers credentialCache
	// checks counts decisions by outcome, resolved once per policy.
	checks [len(outcomes)]prometheus.Counter
	// removeAuthorization drops the caller's Basic credentials when the token
	// travels in another header, so that they never reach the upstream.
	removeAuthorization bool
	realm               string // WWW-Authenticate value for 401s
}

// route is a compiled config.Route.
type route struct {
	host       string // normalized (hostname.Normalize); ".example.com" for "*.example.com"
	hostSuffix bool   // host matches as a suffix: "*.example.com"
	port       string // compared when set
	pathPrefix string
	header     map[string]string // lower-case names
	policy     *policy
}

// state is one configuration, compiled. Check reads it through an atomic
// pointer, so a reload swaps it without stopping requests.
type state struct {
	policies      map[string]*policy
	routes        []route
	defaultPolicy *policy
	selector      string // context extension key
	policyHeader  string // HTTP mode: the header that names a policy; none when empty
	policyPath    bool   // HTTP mode: a path /policy/<name> names the policy
	hostRoutes    bool   // a route matches on the host, so requests' hosts are read
	transports    []*http.Transport
	verifiers     []*idp.Verifier
}

// compile builds the state for cfg.
func compile(cfg *config.Config, o *Options) (*state, error) {
	st := &state{policies: map[string]*policy{}, selector: cfg.PolicySelector.ContextExtension,
		policyHeader: cfg.Server.HTTP.PolicyHeader, policyPath: *cfg.Server.HTTP.PolicyFromPath}
	for name, cp := range cfg.Policies {
		c := &cp.Compiled
		transport := idp.NewTransport(c.TLS)
		st.transports = append(st.transports, transport)
		var assertion *idp.Assertion
		if a := c.Assertion; a != nil {
			assertion = &idp.Assertion{Key: a.Key, KeyID: a.KeyID, Algorithm: a.Algorithm, Audience: a.Audience}
		}
		client, err := idp.NewClient(idp.Options{
			URL:          c.TokenURL.String(),
			AuthMethod:   idp.AuthMethod(cp.AuthMethod),
			Audience:     cp.Audience,
			Scopes:       cp.Scopes,
			ExtraParams:  cp.ExtraParams,
			HTTPClient:   &http.Client{Transport: transport},
			Timeout:      c.Timeout,
			MaxRetries:   c.MaxRetries,
			Backoff:      o.RetryBackoff,
			Logger:       o.Logger.With(zap.String("policy", name)),
			Assertion:    assertion,
			CredentialID: c.CredentialID,
			TrustID:      c.TrustID,
			Name:         name,
			Metrics:      o.Metrics,
			Tracer:       o.Tracer,
		})
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		shared, err := sharedTier(c.Store, o.Tokens)
		if err != nil {
			return nil, fmt.Errorf("policy %s: store: %w", name, err)
		}
		var verifier tokencache.Verifier
		if cp.JWKSURL != "" || cp.Issuer != "" {
			v, err := idp.NewVerifier(idp.VerifierOptions{
				JWKSURL: cp.JWKSURL, Issuer: cp.Issuer, Audience: cp.ExpectedAudience,
				HTTPClient: &http.Client{Transport: transport},
				Logger:     o.Logger.With(zap.String("policy", name)),
			})
			if err != nil {
				return nil, fmt.Errorf("policy %s: %w", name, err)
			}
			st.verifiers = append(st.verifiers, v)
			verifier = v
		}
		p := &policy{
			name:   name,
			config: cp,
			endpoint: tokencache.NewEndpoint(tokencache.EndpointOptions{
				Client:      client,
				DefaultTTL:  time.Duration(cp.DefaultTTL),
				NegativeTTL: time.Duration(cp.NegativeTTL),
				Shared:      shared,
				Verifier:    verifier,
				// The failure budget protects callers' client ids: a
				// gateway-mode policy has none (config leaves it zero).
				MaxRejections:   c.MaxRejections,
				RejectionWindow: c.RejectionWindow,
				MaxConcurrent:   c.MaxConcurrentRequests,
			}),
			gateway:     c.GatewayMode(),
			program:     c.Program,
			forward:     c.Forward,
			username:    c.Username,
			needsClaims: cp.NeedsClaims(),
			tokenHeader: cp.TokenHeader,
			tokenPrefix: c.TokenPrefix,
			realm:       "Basic realm=" + strconv.Quote(name),
		}
		for i, out := range outcomes {
			decision := "deny"
			if outcome(i) == allow {
				decision = "allow"
			}
			p.checks[i] = o.Metrics.Checks.WithLabelValues(name, decision, out.code)
		}
		if p.gateway {
			p.creds = idp.Credentials{ID: c.ClientID, Secret: c.ClientSecret}
			p.key = p.endpoint.Key(p.creds)
		} else {
			p.removeAuthorization = !strings.EqualFold(p.tokenHeader, "authorization")
		}
		st.policies[name] = p
	}
	for _, r := range cfg.Routes {
		c := r.Compiled
		rt := route{host: c.Host, hostSuffix: c.HostSuffix, port: c.Port, pathPrefix: r.PathPrefix, policy: st.policies[r.Policy]}
		if rt.hostSuffix {
			rt.host = "." + rt.host
		}
		st.hostRoutes = st.hostRoutes || rt.host != ""
		if len(r.Header) > 0 {
			rt.header = make(map[string]string, len(r.Header))
			for k, v := range r.Header {
				rt.header[strings.ToLower(k)] = v
			}
		}
		st.routes = append(st.routes, rt)
	}
	st.defaultPolicy = st.policies[cfg.DefaultPolicy]
	return st, nil
}

// sharedTier returns the Redis tier of a store, or nil for the in-process tier alone.
func sharedTier(s *config.StoreCompiled, tokens Tokens) (*tokencache.Shared, error) {
	if s == nil || s.Redis == nil {
		return nil, nil
	}
	return tokens.Shared(s.Redis, s.KeyPrefix, []byte(s.EncryptionKey.Reveal()))
}

// close releases what the state holds once no request uses it any more.
func (st *state) close() {
	for _, v := range st.verifiers {
		v.Close()
	}
	for _, t := range st.transports {
		t.CloseIdleConnections()
	}
}

// selectPolicy picks the request's policy: the one its context extension
// names, else the first matching route's, else the default. A name that no
// policy has selects nothing: the request is denied, not given a default.
func (st *state) selectPolicy(in input) (*policy, error) {
	if name := in.contextExtension(st.selector); name != "" {
		if p := st.policies[name]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("context extension %s names no policy: %q", st.selector, name)
	}
	if len(st.routes) > 0 {
		var host, port string
		if st.hostRoutes {
			var err error
			if host, port, err = hostname.Normalize(in.host()); err != nil {
				return nil, fmt.Errorf("%w: %w", errAmbiguousHost, err)
			}
		}
		for i := range st.routes {
			if st.routes[i].matches(host, port, in.path(), in) {
				return st.routes[i].policy, nil
			}
		}
	}
	if st.defaultPolicy != nil {
		return st.defaultPolicy, nil
	}
	return nil, errNoMatch
}

var (
	errNoMatch       = errors.New("no context extension, route or default policy selects the request")
	errAmbiguousHost = errors.New("the request's host cannot be read as one name")
)

// matches reports whether the request (its normalized host, port and
// path) meets every condition of the route.
func (r *route) matches(host, port, path string, in input) bool {
	if r.host != "" {
		if r.hostSuffix && !strings.HasSuffix(host, r.host) || !r.hostSuffix && host != r.host {
			return false
		}
		if r.port != "" && port != r.port {
			return false
		}
	}
	if !strings.HasPrefix(path, r.pathPrefix) {
		return false
	}
	for name, want := range r.header {
		if got, ok := in.header(name); !ok || got != want {
			return false
		}
	}
	return true
}
