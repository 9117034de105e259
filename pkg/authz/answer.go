package authz

import (
	"encoding/json"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/pkg/dpop"
)

// Dynamic metadata keys, read by Envoy access logs as
// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:<key>)%.
const (
	metaUsername   = "clientusername"
	metaPolicy     = "policy"
	metaClientID   = "client_id"
	metaTokenCache = "token_cache"
	metaError      = "error"
)

// header is one header an allowed request is forwarded with.
type header struct{ name, value string }

// answer is everything an allow for one token under one policy repeats. It
// is built once per token and policy and kept in the token's memo, so that
// a cache hit builds nothing.
type answer struct {
	headers []header
	ok      *authv3.OkHttpResponse
	hit     *authv3.CheckResponse
	ath     string // DPoP: the token's hash, for every proof
}

// answer returns the decision's answer, building it on first use.
func (d *decision) answer() *answer {
	p, tok := d.policy, d.token
	return tok.Memo(p.answerKey, func() any {
		a := &answer{headers: []header{{p.tokenHeader, p.tokenPrefix + tok.AccessToken.Reveal()}}}
		for _, f := range p.forward {
			v, _ := tok.Claims.Text(f.Claim)
			if !safeHeaderValue(v) {
				v = "" // never forward CR, LF or NUL; still replace what the caller sent
			}
			a.headers = append(a.headers, header{f.Name, v})
		}
		a.ok = &authv3.OkHttpResponse{}
		for _, h := range a.headers {
			a.ok.Headers = append(a.ok.Headers, headerOption(h.name, h.value))
		}
		if p.removeAuthorization {
			a.ok.HeadersToRemove = []string{"authorization"}
		}
		a.hit = d.build(a.ok, "hit")
		if p.dpop != nil {
			a.ath = dpop.TokenHash(tok.AccessToken.Reveal())
		}
		return a
	}).(*answer)
}

// build returns an allow with ok and dynamic metadata whose token_cache is cache.
func (d *decision) build(ok *authv3.OkHttpResponse, cache string) *authv3.CheckResponse {
	meta := map[string]string{metaPolicy: d.policy.name, metaClientID: d.clientID, metaTokenCache: cache}
	if d.policy.username != nil {
		if u, found := d.token.Claims.Text(*d.policy.username); found && safeHeaderValue(u) {
			meta[metaUsername] = u
		}
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: metadata(meta),
	}
}

// response returns the CheckResponse of an allow: the shared one of a hit,
// not to be changed, or one built for a miss, which happens once per token.
// A DPoP allow adds the request's own proof to the shared headers.
func (d *decision) response() *authv3.CheckResponse {
	a := d.answer()
	ok := a.ok
	if d.proof != "" {
		ok = &authv3.OkHttpResponse{
			Headers:         append(a.ok.Headers[:len(a.ok.Headers):len(a.ok.Headers)], headerOption("DPoP", d.proof)),
			HeadersToRemove: a.ok.HeadersToRemove,
		}
		if d.source.Hit() {
			return &authv3.CheckResponse{Status: a.hit.Status, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}, DynamicMetadata: a.hit.DynamicMetadata}
		}
	}
	if d.source.Hit() {
		return a.hit
	}
	return d.build(ok, "miss")
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
		hs = append(hs, header{"www-authenticate", d.policy.realm})
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
