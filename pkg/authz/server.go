// Package authz decides Envoy external-authorization checks: it selects the
// request's policy, works out which OAuth 2.0 client the request acts for,
// takes that client's access token from the token cache, checks its claims,
// and answers allow with the token and claim headers, or deny with the
// status of the outcomes table.
package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/pkg/dpop"
	"github.com/extauthz/extauthz/pkg/hostname"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/tokencache"
	"github.com/extauthz/extauthz/pkg/urlpath"
)

// Tokens is what the server needs of a token cache.
type Tokens interface {
	Token(ctx context.Context, e *tokencache.Endpoint, key tokencache.Key, creds idp.Credentials) (*tokencache.Token, tokencache.Source, error)
	// Current reports whether a token Token answered FromMemory may be
	// served again without asking (tokencache.Cache.Current).
	Current(t *tokencache.Token) bool
}

// Options configure a Server.
type Options struct {
	Tokens Tokens
	Logger *zap.Logger
	// Metrics counts checks; metrics.Nop() when nil.
	Metrics *metrics.Metrics
	// Tracer traces checks; none when nil. Checks join the trace of the
	// request headers Envoy forwards (traceparent).
	Tracer trace.Tracer
}

// Server answers ext_authz v3 Check requests. It is safe for concurrent use.
type Server struct {
	state   atomic.Pointer[state]
	tokens  Tokens
	log     *zap.Logger
	metrics *metrics.Metrics
	tracer  trace.Tracer
	tracing bool // a tracer was given
	// unselected counts denials before a policy was selected, by outcome.
	unselected [len(outcomes)]prometheus.Counter
	duration   [2]prometheus.Observer // check latency: deny, allow
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server, which denies every Check no_policy until a
// Runtime is put into service with Update.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Tokens == nil {
		return nil, errors.New("authz: no token source")
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Nop()
	}
	tracing := o.Tracer != nil
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	s := &Server{tokens: o.Tokens, log: o.Logger, metrics: o.Metrics, tracer: o.Tracer, tracing: tracing,
		duration: [2]prometheus.Observer{o.Metrics.CheckDuration.WithLabelValues("deny"), o.Metrics.CheckDuration.WithLabelValues("allow")},
	}
	for i, out := range outcomes {
		if outcome(i) != allow {
			s.unselected[i] = o.Metrics.Checks.WithLabelValues("", "deny", out.code)
		}
	}
	s.state.Store(&state{policies: map[string]*policy{}})
	return s, nil
}

// Check decides one request. It returns an error only for a CheckRequest
// without HTTP request attributes; every decision, allow or deny, is a
// CheckResponse. It is for callers in the process: the gRPC server (see
// Register) sends hits as they are kept, encoded.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	resp, err := s.check(ctx, req)
	if o, ok := resp.(*wireOut); ok {
		return o.decode()
	}
	if err != nil {
		return nil, err
	}
	return resp.(*authv3.CheckResponse), nil
}

// check is Check as the gRPC server answers it: a *CheckResponse, or a
// hit's encoding, a *wireOut.
func (s *Server) check(ctx context.Context, req *authv3.CheckRequest) (any, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil {
		return nil, status.Error(codes.InvalidArgument, "CheckRequest has no attributes.request.http")
	}
	start := time.Now()
	in := grpcInput{attrs: req.Attributes, req: httpReq}
	ctx, span := s.startSpan(ctx, &in)
	var d decision
	// The path is the caller's: it is normalized before anything reads it,
	// and one whose meaning depends on who decodes it selects nothing.
	if in.normPath, d.cause = urlpath.Normalize(httpReq.GetPath()); d.cause != nil {
		d.outcome = denyAmbiguous
	} else {
		d = s.decide(ctx, s.state.Load(), &in)
	}
	s.record(&d, start)
	endSpan(span, &d)
	if d.outcome == allow {
		return d.response()
	}
	return d.deniedResponse(), nil
}

// input is what a decision reads of a request, whatever protocol carried it.
type input interface {
	contextExtension(key string) string
	host() string
	// method and scheme are the original request's, as the proxy says.
	method() string
	scheme() string
	// path is the normalized request path (urlpath.Normalize).
	path() string
	// header looks a header up by its lower-case name.
	header(name string) (string, bool)
}

// decision is the result of one check.
type decision struct {
	outcome    outcome
	policy     *policy // nil for no_policy
	clientID   string
	token      *tokencache.Token
	source     tokencache.Source
	retryAfter time.Duration
	cause      error  // why a request was denied, for the log
	proof      string // DPoP: this request's proof
	ans        *answer
}

func (s *Server) decide(ctx context.Context, st *state, in input) decision {
	d, q := s.lookup(st, in)
	if q.c != nil {
		d = s.fetch(ctx, d, q)
	}
	return s.conclude(d, in)
}

// query is what a check asks the token cache for: its caller's token.
type query struct {
	c      *caller
	header string // where the caller's credentials or token came from
	fresh  bool   // c was read from header anew, not remembered
}

