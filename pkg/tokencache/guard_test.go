package tokencache

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/idp"
)

func testEndpoint(t *testing.T, limit int) *Endpoint {
	t.Helper()
	c, err := idp.NewClient(idp.Options{URL: "https://idp.invalid/token"})
	if err != nil {
		t.Fatal(err)
	}
	return NewEndpoint(EndpointOptions{Client: c, MaxRejections: limit, RejectionWindow: time.Minute})
}

// TestBudgetsStayBounded: callers choose client ids, so the ids whose
// rejections are counted are bounded, and a record with a request under
// way is never dropped (its budget would reset).
func TestBudgetsStayBounded(t *testing.T) {
	b, e, now := newBudgets(), testEndpoint(t, 1), time.Now()
	pending, err := b.admit(e, "victim", testKey("victim"), false, now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxBudgetClients + 500 {
		id := fmt.Sprintf("flood-%d", i)
		done, err := b.admit(e, id, testKey(id), false, now.Add(time.Duration(i)))
		if err != nil {
			t.Fatal(err)
		}
		done(true, false)
	}
	if n := len(b.clients); n > maxBudgetClients {
		t.Errorf("%d client ids counted, want at most %d", n, maxBudgetClients)
	}
	if _, err := b.admit(e, "victim", testKey("victim-2"), false, now); err == nil {
		t.Error("the victim's record was dropped while its request was under way")
	}
	pending(true, false)
}

func TestBudgetRetryAfter(t *testing.T) {
	b, e, now := newBudgets(), testEndpoint(t, 2), time.Now()
	for i := range 2 {
		done, err := b.admit(e, "app", testKey(fmt.Sprint(i)), false, now.Add(time.Duration(i)*10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		done(true, false)
	}
	_, err := b.admit(e, "app", testKey("x"), false, now.Add(30*time.Second))
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Reason != ReasonFailureBudget || refused.RetryAfter != 30*time.Second {
		t.Fatalf("got %v, want a refusal for the 30 s until the first rejection leaves the window", err)
	}
	// One rejection left the window: one more attempt.
	if _, err := b.admit(e, "app", testKey("y"), false, now.Add(61*time.Second)); err != nil {
		t.Errorf("after the first rejection left the window: %v", err)
	}
	// No budget: never refused.
	off := testEndpoint(t, 0)
	for range 10 {
		done, err := b.admit(off, "app", testKey("z"), false, now)
		if err != nil {
			t.Fatal(err)
		}
		done(true, false)
	}
}

func TestBulkheadWaitsUntilTheDeadline(t *testing.T) {
	bh := &bulkhead{slots: make(chan struct{}, 1)}
	release, err := bh.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var refused *RefusedError
	if _, err := bh.acquire(ctx); !errors.As(err, &refused) || refused.Reason != ReasonConcurrencyLimit {
		t.Errorf("a full bulkhead: %v, want a concurrency_limit refusal", err)
	}
	release()
	if r, err := bh.acquire(context.Background()); err != nil {
		t.Errorf("after a release: %v", err)
	} else {
		r()
	}
}
