package authz

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"

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
	errHostHeaders       = errors.New("X-Forwarded-Host is given more than once")
	errCredentialHeaders = errors.New("the Authorization header is given more than once")
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
	in := &httpInput{r: r}
	d := s.checkHTTP(r.Context(), in, start, nil)
	writeHTTP(w, &d)
}

// ServeFastHTTP is ServeHTTP for fasthttp, which serves plain HTTP/1 with
// less work per request than net/http; the answers are the same. A check
// that waits on the token endpoint stops waiting when its caller hangs up,
// if the connection can tell (HangUpWatcher).
func (s *Server) ServeFastHTTP(fc *fasthttp.RequestCtx) {
	start := time.Now()
	defer s.recoverFast(fc, start)
	if refuseFast(fc) {
		return
	}
	in := &httpInput{fc: fc}
	var watch func(cancel context.CancelFunc) (stop func())
	if hw, ok := fc.Conn().(HangUpWatcher); ok {
		watch = hw.WatchHangUp
	}
	d := s.checkHTTP(context.Background(), in, start, watch)
	writeFast(fc, &d)
}

// refuseFast answers, and closes the connection after, a request that
// net/http refuses and fasthttp would serve: one whose framing a proxy in
// front may read otherwise, so that what follows its headers could be
// taken for a request of its own (RFC 9112 §6.1, §5.1, §5.2), or one that
// asks for what is not served. It reports whether it did.
func refuseFast(fc *fasthttp.RequestCtx) bool {
	h := &fc.Request.Header
	status, why := 0, ""
	switch p := h.Protocol(); {
	case string(p) != "HTTP/1.1" && string(p) != "HTTP/1.0":
		status, why = http.StatusHTTPVersionNotSupported, "unsupported protocol version"
	default:
		status, why = rawHeaderProblem(h.RawHeaders())
	}
	if status == 0 {
		return false
	}
	fc.Error(why, status) // resets the response's headers: then
	fc.SetConnectionClose()
	return true
}

// rawHeaderProblem reads a request's header block as it came: a field name
// that is not a token (a space before the colon), a folded line, a
// Transfer-Encoding other than chunked alone, or an Expect other than
// 100-continue is refused, with the status net/http answers it with.
func rawHeaderProblem(raw []byte) (int, string) {
	transferEncodings := 0
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue // the block's end
		}
		if line[0] == ' ' || line[0] == '\t' {
			return http.StatusBadRequest, "folded header line"
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || !httpguts.ValidHeaderFieldName(string(name)) {
			return http.StatusBadRequest, "invalid header field name"
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			transferEncodings++
			if transferEncodings > 1 || !bytes.EqualFold(value, []byte("chunked")) {
				return http.StatusNotImplemented, "unsupported transfer encoding"
			}
		case bytes.EqualFold(name, []byte("Expect")):
			if !bytes.EqualFold(value, []byte("100-continue")) {
				return http.StatusExpectationFailed, "unsupported expectation"
			}
		}
	}
	return 0, ""
}

// HangUpWatcher is a connection that can tell when its peer hangs up while
// a request on it is served (internal/httpdeadline's): WatchHangUp calls
// cancel if it does, until stop, which returns once the watch has ended.
type HangUpWatcher interface {
	WatchHangUp(cancel context.CancelFunc) (stop func())
}

// checkHTTP decides an HTTP-mode check. Only a check that asks the token
// cache may wait: its deadline is made then, its timer only if it does
// wait, and its hang-up watch (when watch is given) only then.
func (s *Server) checkHTTP(ctx context.Context, in *httpInput, start time.Time, watch func(context.CancelFunc) func()) decision {
	st := s.state.Load()
	ctx, span := s.startSpan(ctx, in)
	var d decision
	if d.cause = in.parse(st.policyPath, st.policyHeader); d.cause != nil {
		d.outcome = denyAmbiguous
	} else {
		var q query
		if d, q = s.lookup(st, in); q.c != nil {
			if watch != nil {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				stop := watch(cancel)
				defer cancel()
				defer stop()
			}
			lazy := &lazyDeadline{Context: ctx, deadline: start.Add(HTTPCheckTimeout)}
			d = s.fetch(lazy, d, q)
			lazy.stop()
		}
		d = s.conclude(d, in)
	}
	s.record(&d, start)
	endSpan(span, &d)
	return d
}

