package authz

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/extauthz/extauthz/pkg/tokencache"
)

// TestTracing joins the trace Envoy forwards in traceparent and records
// the Check and its token request under it.
func TestTracing(t *testing.T) {
	f := newFixture(t, "")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	cache := tokencache.New(tokencache.Options{MaxEntries: 10})
	srv, _ := serve(t, f.cfg, cache, Options{Tokens: cache, Tracer: tp.Tracer("test")})
	f.srv = srv

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := checkRequest("orders", "h", "/", map[string]string{
		"authorization": basic("orders-app", "s3cret"),
		"traceparent":   "00-" + traceID + "-00f067aa0ba902b7-01",
	})
	if r := read(t, f.check(req)); r.status != 200 {
		t.Fatalf("check: %d", r.status)
	}
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	check, token := spans["extauthz.Check"], spans["extauthz.idp.Token"]
	if check == nil || token == nil {
		t.Fatalf("spans %v", spans)
	}
	if got := check.SpanContext().TraceID().String(); got != traceID || check.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("the check is not in the caller's trace: %s, parent %s", got, check.Parent().SpanID())
	}
	if token.SpanContext().TraceID() != check.SpanContext().TraceID() || token.Parent().SpanID() != check.SpanContext().SpanID() {
		t.Error("the token request is not a child of the check")
	}
	if check.SpanKind() != trace.SpanKindServer || token.SpanKind() != trace.SpanKindClient {
		t.Errorf("span kinds %v and %v", check.SpanKind(), token.SpanKind())
	}
	attrs := map[string]string{}
	for _, a := range check.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["extauthz.policy"] != "orders" || attrs["extauthz.decision"] != "ok" || attrs["extauthz.token_source"] != "endpoint" {
		t.Errorf("check attributes %v", attrs)
	}
}
