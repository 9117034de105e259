package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

const benchYAML = `
policies:
  app:
    url: %[1]s
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    claims: Equals(` + "`grp`, `admin`" + `) && Contains(` + "`roles`, `write`" + `)
  gateway:
    url: %[1]s
    clientID: app
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp, X-Roles: roles}
  bound:
    url: %[1]s
    clientID: app
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    dpop: {algorithm: ES256}
  exchange:
    url: %[1]s
    grant: token_exchange
    clientID: app
    clientSecret: s3cret
    forwardHeaders: {X-Group: grp, X-Roles: roles}
    claims: Equals(` + "`grp`, `admin`" + `) && Contains(` + "`roles`, `write`" + `)
`

// benchSubject is a caller's token for the exchange policy, minted by the
// latest benchServer's IdP.
var benchSubject string

func benchServer(b *testing.B) *Server {
	b.Helper()
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(idp.Close)
	idp.AddClient("app", testidp.Client{Secret: "s3cret", Claims: map[string]any{"grp": "admin", "roles": []any{"read", "write"}}})
	cfg, err := config.Parse([]byte(fmt.Sprintf(benchYAML, idp.TokenURL)), "")
	if err != nil {
		b.Fatal(err)
	}
	cache := tokencache.New(tokencache.Options{MaxEntries: 1000})
	srv, _ := serve(b, cfg, cache, Options{Tokens: cache, Logger: zap.NewNop()})
	// A user's access token of the usual size (about 800 bytes).
	benchSubject = idp.Subject("user-0123456789", []string{"https://gateway.example.com"}, time.Now().Add(time.Hour),
		map[string]any{"scope": "openid profile orders.read orders.write", "azp": "web-frontend", "sid": strings.Repeat("s", 36),
			"name": "A. User", "email": "a.user@example.com", "roles": []any{"reader", "writer"}})
	return srv
}

// BenchmarkCheck is a cache hit: application mode, a claims expression and
// two forwarded headers, as Envoy sends it, decided and encoded as the gRPC
// server sends it.
func BenchmarkCheck(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  func() *authv3.CheckRequest
	}{
		{"application", func() *authv3.CheckRequest {
			return checkRequest("app", "api.example.com", "/orders", map[string]string{
				"authorization": basic("app", "s3cret"), "user-agent": "bench", "accept": "*/*", "x-request-id": "0123456789",
			})
		}},
		{"gateway", func() *authv3.CheckRequest {
			return checkRequest("gateway", "api.example.com", "/orders", map[string]string{"user-agent": "bench", "accept": "*/*"})
		}},
		// A token exchange: the caller's bearer token is the key. The
		// target is at most 1.1× application's.
		{"exchange", func() *authv3.CheckRequest {
			return checkRequest("exchange", "api.example.com", "/orders", map[string]string{
				"authorization": "Bearer " + benchSubject, "user-agent": "bench", "accept": "*/*", "x-request-id": "0123456789",
			})
		}},
		// A DPoP policy: the cached answer plus this request's proof. Compare
		// with BenchmarkES256Sign, its floor; the target is at most 1.25×.
		{"gateway_dpop", func() *authv3.CheckRequest {
			return checkRequest("bound", "api.example.com", "/orders", map[string]string{"user-agent": "bench", "accept": "*/*"})
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := benchServer(b)
			req := bc.req()
			ctx := context.Background()
			if resp, err := srv.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("warm-up: %v %v", resp, err)
			}
			// What the gRPC server does: decide, then encode with Codec.
			codec := Codec()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := srv.check(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				data, err := codec.Marshal(resp)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}

// BenchmarkES256Sign is one bare P-256 signature of a SHA-256 digest, the
// floor of a DPoP allow; next to BenchmarkCheck/gateway_dpop in the same run.
func BenchmarkES256Sign(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("the signing input of a proof"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, k, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckParallel is BenchmarkCheck's application-mode hit from
// every P at once: with -cpu 1,2 it shows whether the caches' locks (the
// credential cache's and the memory tier's sharded RWMutexes, the token's
// memo) contend: without contention ns/op halves with two CPUs.
func BenchmarkCheckParallel(b *testing.B) {
	srv := benchServer(b)
	req := checkRequest("app", "api.example.com", "/orders", map[string]string{
		"authorization": basic("app", "s3cret"), "user-agent": "bench", "accept": "*/*", "x-request-id": "0123456789",
	})
	ctx := context.Background()
	if resp, err := srv.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
		b.Fatalf("warm-up: %v %v", resp, err)
	}
	codec := Codec()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := srv.check(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			data, err := codec.Marshal(resp)
			if err != nil {
				b.Fatal(err)
			}
			data.Free()
		}
	})
}

// discardWriter is an http.ResponseWriter that keeps the headers, as
// net/http's does, and nothing else.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// BenchmarkServeHTTP is a cache hit in HTTP mode: application mode, a claims
// expression and two forwarded headers, the policy named by the path.
func BenchmarkServeHTTP(b *testing.B) {
	srv := benchServer(b)
	req := httptest.NewRequest(http.MethodGet, "/policy/app/orders/42", nil)
	req.Header.Set("Authorization", basic("app", "s3cret"))
	req.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: http.Header{}}
	srv.ServeHTTP(w, req)
	if w.status != http.StatusOK {
		b.Fatalf("warm-up: %d", w.status)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.h = make(http.Header, 4) // net/http gives every response its own
		srv.ServeHTTP(w, req)
	}
}

// BenchmarkServeFastHTTP is BenchmarkServeHTTP through fasthttp's handler,
// as plain HTTP/1 is served: the request parsed once, its answer reset
// after each check as fasthttp does between requests.
func BenchmarkServeFastHTTP(b *testing.B) {
	srv := benchServer(b)
	var fc fasthttp.RequestCtx
	fc.Request.SetRequestURI("/policy/app/orders/42")
	fc.Request.Header.Set("Authorization", basic("app", "s3cret"))
	fc.Request.Header.Set("User-Agent", "bench")
	srv.ServeFastHTTP(&fc)
	if fc.Response.StatusCode() != http.StatusOK || len(fc.Response.Header.Peek("X-Group")) == 0 {
		b.Fatalf("warm-up: %d %s", fc.Response.StatusCode(), fc.Response.Header.String())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fc.Response.Reset()
		srv.ServeFastHTTP(&fc)
	}
}

func BenchmarkParseBasic(b *testing.B) {
	h := basic("orders-app", "s3cret-s3cret-s3cret")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseBasic(h); err != nil {
			b.Fatal(err)
		}
	}
}
