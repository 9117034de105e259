package authz

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauthz/extauthz/pkg/builder"
	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/hostname"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// policy is a configured policy ready to serve requests.
type policy struct {
	name     string
	endpoint *tokencache.Endpoint
	gateway  bool
	creds    idp.Credentials // gateway mode: the policy's own
	key      tokencache.Key  // gateway mode: the key of creds

	program     *claims.Program
	forward     []builder.ForwardHeader
	username    *claims.Path
	needsClaims bool
	tokenHeader string
	tokenPrefix string
	dpop        *dpop.Key // signs a proof for every allowed request; nil without DPoP
	// answerKey names everything that shapes an allow answer: a reload
	// that changes none of it keeps the callers and their answers.
	answerKey answerShape
	// callers remembers application-mode Authorization headers, and a
	// delegated grant's caller tokens.
	callers *credentialCache
	// self is a gateway-mode policy's own client, as callers keeps those
	// of application mode.
	self *caller
	// checks counts decisions by outcome, resolved once per policy.
	checks [len(outcomes)]prometheus.Counter
	// removeHeaders are the caller's headers the upstream must not see:
	// its Basic credentials, or for a delegated grant its own token, when
	// the token travels in another header. removeList joins them for
	// X-Envoy-Auth-Headers-To-Remove.
	removeHeaders []string
	removeList    string
	realm         string // WWW-Authenticate value for 401s
	// subject, for a delegated grant, is where the caller's token is.
	subject *builder.Subject
	// actor, for a token exchange with an actor policy, is the
	// client-credentials policy whose token is the actor token.
	actor *policy
}

// route is a compiled builder.Route.
type route struct {
	host       string // normalized (hostname.Normalize); ".example.com" for "*.example.com"
	hostSuffix bool   // host matches as a suffix: "*.example.com"
	port       string // compared when set
	pathPrefix string
	header     map[string]string // lower-case names
	policy     *policy
}

// state is a builder.Runtime made ready to decide: policies with their
// counters and answer keys, routes pointing at them. It is immutable; the
// Server reads it through an atomic pointer, so that a reload swaps it
// without stopping requests. It owns no resource: the builder that built
// its endpoints closes what they hold.
type state struct {
	policies      map[string]*policy
	routes        []route
	defaultPolicy *policy
	selector      string // context extension key
	policyHeader  string // HTTP mode: the header that names a policy, canonical; none when empty
	policyPath    bool   // HTTP mode: a path /policy/<name> names the policy
	hostRoutes    bool   // a route matches on the host, so requests' hosts are read
}

// Update puts rt into service: Checks that start from now on decide with
// it, Checks in flight finish with what they started with. The remembered
// credentials of a policy whose endpoint stays are kept.
func (s *Server) Update(rt *builder.Runtime) error {
	st, err := s.compile(rt, s.state.Load())
	if err != nil {
		return err
	}
	s.state.Store(st)
	return nil
}

