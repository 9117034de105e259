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
// rejections are counted are bounded; a flood of other ids does not reset
// the budget of the id under attack, which stays in recent use.
func TestBudgetsStayBounded(t *testing.T) {
	b, e, now := newBudgets(), testEndpoint(t, 1), time.Now()
	done, err := b.admit(e, "victim", testKey("victim"), false, now)
	if err != nil {
		t.Fatal(err)
	}
	done(true, false)
	for i := range maxBudgetClients + 500 {
		at := now.Add(time.Duration(i) * time.Millisecond)
		id := fmt.Sprintf("flood-%d", i)
		done, err := b.admit(e, id, testKey(id), false, at)
		if err != nil {
			t.Fatal(err)
		}
		done(true, false)
		if i%50 == 0 { // the attack on the victim goes on
			if _, err := b.admit(e, "victim", testKey(fmt.Sprint("guess", i)), false, at); err == nil {
				t.Fatalf("the victim's budget was reset after %d other ids", i)
			}
		}
	}
	if n := b.clients.Len(); n > maxBudgetClients {
		t.Errorf("%d client ids counted, want at most %d", n, maxBudgetClients)
	}
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