// lookup selects the policy and the caller. It returns a denial, or what
// the caller's last check got from memory when the token cache says its
// token is still current (no lookup), or else the query for
// fetch.
func (s *Server) lookup(st *state, in input) (decision, query) {
	p, err := st.selectPolicy(in)
	switch {
	case errors.Is(err, errAmbiguousHost):
		return decision{outcome: denyAmbiguous, cause: err}, query{}
	case err != nil:
		return decision{outcome: denyNoPolicy, cause: err}, query{}
	}
	var q query
	switch {
	case p.subject != nil:
		q.header, _ = in.header(p.subject.Header)
		if q.c, q.fresh, err = p.callers.subject(q.header, p, in); err != nil {
			o := denyMissingToken
			if errors.Is(err, errBadSubject) {
				o = denyInvalidToken
			}
			return decision{outcome: o, policy: p, cause: err}, query{}
		}
	case !p.gateway:
		q.header, _ = in.header("authorization")
		if q.c, q.fresh, err = p.callers.get(q.header, p.endpoint); err != nil {
			return decision{outcome: denyInvalidRequest, policy: p, cause: err}, query{}
		}
	default:
		q.c = p.self
	}
	d := decision{policy: p, clientID: q.c.id}
	if a := q.c.last.Load(); a != nil && !q.fresh && s.tokens.Current(a.token) {
		d.token, d.source, d.ans = a.token, tokencache.FromMemory, a
		return d, query{}
	}
	return d, q
}

// conclude turns a decision with a token into an allow, or the denial its
// answer says; a decision without one is a denial already.
func (s *Server) conclude(d decision, in input) decision {
	if d.token == nil {
		return d
	}
	var err error
	switch a := d.answer(); {
	case a.deny != allow:
		d.outcome, d.cause = a.deny, denyCauses[a.deny]
	case d.policy.dpop != nil:
		// The proof names this request: made for it, never cached.
		if d.proof, err = proofFor(d.policy.dpop, in, dpop.TokenHash(d.token.AccessToken.Reveal())); err != nil {
			d.outcome, d.cause = denyAmbiguous, err
			break
		}
		d.outcome = allow
	default:
		d.outcome = allow
	}
	return d
}

// fetch asks the token cache for q's caller's token under d's policy,
// remembering the caller once its credentials proved good, and what a hit
// got for its next check. On error, d is the denial.
func (s *Server) fetch(ctx context.Context, d decision, q query) decision {
	p, c := d.policy, q.c
	creds := c.creds(p)
	if a := p.actor; a != nil {
		// The actor token is the gateway's own, from its policy (a cache
		// hit but once in its lifetime); it is not part of the key.
		at, _, err := s.tokens.Token(ctx, a.endpoint, a.key, a.creds)
		if err != nil {
			o, retry := a.failure(err)
			return decision{outcome: o, policy: p, retryAfter: retry, cause: fmt.Errorf("the actor token of policy %s: %w", a.name, err)}
		}
		creds.Actor = at.AccessToken
	}
	var err error
	d.token, d.source, err = s.tokens.Token(ctx, p.endpoint, c.key, creds)
	if err != nil {
		d.token = nil
		d.outcome, d.retryAfter = p.failure(err)
		d.cause = err
		return d
	}
	if q.fresh {
		// Proven: these credentials got a token.
		if p.subject != nil {
			p.callers.rememberSubject(q.header, p, c)
		} else {
			p.callers.remember(q.header, c)
		}
	}
	if d.source == tokencache.FromMemory {
		c.keep(d.answer())
	}
	return d
}

// proofFor signs key's DPoP proof for the request: htm its method, htu its
// scheme, host and path (normalized, without query), ath the token's hash.
func proofFor(key *dpop.Key, in input, ath string) (string, error) {
	method := in.method()
	if len(method) > 32 || !httpguts.ValidHeaderFieldName(method) { // a method is an RFC 9110 token, as a field name is
		return "", errBadMethod
	}
	scheme := strings.ToLower(in.scheme())
	if scheme != "http" && scheme != "https" {
		scheme = "https"
	}
	host, port, err := hostname.Normalize(in.host())
	if err != nil || host == "" {
		return "", fmt.Errorf("%w: %w", errAmbiguousHost, err)
	}
	if port != "" && !(scheme == "https" && port == "443" || scheme == "http" && port == "80") {
		host += ":" + port
	}
	return key.Proof(method, scheme+"://"+host+in.path(), ath, "", time.Now())
}

var errBadMethod = errors.New("the request's method is not an HTTP token")

// denyCauses are why an answer denies every request with its token.
var denyCauses = map[outcome]error{
	denyInvalidTokenResponse: errors.New("the policy reads claims but the access token is not a JWT, or the answer does not encode"),
	denyInsufficientClaims:   errors.New("the claims expression is false"),
}

