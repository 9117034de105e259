package authz

import (
	"encoding/json"
	"errors"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	protov2 "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/pkg/claims"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// Dynamic metadata keys, read by Envoy access logs as
// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:<key>)%.
const (
	metaUsername   = "clientusername"
	metaPolicy     = "policy"
	metaClientID   = "client_id"
	metaTokenCache = "token_cache"
	metaError      = "error"
	metaSubject    = "sub" // the exchanged token's subject, for a delegated grant
)

// header is one header an allowed request is forwarded with.
type header struct{ name, value string }

// httpHeader is a header as HTTP mode writes it: its canonical key, and a
// value slice shared by every hit.
type httpHeader struct {
	key    string
	values []string
}

// answer is everything the decisions for one token under one policy
// repeat: the claims' verdict, and for an allow the hit's gRPC encoding.
// It is built once per token and policy, from claims decoded for the
// purpose and then dropped, and kept with the token (Token.Keep), so that a cache
// hit decodes and builds nothing. It holds no copy of the token: the
// encoding refers to the token's bytes (wire.go). What is rarely needed —
// a miss's response, HTTP mode's headers — is decoded from the encoding.
type answer struct {
	wire  wire
	deny  outcome           // allow, or why every request with this token is denied
	token *tokencache.Token // the token it answers with
	shape *answerShape      // its policy's shape of answer
	// headers are HTTP mode's, decoded from wire on first use.
	headers atomic.Pointer[[]httpHeader]
}

// answer returns the decision's answer: the one it was given (its
// caller's), or the one kept with its token for its policy's shape of
// answer, made on first use.
func (d *decision) answer() *answer {
	if d.ans == nil {
		shape := &d.policy.answerKey
		d.ans = d.token.Keep(func(v any) bool { return *v.(*answer).shape == *shape }, func() any {
			a := d.make()
			a.token, a.shape = d.token, shape
			return a
		}).(*answer)
	}
	return d.ans
}

// make makes the answer of the decision's token under its policy.
func (d *decision) make() *answer {
	p, tok := d.policy, d.token
	var c *claims.Claims
	if p.needsClaims {
		if c = tok.Claims(); c == nil {
			return &answer{deny: denyInvalidTokenResponse}
		}
	}
	if p.program != nil && !p.program.Eval(c) {
		return &answer{deny: denyInsufficientClaims}
	}
	a := &answer{}
	ok := &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{headerOption(p.tokenHeader, p.tokenPrefix+tok.AccessToken.Reveal())}}
	for _, f := range p.forward {
		v, _ := c.Text(f.Claim)
		if !safeHeaderValue(v) {
			v = "" // never forward CR, LF or NUL; still replace what the caller sent
		}
		ok.Headers = append(ok.Headers, headerOption(f.Name, v))
	}
	ok.HeadersToRemove = p.removeHeaders
	meta := map[string]string{metaPolicy: p.name, metaClientID: d.clientID, metaTokenCache: "hit"}
	if p.subject != nil {
		if sc := tok.Claims(); sc != nil {
			if sub, found := sc.Text(subClaim); found && safeHeaderValue(sub) {
				meta[metaSubject] = sub
			}
		}
	}
	if p.username != nil {
		if u, found := c.Text(*p.username); found && safeHeaderValue(u) {
			meta[metaUsername] = u
		}
	}
	hit := &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: metadata(meta),
	}
	if err := a.wire.encode(hit, tok.AccessToken.Reveal()); err != nil {
		// idp takes only printable ASCII tokens, and claims decode to
		// UTF-8: an answer that does not encode is a bug, and denies.
		return &answer{deny: denyInvalidTokenResponse}
	}
	return a
}

// message returns the hit as a CheckResponse.
func (a *answer) message() (*authv3.CheckResponse, error) {
	return a.wire.decode(a.token.AccessToken.Reveal())
}