// noStore is every answer's Cache-Control: shared, never changed.
var noStore = []string{"no-store"}

// removeHeader names the headers the proxy is to remove from the request.
const removeHeader = "X-Envoy-Auth-Headers-To-Remove"

// answerWriter is the response of either server.
type answerWriter interface {
	// share sets a header to values that every answer may share and no
	// one changes.
	share(key string, values []string)
	set(key, value string)
	write(status int, body string)
}

// writeAnswer answers an HTTP-mode check with d, through either server
// (generic, so that neither writer is boxed).
func writeAnswer[W answerWriter](w W, d *decision) {
	w.share("Cache-Control", noStore)
	if d.outcome == allow {
		hs, err := d.answer().httpHeaders()
		if err != nil { // the answer's own encoding does not decode: a bug
			d.outcome = denyInternal
			writeAnswer(w, d)
			return
		}
		for _, hd := range hs {
			w.share(hd.key, hd.values) // shared by every hit
		}
		if d.proof != "" {
			w.set("Dpop", d.proof)
		}
		if d.policy.removeList != "" {
			// The token travels in another header: the caller's Basic
			// credentials, or its own token, must not reach the upstream.
			// Envoy's http_service (and Istio's envoyExtAuthzHttp) remove
			// what this header names; nginx, Caddy and Traefik are
			// configured to (README).
			w.set(removeHeader, d.policy.removeList)
		}
		w.write(http.StatusOK, "")
		return
	}
	w.set("Content-Type", "application/json")
	for _, hd := range d.denialHeaders() {
		w.set(hd.name, hd.value)
	}
	w.write(outcomes[d.outcome].status, errorBody(d.outcome))
}

// netWriter is net/http's response: shared values go in as they are, as
// net/http only reads them.
type netWriter struct{ http.ResponseWriter }

func (w netWriter) share(key string, values []string) { w.Header()[key] = values }
func (w netWriter) set(key, value string)             { w.Header().Set(key, value) }
func (w netWriter) write(status int, body string) {
	w.WriteHeader(status)
	if body != "" {
		_, _ = w.Write([]byte(body))
	}
}

// writeHTTP answers an HTTP-mode check with d through net/http.
func writeHTTP(w http.ResponseWriter, d *decision) { writeAnswer(netWriter{w}, d) }

// fastWriter is fasthttp's response, which copies what it is given.
type fastWriter struct{ fc *fasthttp.RequestCtx }

func (w fastWriter) share(key string, values []string) {
	for i, v := range values {
		if i == 0 {
			w.fc.Response.Header.Set(key, v)
		} else {
			w.fc.Response.Header.Add(key, v)
		}
	}
}
func (w fastWriter) set(key, value string) { w.fc.Response.Header.Set(key, value) }
func (w fastWriter) write(status int, body string) {
	w.fc.SetStatusCode(status)
	if body != "" {
		w.fc.SetBodyString(body)
	}
}

// writeFast answers an HTTP-mode check with d through fasthttp.
func writeFast(fc *fasthttp.RequestCtx, d *decision) { writeAnswer(fastWriter{fc}, d) }

// httpInput reads an HTTP authorization request: net/http's (TLS, HTTP/2,
// tests) or fasthttp's (plain HTTP/1, ServeFastHTTP). What it returns of a
// fasthttp request is copied: fasthttp reuses the request's memory once the
// handler returns, and a caller, its credentials or an error may outlive it.
type httpInput struct {
	r        *http.Request
	fc       *fasthttp.RequestCtx
	policy   string // named by the path or the policy header
	normPath string // the original request's path, normalized
}

