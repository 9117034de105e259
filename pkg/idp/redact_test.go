package idp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/testidp"
)

// Planted secrets: no error or log line may show them.
var planted = []string{"PLANTEDUSER", "PLANTEDPASS", "PLANTEDQUERY", "PLANTEDFRAG"}

// withCredentials puts planted secrets in the userinfo, query and
// fragment (when frag) of base, which has no query.
func withCredentials(t *testing.T, base string, frag bool) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("PLANTEDUSER", "PLANTEDPASS")
	u.RawQuery = "client_secret=PLANTEDQUERY&api_key=PLANTEDQUERY"
	if frag {
		u.Fragment = "PLANTEDFRAG"
	}
	return u.String()
}

// closedURL is an http URL where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func noPlanted(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range planted {
		if strings.Contains(text, s) {
			t.Errorf("%s shows %s: %s", what, s, text)
		}
	}
}

func logText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "%s %v\n", e.Message, e.ContextMap())
	}
	return b.String()
}

// TestTokenErrorsRedactURL: a token endpoint that cannot be reached, whose
// URL carries a query, is named without it in errors and retry logs.
func TestTokenErrorsRedactURL(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	base := closedURL(t) + "/token"
	c := newClient(t, Options{URL: base + "?client_secret=PLANTEDQUERY&api_key=PLANTEDQUERY", MaxRetries: 1, Logger: zap.New(core)})
	_, err := c.Token(context.Background(), app)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable {
		t.Fatalf("error %v, want unavailable", err)
	}
	t.Log(err)
	noPlanted(t, "the error", err.Error())
	noPlanted(t, "the error with %+v", fmt.Sprintf("%+v", err))
	noPlanted(t, "the logs", logText(logs))
	if logs.Len() == 0 {
		t.Error("no retry was logged")
	}
	if !errors.As(err, new(*net.OpError)) {
		t.Errorf("%v: the cause is lost", err)
	}

	if _, err := NewClient(Options{URL: "htt ps://PLANTEDUSER:PLANTEDPASS@h/?PLANTEDQUERY"}); err == nil {
		t.Error("NewClient took a URL that does not parse")
	} else {
		noPlanted(t, "NewClient's error", err.Error())
	}
}

// TestVerifierErrorsRedactURL: JWKS and discovery URLs with credentials, at
// endpoints that are unreachable or answer badly, are named redacted in
// Verify's errors and the JWKS refresh logs.
func TestVerifierErrorsRedactURL(t *testing.T) {
	s := newIdP(t, testidp.Options{})
	token := issued(t, s, "app")
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			// A document that speaks for someone else, naming URLs with credentials.
			fmt.Fprintf(w, `{"issuer": %q, "jwks_uri": %q}`,
				"https://PLANTEDUSER:PLANTEDPASS@other.example/?PLANTEDQUERY", "https://PLANTEDUSER@other.example/jwks?PLANTEDQUERY")
			return
		}
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	closed := closedURL(t)

	tests := []struct {
		name string
		give VerifierOptions
	}{
		{"JWKS unreachable", VerifierOptions{JWKSURL: withCredentials(t, closed+"/jwks", true)}},
		{"JWKS answers 500", VerifierOptions{JWKSURL: withCredentials(t, failing.URL+"/jwks", true)}},
		{"JWKS not parsable", VerifierOptions{JWKSURL: "http://PLANTEDUSER:PLANTEDPASS@127.0.0.1:port/jwks?PLANTEDQUERY"}},
		{"discovery unreachable", VerifierOptions{Issuer: withCredentials(t, closed, false)}},
		{"discovery answers 500", VerifierOptions{Issuer: withCredentials(t, failing.URL+"/sub", false)}},
		{"discovery for another issuer", VerifierOptions{Issuer: strings.Replace(failing.URL, "//", "//PLANTEDUSER:PLANTEDPASS@", 1)}},
		{"discovery not parsable", VerifierOptions{Issuer: "http://PLANTEDUSER:PLANTEDPASS@127.0.0.1:port?PLANTEDQUERY"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			tt.give.Logger = zap.New(core)
			tt.give.UnknownKeyRefresh = time.Millisecond
			v := newVerifier(t, tt.give)
			for range 2 { // the second time, a refresh for the unknown key
				err := v.Verify(context.Background(), token)
				if err == nil {
					t.Fatal("verified without keys")
				}
				t.Log(err)
				noPlanted(t, "Verify's error", err.Error())
				noPlanted(t, "Verify's error with %+v", fmt.Sprintf("%+v", err))
			}
			noPlanted(t, "the logs", logText(logs))
		})
	}
}

// TestRedactURLKeepsCauses: what redactURL returns still unwraps to the
// causes callers branch on.
func TestRedactURLKeepsCauses(t *testing.T) {
	cause := fmt.Errorf("storage for %q: %w", "https://u:PLANTEDPASS@h.example/jwks", keyfunc.ErrKeyfunc)
	err := redactURL(cause)
	noPlanted(t, "redactURL", err.Error())
	if !errors.Is(err, keyfunc.ErrKeyfunc) {
		t.Errorf("%v does not unwrap to keyfunc.ErrKeyfunc", err)
	}
	ue := &url.Error{Op: "Post", URL: "https://h.example/t?client_secret=PLANTEDQUERY", Err: context.DeadlineExceeded}
	if err := redactURL(ue); !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "PLANTEDQUERY") {
		t.Errorf("redactURL(%v) = %v", ue, err)
	}
	if redactURL(nil) != nil {
		t.Error("redactURL(nil) is not nil")
	}
	plain := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	if redactURL(plain) != plain {
		t.Error("an error without URLs is wrapped")
	}
}
