package grpclimit

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestBudget: streams whose header lists would take the open total past
// the budget are refused at once; the bytes come back when a stream ends,
// whether it finishes, is cancelled, or its connection goes.
func TestBudget(t *testing.T) {
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})
	b := NewBudget(200_000, refused)
	srv := grpc.NewServer(b.ServerOption(), grpc.MaxHeaderListSize(1<<20))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	dial := func() (*grpc.ClientConn, healthpb.HealthClient) {
		conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, healthpb.NewHealthClient(conn)
	}
	big := metadata.Pairs("x-big", strings.Repeat("a", 60_000)) // about 60 KB of the budget each
	conn, client := dial()
	// watch opens a stream that stays open until its context ends.
	watch := func(c healthpb.HealthClient) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), big))
		w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return cancel, err
	}
	var cancels []context.CancelFunc
	for i := range 3 {
		cancel, err := watch(client)
		if err != nil {
			t.Fatalf("stream %d within the budget: %v", i, err)
		}
		cancels = append(cancels, cancel)
	}
	if _, err := watch(client); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a fourth stream past the budget: %v, want ResourceExhausted", err)
	}
	if n := testutil.ToFloat64(refused); n != 1 {
		t.Errorf("refused %v streams, want 1", n)
	}
	// Small streams still fit beside the large ones.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("a small call beside them: %v", err)
	}
	cancels[0]()
	waitOpen(t, b, func(n int64) bool { return n < 140_000 })
	if c, err := watch(client); err != nil {
		t.Errorf("after one stream ended: %v", err)
	} else {
		defer c()
	}
	// A connection that goes takes its streams' bytes with it.
	conn.Close()
	waitOpen(t, b, func(n int64) bool { return n == 0 })
	for _, c := range cancels {
		c()
	}
}

func waitOpen(t *testing.T, b *Budget, cond func(int64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(b.Open()) {
		if time.Now().After(deadline) {
			t.Fatalf("open header bytes stay at %d", b.Open())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