// values returns the first value of the header with canonical name key,
// and how many it has.
func (h *httpInput) values(key string) (string, int) {
	if h.fc == nil {
		vs := h.r.Header[key]
		if len(vs) == 0 {
			return "", 0
		}
		return vs[0], len(vs)
	}
	vs := h.fc.Request.Header.PeekAll(key)
	if len(vs) == 0 {
		return "", 0
	}
	return string(vs[0]), len(vs)
}

// count returns how many values the header with canonical name key has.
func (h *httpInput) count(key string) int {
	if h.fc == nil {
		return len(h.r.Header[key])
	}
	return len(h.fc.Request.Header.PeekAll(key))
}

// target is the request target's path and query, as sent.
func (h *httpInput) target() string {
	if h.fc == nil {
		if own := h.r.RequestURI; strings.HasPrefix(own, "/") {
			return own
		}
		return h.r.URL.EscapedPath() // absolute form, or a request built in-process
	}
	if own := h.fc.Request.Header.RequestURI(); len(own) > 0 && own[0] == '/' {
		return string(own)
	}
	return string(h.fc.URI().PathOriginal()) // absolute form
}

// parse reads what selects the policy: the path, normalized, when
// policyPath lets it name one, and the policy header when policyHeader
// names one. A path whose dot segments lead into or out of /policy/<name>
// is refused, since who resolves them decides which policy it names; so are
// two differing original paths.
func (h *httpInput) parse(policyPath bool, policyHeader string) error {
	own := h.target()
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
		v, n := h.values(policyHeader)
		if n > 1 {
			return errPolicyHeaders
		}
		h.policy = v
	}
	// The host a route matches, and the credentials: a second value is
	// the caller's or the proxy's, and which is not for us to guess.
	if h.count("X-Forwarded-Host") > 1 {
		return errHostHeaders
	}
	if h.count("Authorization") > 1 {
		return errCredentialHeaders
	}
	h.normPath = norm
	// The original path, when the proxy sends it apart from the check's own:
	// every value of both headers must normalize to the same.
	fwd, seen := "", false
	add := func(v string) error {
		p, err := urlpath.Normalize(v)
		switch {
		case err != nil:
			return err
		case seen && p != fwd:
			return errPathHeaders
		}
		fwd, seen = p, true
		return nil
	}
	for _, name := range [...]string{"X-Forwarded-Uri", "X-Original-Uri"} {
		if h.fc == nil {
			for _, v := range h.r.Header[name] {
				if err := add(v); err != nil {
					return err
				}
			}
			continue
		}
		for _, v := range h.fc.Request.Header.PeekAll(name) {
			if err := add(string(v)); err != nil {
				return err
			}
		}
	}
	if seen {
		h.normPath = fwd
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
	if v, _ := h.values("X-Forwarded-Host"); v != "" {
		return v
	}
	if h.fc == nil {
		return h.r.Host
	}
	return string(h.fc.Host())
}

func (h *httpInput) path() string { return h.normPath }

// method is the original request's: the proxy's X-Forwarded-Method (Traefik,
// Caddy) or X-Original-Method (set by nginx's operator), else the check's
// own (Envoy's http_service keeps it).
func (h *httpInput) method() string {
	for _, name := range [...]string{"X-Forwarded-Method", "X-Original-Method"} {
		if v, _ := h.values(name); v != "" {
			return v
		}
	}
	if h.fc == nil {
		return h.r.Method
	}
	switch m := h.fc.Method(); string(m) { // the common ones without a copy
	case http.MethodGet:
		return http.MethodGet
	case http.MethodPost:
		return http.MethodPost
	case http.MethodHead:
		return http.MethodHead
	default:
		return string(m)
	}
}

// scheme is the original request's, as X-Forwarded-Proto says; else http.
func (h *httpInput) scheme() string {
	if v, _ := h.values("X-Forwarded-Proto"); v != "" {
		return v
	}
	return "http"
}

func (h *httpInput) header(name string) (string, bool) {
	v, n := h.values(canonicalKey(name))
	return v, n > 0
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
