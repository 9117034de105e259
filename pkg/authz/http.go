package authz

import (
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/extauthz/extauthz/pkg/urlpath"
)

// policyPathPrefix starts a path that names the policy: /policy/<name>/…
const policyPathPrefix = "/policy/"

// HTTPCheckTimeout bounds one HTTP-mode check, waiting on the token endpoint
// included: proxies send auth requests without a deadline of their own.
const HTTPCheckTimeout = 30 * time.Second

// Why an HTTP-mode request is refused before a policy is selected.
var (
	errPolicyPathChanged = errors.New("the path names a policy, but its dot segments lead elsewhere")
	errPathHeaders       = errors.New("the original path is given more than once, with different values")
	errPolicyHeaders     = errors.New("the policy header is given more than once")
)

// ServeHTTP is the HTTP authorization mode, for Envoy's http_service, Istio's
// envoyExtAuthzHttp, nginx auth_request, Traefik forwardAuth and Caddy
// forward_auth: any request is a check. The policy comes from a path
// /policy/<name>, else from the header server.http.policyHeader names (when
// it names one), else from the routes and the default policy, matched on
// X-Forwarded-Host and X-Forwarded-Uri (or X-Original-URI) when present.
// Every path is normalized first, and an ambiguous one is denied 400. An
// allow is 200 with the token and claim headers; a denial has the status,
// headers and JSON body of the outcomes table.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer s.recoverHTTP(w, start)
	st := s.state.Load()
	in := &httpInput{r: r}
	ctx, span := s.startSpan(r.Context(), in)
	var d decision
	if d.cause = in.parse(st.policyPath, st.policyHeader); d.cause != nil {
		d.outcome = denyAmbiguous
	} else {
		var q query
		if d, q = s.lookup(st, in); q.c != nil {
			// Only a check that asks the token cache may wait: its deadline
			// is made then, and its timer only if it does wait.
			lazy := &lazyDeadline{Context: ctx, deadline: start.Add(HTTPCheckTimeout)}
			d = s.fetch(lazy, d, q)
			lazy.stop()
		}
		d = s.conclude(d, in)
	}
	s.record(&d, start)
	endSpan(span, &d)
	writeHTTP(w, &d)
}

// noStore is every answer's Cache-Control: shared, never changed.
var noStore = []string{"no-store"}