// failure maps a failed token fetch to an outcome.
func (p *policy) failure(err error) (outcome, time.Duration) {
	var e *idp.Error
	var refused *tokencache.RefusedError
	var subjectErr *tokencache.SubjectError
	switch {
	case errors.As(err, &subjectErr): // before idp.Error, which it wraps
		return denyInvalidToken, 0
	case errors.As(err, &e):
		switch e.Kind {
		case idp.KindUnavailable:
			return denyTemporarilyUnavailable, e.RetryAfter
		case idp.KindRejected:
			if p.gateway {
				return denyUpstreamCredentialsRejected, 0
			}
			return denyInvalidClient, 0
		case idp.KindForbidden:
			return denyAccessDenied, 0
		case idp.KindInvalidGrant:
			return denyInvalidToken, 0
		}
		return denyInvalidTokenResponse, 0
	case errors.As(err, &refused):
		if refused.Reason == tokencache.ReasonFailureBudget && p.subject != nil {
			return denyInvalidToken, refused.RetryAfter // this token was refused too often
		}
		if refused.Reason == tokencache.ReasonFailureBudget {
			return denyTooManyRejections, refused.RetryAfter
		}
		return denyTemporarilyUnavailable, refused.RetryAfter
	case errors.Is(err, tokencache.ErrExpired):
		return denyInvalidTokenResponse, 0
	default: // the caller's deadline passed or it went away while the endpoint was asked
		return denyTemporarilyUnavailable, 0
	}
}

// serverSpan is the option every Check span starts with.
var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// startSpan starts the Check's span in the trace the request carries. With
// tracing off it does nothing, so that it costs nothing.
func (s *Server) startSpan(ctx context.Context, in input) (context.Context, trace.Span) {
	if !s.tracing {
		return ctx, nil
	}
	ctx = propagation.TraceContext{}.Extract(ctx, carrier{in})
	return s.tracer.Start(ctx, "extauthz.Check", serverSpan...)
}

func endSpan(span trace.Span, d *decision) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("extauthz.decision", d.outcome.String()))
		if d.policy != nil {
			span.SetAttributes(attribute.String("extauthz.policy", d.policy.name))
		}
		if d.outcome == allow {
			span.SetAttributes(attribute.String("extauthz.token_source", d.source.String()))
		}
	}
	span.End()
}

// carrier reads trace headers from a request.
type carrier struct{ in input }

func (c carrier) Get(key string) string { v, _ := c.in.header(strings.ToLower(key)); return v }
func (c carrier) Set(string, string)    {}
func (c carrier) Keys() []string        { return nil }

// record counts, times and logs a decision.
func (s *Server) record(d *decision, start time.Time) {
	allowed := 0
	if d.outcome == allow {
		allowed = 1
	}
	s.duration[allowed].Observe(time.Since(start).Seconds())
	if d.policy == nil {
		s.unselected[d.outcome].Inc()
	} else {
		d.policy.checks[d.outcome].Inc()
	}
	s.logDecision(d)
}

func (s *Server) logDecision(d *decision) {
	level := zapcore.InfoLevel
	msg := "denied"
	if d.outcome == allow {
		level, msg = zapcore.DebugLevel, "allowed"
	}
	ce := s.log.Check(level, msg)
	if ce == nil {
		return
	}
	fields := []zap.Field{zap.String("code", d.outcome.String()), zap.Int("status", outcomes[d.outcome].status)}
	if d.policy != nil {
		fields = append(fields, zap.String("policy", d.policy.name))
	}
	if d.clientID != "" {
		fields = append(fields, zap.String("client_id", d.clientID))
	}
	if d.outcome == allow {
		fields = append(fields, zap.Stringer("token_source", d.source))
	}
	if d.cause != nil {
		fields = append(fields, zap.NamedError("reason", d.cause))
	}
	ce.Write(fields...)
}

// grpcInput reads a CheckRequest's attributes.
type grpcInput struct {
	attrs    *authv3.AttributeContext
	req      *authv3.AttributeContext_HttpRequest
	normPath string
}

func (g *grpcInput) contextExtension(key string) string { return g.attrs.GetContextExtensions()[key] }

func (g *grpcInput) host() string {
	if h := g.req.GetHost(); h != "" {
		return h
	}
	h, _ := g.header(":authority")
	return h
}

func (g *grpcInput) path() string { return g.normPath }

func (g *grpcInput) method() string { return g.req.GetMethod() }

func (g *grpcInput) scheme() string { return g.req.GetScheme() }

// header finds a header in headers (which Envoy fills with lower-case names)
// or in header_map (which Envoy fills instead with encode_raw_headers),
// ignoring case for callers that are not Envoy.
func (g *grpcInput) header(name string) (string, bool) {
	if v, ok := g.req.GetHeaders()[name]; ok {
		return v, true
	}
	for k, v := range g.req.GetHeaders() {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	for _, h := range g.req.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(h.GetKey(), name) {
			if h.GetValue() != "" {
				return h.GetValue(), true
			}
			return string(h.GetRawValue()), true
		}
	}
	return "", false
}