// httpHeaders returns the headers an allowed request is forwarded with,
// decoded once per answer and kept beside it: HTTP mode writes them on
// every hit, and only HTTP mode pays for them.
func (a *answer) httpHeaders() ([]httpHeader, error) {
	if hs := a.headers.Load(); hs != nil {
		return *hs, nil
	}
	m, err := a.message()
	if err != nil {
		return nil, err
	}
	var hs []httpHeader
	for _, o := range m.GetOkResponse().GetHeaders() {
		hs = append(hs, httpHeader{textproto.CanonicalMIMEHeaderKey(o.GetHeader().GetKey()), []string{o.GetHeader().GetValue()}})
	}
	if hs == nil {
		return nil, errors.New("authz: an allow without headers")
	}
	a.headers.Store(&hs)
	return hs, nil
}

// response returns the answer to an allow: a hit's encoding, shared and
// written as it is, or a CheckResponse made for a miss, once per token. A
// DPoP allow adds the request's own proof.
func (d *decision) response() (any, error) {
	a := d.answer()
	if d.source.Hit() {
		if d.proof == "" {
			return a.wire.out(a.token.AccessToken.Reveal()), nil
		}
		return a.wire.with(a.token.AccessToken.Reveal(), encodeHeaderField("DPoP", d.proof)), nil
	}
	m, err := a.message()
	if err != nil {
		return nil, err
	}
	m = protov2.Clone(m).(*authv3.CheckResponse)
	if !d.source.Hit() {
		m.DynamicMetadata.Fields[metaTokenCache] = structpb.NewStringValue("miss")
	}
	if d.proof != "" {
		ok := m.GetOkResponse()
		ok.Headers = append(ok.Headers, headerOption("DPoP", d.proof))
	}
	return m, nil
}

// deniedResponse builds the CheckResponse of a denial.
func (d *decision) deniedResponse() *authv3.CheckResponse {
	o := outcomes[d.outcome]
	denied := &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(o.status)},
		Headers: []*corev3.HeaderValueOption{headerOption("content-type", "application/json")},
		Body:    errorBody(d.outcome),
	}
	for _, h := range d.denialHeaders() {
		denied.Headers = append(denied.Headers, headerOption(h.name, h.value))
	}
	meta := map[string]string{metaError: o.code}
	if d.policy != nil {
		meta[metaPolicy] = d.policy.name
	}
	if d.clientID != "" {
		meta[metaClientID] = d.clientID
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(o.grpc), Message: o.code},
		HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
		DynamicMetadata: metadata(meta),
	}
}

// denialHeaders returns WWW-Authenticate for a 401, and Retry-After when known.
func (d *decision) denialHeaders() []header {
	var hs []header
	if outcomes[d.outcome].status == 401 && d.policy != nil {
		realm := d.policy.realm
		if d.outcome == denyInvalidToken {
			realm += `, error="invalid_token"` // RFC 6750 §3
		}
		hs = append(hs, header{"www-authenticate", realm})
	}
	if d.retryAfter > 0 {
		secs := int64((d.retryAfter + 999_999_999) / 1_000_000_000) // round up
		hs = append(hs, header{"retry-after", strconv.FormatInt(secs, 10)})
	}
	return hs
}

// errorBodies holds the JSON body of every outcome, built once.
var errorBodies = func() []string {
	bodies := make([]string, len(outcomes))
	for i, o := range outcomes {
		b, _ := json.Marshal(map[string]string{"error": o.code, "error_description": o.description})
		bodies[i] = string(b)
	}
	return bodies
}()

func errorBody(o outcome) string { return errorBodies[o] }

// noAppend is the append of every header option; shared, never changed.
var noAppend = wrapperspb.Bool(false)

// headerOption sets a header, replacing any header of that name: append is
// false for old Envoys and append_action says the same for new ones.
func headerOption(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: name, Value: value},
		//lint:ignore SA1019 Envoys before append_action read only append; the SPEC asks for both.
		Append:       noAppend,
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// metadata builds dynamic metadata. Protobuf strings must be UTF-8, so
// anything else is mended rather than failing the response.
func metadata(m map[string]string) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(m))
	for k, v := range m {
		fields[k] = structpb.NewStringValue(strings.ToValidUTF8(v, "\uFFFD"))
	}
	return &structpb.Struct{Fields: fields}
}

// safeHeaderValue reports whether v can travel in a header: no CR, LF, NUL
// or other control character but tab.
func safeHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