// writeHTTP answers an HTTP-mode check with d.
func writeHTTP(w http.ResponseWriter, d *decision) {
	h := w.Header()
	h["Cache-Control"] = noStore
	if d.outcome == allow {
		hs, err := d.answer().httpHeaders()
		if err != nil { // the answer's own encoding does not decode: a bug
			http.Error(w, `{"error":"internal_error"}`, http.StatusInternalServerError)
			return
		}
		for _, hd := range hs {
			h[hd.key] = hd.values // shared by every hit: net/http only reads them
		}
		if d.proof != "" {
			h["Dpop"] = []string{d.proof}
		}
		if d.policy.removeList != "" {
			// The token travels in another header: the caller's Basic
			// credentials, or its own token, must not reach the upstream.
			// Envoy's http_service (and Istio's envoyExtAuthzHttp) remove
			// what this header names; nginx, Caddy and Traefik are
			// configured to (README).
			h.Set("X-Envoy-Auth-Headers-To-Remove", d.policy.removeList)
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
	r        *http.Request
	policy   string // named by the path or the policy header
	normPath string // the original request's path, normalized
}

// parse reads what selects the policy: the path, normalized, when
// policyPath lets it name one, and the policy header when policyHeader
// names one. A path whose dot segments lead into or out of /policy/<name>
// is refused, since who resolves them decides which policy it names; so are
// two differing original paths.
func (h *httpInput) parse(policyPath bool, policyHeader string) error {
	own := h.r.RequestURI
	if !strings.HasPrefix(own, "/") { // absolute form, or a request built in-process
		own = h.r.URL.EscapedPath()
	}
	norm, err := urlpath.Normalize(own)
	if err != nil {
		return err
	}
	raw := own
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	rawName, rawNamed := policyInPath(raw)
	name, named := policyInPath(norm)
	if policyPath && (rawNamed != named || rawName != name) {
		return errPolicyPathChanged
	}
	named = named && policyPath
	switch {
	case named:
		h.policy = name
	case policyHeader != "":
		// A proxy that adds its value after the caller's would leave the
		// caller's first: more than one is refused, not guessed at.
		v := h.r.Header[policyHeader]
		if len(v) > 1 {
			return errPolicyHeaders
		}
		if len(v) == 1 {
			h.policy = v[0]
		}
	}
	h.normPath = norm
	// The original path, when the proxy sends it apart from the check's own.
	var fwd []string
	for _, name := range [...]string{"X-Forwarded-Uri", "X-Original-Uri"} {
		for _, v := range h.r.Header[name] {
			p, err := urlpath.Normalize(v)
			if err != nil {
				return err
			}
			fwd = append(fwd, p)
		}
	}
	for _, p := range fwd {
		if p != fwd[0] {
			return errPathHeaders
		}
	}
	if len(fwd) > 0 {
		h.normPath = fwd[0]
	}
	return nil
}

// policyInPath returns the policy a path /policy/<name>[/…] names.
func policyInPath(p string) (name string, ok bool) {
	rest, ok := strings.CutPrefix(p, policyPathPrefix)
	if !ok {
		return "", false
	}
	name, _, _ = strings.Cut(rest, "/")
	return name, true
}

// contextExtension returns the policy the path or header names: HTTP mode
// has no context extensions, and that is the one they would carry.
func (h *httpInput) contextExtension(string) string { return h.policy }

func (h *httpInput) host() string {
	if v := first(h.r.Header["X-Forwarded-Host"]); v != "" {
		return v
	}
	return h.r.Host
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func (h *httpInput) path() string { return h.normPath }

// method is the original request's: the proxy's X-Forwarded-Method (Traefik,
// Caddy) or X-Original-Method (set by nginx's operator), else the check's
// own (Envoy's http_service keeps it).
func (h *httpInput) method() string {
	for _, name := range [...]string{"X-Forwarded-Method", "X-Original-Method"} {
		if v := first(h.r.Header[name]); v != "" {
			return v
		}
	}
	return h.r.Method
}

// scheme is the original request's, as X-Forwarded-Proto says; else http.
func (h *httpInput) scheme() string {
	if v := first(h.r.Header["X-Forwarded-Proto"]); v != "" {
		return v
	}
	return "http"
}

func (h *httpInput) header(name string) (string, bool) {
	v := h.r.Header[canonicalKey(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// canonicalKeys remembers the canonical form of the lower-case header
// names decisions look up: the program's own and the configuration's, a
// few dozen at most, never a caller's.
var canonicalKeys sync.Map

func canonicalKey(name string) string {
	if k, ok := canonicalKeys.Load(name); ok {
		return k.(string)
	}
	k := textproto.CanonicalMIMEHeaderKey(name)
	canonicalKeys.Store(name, k)
	return k
}

// lazyDeadline is a context whose deadline, and its timer, are made only
// when something asks for them: when a check waits on the token endpoint,
// not on a cache hit.
type lazyDeadline struct {
	context.Context
	deadline time.Time

	mu      sync.Mutex
	made    context.Context
	cancel  context.CancelFunc
	stopped bool
}

func (l *lazyDeadline) ctx() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.made == nil {
		l.made, l.cancel = context.WithDeadline(l.Context, l.deadline)
		if l.stopped {
			l.cancel()
		}
	}
	return l.made
}

func (l *lazyDeadline) Deadline() (time.Time, bool) { return l.deadline, true }
func (l *lazyDeadline) Done() <-chan struct{}       { return l.ctx().Done() }
func (l *lazyDeadline) Err() error                  { return l.ctx().Err() }

// stop releases the timer, if one was made; the context is done from then on.
func (l *lazyDeadline) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.cancel != nil {
		l.cancel()
	}
}
