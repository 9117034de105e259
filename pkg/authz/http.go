package authz

import (
	"net/http"
	"strings"
	"time"
)

// HTTP mode headers.
const (
	// PolicyHeader names the policy when the path does not. The proxy in
	// front must set it (overwriting what a caller sent), or callers could
	// choose their own policy.
	PolicyHeader = "X-Extauthz-Policy"
	// policyPathPrefix starts a path that names the policy: /policy/<name>/…
	policyPathPrefix = "/policy/"
)

// ServeHTTP is the HTTP authorization mode, for Envoy's http_service, Istio's
// envoyExtAuthzHttp, nginx auth_request and Traefik forwardAuth: any request
// is a check. The policy comes from a path /policy/<name>, else the
// X-Extauthz-Policy header, else the routes and default policy, matched on
// X-Forwarded-Host and X-Forwarded-Uri (or X-Original-URI) when present. An
// allow is 200 with the token and claim headers; a denial has the status,
// headers and JSON body of the outcomes table.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in := httpInput{r: r, policy: r.Header.Get(PolicyHeader)}
	if rest, ok := strings.CutPrefix(r.URL.Path, policyPathPrefix); ok {
		in.policy, _, _ = strings.Cut(rest, "/")
	}
	start := time.Now()
	ctx, span := s.startSpan(r.Context(), &in)
	d := s.decide(ctx, &in)
	s.record(&d, start)
	endSpan(span, &d)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if d.outcome == allow {
		for _, hd := range d.answer().headers {
			h[http.CanonicalHeaderKey(hd.name)] = []string{hd.value}
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "application/json")
	for _, hd := range d.denialHeaders() {
		h.Set(hd.name, hd.value)
	}
	w.WriteHeader(outcomes[d.outcome].status)
	_, _ = w.Write([]byte(errorBody(d.outcome)))
}

// httpInput reads an HTTP authorization request.
type httpInput struct {
	r      *http.Request
	policy string
}

// contextExtension returns the policy the path or header names: HTTP mode
// has no context extensions, and that is the one they would carry.
func (h *httpInput) contextExtension(string) string { return h.policy }

func (h *httpInput) host() string {
	if v := h.r.Header.Get("X-Forwarded-Host"); v != "" {
		return v
	}
	return h.r.Host
}

func (h *httpInput) path() string {
	for _, name := range []string{"X-Forwarded-Uri", "X-Original-Uri"} {
		if v := h.r.Header.Get(name); v != "" {
			return v
		}
	}
	return h.r.URL.RequestURI()
}

func (h *httpInput) header(name string) (string, bool) {
	v := h.r.Header.Values(name)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}