// compile makes rt ready to decide.
func (s *Server) compile(o *builder.Runtime, prev *state) (*state, error) {
	rt := &state{policies: map[string]*policy{}, selector: o.ContextExtension,
		policyHeader: canonicalPolicyHeader(o.PolicyHeader), policyPath: o.PolicyFromPath}
	for _, po := range o.Policies {
		if po.Endpoint == nil {
			return nil, fmt.Errorf("policy %s: no token endpoint", po.Name)
		}
		p := &policy{
			name:        po.Name,
			endpoint:    po.Endpoint,
			gateway:     po.Credentials.ID != "",
			program:     po.Program,
			forward:     po.Forward,
			username:    po.Username,
			needsClaims: po.Program != nil || len(po.Forward) > 0 || po.Username != nil,
			tokenHeader: po.TokenHeader,
			tokenPrefix: po.TokenPrefix,
			dpop:        po.DPoP,
			realm:       "Basic realm=" + strconv.Quote(po.Name),
			callers:     newCredentialCache(),
		}
		for i, out := range outcomes {
			decision := "deny"
			if outcome(i) == allow {
				decision = "allow"
			}
			p.checks[i] = s.metrics.Checks.WithLabelValues(po.Name, decision, out.code)
		}
		switch {
		case po.Subject != nil:
			p.creds, p.subject = po.Credentials, po.Subject
			p.realm = "Bearer realm=" + strconv.Quote(po.Name)
			if !strings.EqualFold(p.tokenHeader, p.subject.Header) {
				p.removeHeaders = []string{p.subject.Header}
			}
		case p.gateway:
			p.creds = po.Credentials
			p.key = p.endpoint.Key(p.creds)
			p.self = &caller{id: p.creds.ID, secret: p.creds.Secret, key: p.key}
		case !strings.EqualFold(p.tokenHeader, "authorization"):
			p.removeHeaders = []string{"authorization"}
		}
		p.removeList = strings.Join(p.removeHeaders, ",")
		p.answerKey = p.answerShape()
		if prev != nil {
			// The remembered callers stay while their keys are this
			// endpoint's and their last answers of this shape.
			if old := prev.policies[po.Name]; old != nil && old.endpoint == po.Endpoint && old.answerKey == p.answerKey {
				p.callers = old.callers
			}
		}
		rt.policies[po.Name] = p
	}
	for _, p := range rt.policies {
		if p.subject == nil || p.subject.ActorPolicy == "" {
			continue
		}
		if p.actor = rt.policies[p.subject.ActorPolicy]; p.actor == nil || !p.actor.gateway || p.actor.subject != nil {
			return nil, fmt.Errorf("policy %s: the actor policy %q is not a client-credentials policy of its own", p.name, p.subject.ActorPolicy)
		}
	}
	for _, r := range o.Routes {
		rp := rt.policies[r.Policy]
		if rp == nil {
			return nil, fmt.Errorf("a route names no policy: %q", r.Policy)
		}
		rte := route{host: r.Host, hostSuffix: r.HostSuffix, port: r.Port, pathPrefix: r.PathPrefix, policy: rp}
		if rte.hostSuffix {
			rte.host = "." + rte.host
		}
		rt.hostRoutes = rt.hostRoutes || rte.host != ""
		if len(r.Header) > 0 {
			rte.header = make(map[string]string, len(r.Header))
			for k, v := range r.Header {
				rte.header[strings.ToLower(k)] = v
			}
		}
		rt.routes = append(rt.routes, rte)
	}
	if o.DefaultPolicy != "" {
		if rt.defaultPolicy = rt.policies[o.DefaultPolicy]; rt.defaultPolicy == nil {
			return nil, fmt.Errorf("the default policy does not exist: %q", o.DefaultPolicy)
		}
	}
	return rt, nil
}

// answerShape names the shape of a policy's answers: a reload that keeps
// it keeps the policy's callers, and the answers they hold.
type answerShape [16]byte

// answerShape hashes what shapes the policy's answers for a token: its name
// (in the metadata), the claims expression, where the token goes, the
// forwarded headers and their claims, the username claim, and whether the
// caller's Authorization goes.
func (p *policy) answerShape() answerShape {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(p.name)
	field(strconv.FormatBool(p.needsClaims))
	if p.program != nil {
		field("claims:" + p.program.String())
	}
	field(p.tokenHeader)
	field(p.tokenPrefix)
	for _, f := range p.forward {
		field(f.Name)
		field(f.Claim.String())
	}
	if p.username != nil {
		field("username:" + p.username.String())
	}
	field(p.removeList)
	if p.subject != nil {
		field("subject:" + p.subject.Header)
	}
	if p.dpop != nil {
		field("dpop:" + p.dpop.Thumbprint())
	}
	return answerShape(h.Sum(nil))
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
			if port == "" { // "api.example.com" over https is api.example.com:443
				port = hostname.DefaultPort(in.scheme())
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

// canonicalPolicyHeader returns the policy header's canonical key, as
// net/http keeps request headers; "" stays "".
func canonicalPolicyHeader(name string) string {
	if name == "" {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}
