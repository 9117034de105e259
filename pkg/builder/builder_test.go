package builder_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/testidp"
	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/builder"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// TestReloadsReuseParts: a reload that changes only how answers look
// builds nothing below the Runtime; one that changes a Redis setting
// replaces the pool and what uses it, and keeps the rest.
func TestReloadsReuseParts(t *testing.T) {
	single := redistest.Single(t)
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	load := func(header string, timeout int) *config.Config {
		cfg, err := config.Parse(fmt.Appendf(nil, `
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["%s"], timeoutMillis: %d}
policies:
  shared: {url: "%s", forwardHeaders: {%s: grp}}
  local: {url: "%s/other", store: {}}
`, single.Addr, timeout, idp.TokenURL, header, idp.TokenURL), "")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	_, b := newBuilder(t, time.Hour)
	if err := b.Apply(load("X-A", 100)); err != nil {
		t.Fatal(err)
	}
	parts, _ := b.Parts()
	if err := b.Apply(load("X-B", 100)); err != nil {
		t.Fatal(err)
	}
	if in, retiring := b.Parts(); in != parts || retiring != 0 {
		t.Errorf("a header change: %d parts in service (was %d), %d retiring; want nothing rebuilt", in, parts, retiring)
	}
	if err := b.Apply(load("X-B", 200)); err != nil {
		t.Fatal(err)
	}
	// The pool, the tier, and the endpoint that uses them.
	if in, retiring := b.Parts(); in != parts || retiring != 3 {
		t.Errorf("a Redis change: %d parts in service, %d retiring; want %d and 3", in, retiring, parts)
	}
}

// TestReplacedPartsOutliveTheirWork: a reload that replaces the Redis pool
// while a token request is under way leaves that request its pool: its
// token is stored in Redis when it arrives.
func TestReplacedPartsOutliveTheirWork(t *testing.T) {
	single := redistest.Single(t)
	idp, err := testidp.New(testidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("gw", testidp.Client{Secret: "gw-s3cret"})
	idp.SetBehavior(testidp.Behavior{Latency: 300 * time.Millisecond})
	load := func(timeout int) *config.Config {
		cfg, err := config.Parse(fmt.Appendf(nil, `
store:
  encryptionKey: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  redis: {endpoints: ["%s"], timeoutMillis: %d}
policies:
  gateway: {url: "%s", clientID: gw, clientSecret: gw-s3cret}
`, single.Addr, timeout, idp.TokenURL), "")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	srv, b := newBuilder(t, 0) // the default grace: the longest token request
	if err := b.Apply(load(1000)); err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	go func() {
		resp, err := srv.Check(context.Background(), soakGateway())
		done <- err == nil && resp.GetOkResponse() != nil
	}()
	for idp.Requests() == 0 { // the token request is under way
		time.Sleep(time.Millisecond)
	}
	if err := b.Apply(load(2000)); err != nil {
		t.Fatal(err)
	}
	if !<-done {
		t.Fatal("the check under way failed")
	}
	if _, retiring := b.Parts(); retiring == 0 {
		t.Error("the replaced pool was closed at once")
	}
	rc := redis.NewClient(&redis.Options{Addr: single.Addr})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), "extauthz:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	values := 0
	for _, k := range keys {
		if !strings.Contains(k, "lock:") && !strings.Contains(k, "accepted:") {
			values++
		}
	}
	if values != 1 {
		t.Errorf("Redis holds %d values (%v), want the token the replaced pool stored", values, keys)
	}
}

// newBuilder is an authz.Server and a Builder that serves it, over a new
// token cache, closed with the test.
func newBuilder(t *testing.T, grace time.Duration) (*authz.Server, *builder.Builder) {
	t.Helper()
	cache := tokencache.New(tokencache.Options{MaxEntries: 1000})
	t.Cleanup(func() { _ = cache.Close() })
	srv, err := authz.New(authz.Options{Tokens: cache})
	if err != nil {
		t.Fatal(err)
	}
	b := builder.New(builder.Deps{Serve: srv.Update, Cache: cache, Grace: grace})
	t.Cleanup(func() { _ = b.Close() })
	return srv, b
}
