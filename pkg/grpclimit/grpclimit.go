// Package grpclimit bounds what gRPC callers can make extauthz hold in
// memory before any handler runs. HTTP/2 lets a caller open many streams on
// many connections and send each one's headers without ever sending its
// request: grpc-go bounds one stream's header list (MaxHeaderListSize) and
// one connection's streams (MaxConcurrentStreams), and Budget bounds the
// header lists of the streams open at once in the whole process, so that
// memory stays bounded however many connections a caller opens.
package grpclimit

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// fieldOverhead is what HTTP/2 adds to each header field's name and value
// when it counts a header list (RFC 9113 §6.5.2).
const fieldOverhead = 32

// Budget admits a stream while the header lists of the streams open at
// once stay within its bytes; a stream beyond is refused with
// RESOURCE_EXHAUSTED as soon as its headers are read. Envoy's Checks carry
// a few hundred bytes of headers each, so only streams with large header
// lists, held open, run into it.
type Budget struct {
	max     int64
	open    atomic.Int64
	refused prometheus.Counter
}

// NewBudget returns a budget of max header bytes; refused, if not nil,
// counts the streams it refuses.
func NewBudget(max int64, refused prometheus.Counter) *Budget {
	return &Budget{max: max, refused: refused}
}

// errExhausted is the refusal: RESOURCE_EXHAUSTED, as for a message too large.
var errExhausted = status.Error(codes.ResourceExhausted, "too many header bytes in open streams: try again")

// ServerOption installs the budget as the server's tap handle.
func (b *Budget) ServerOption() grpc.ServerOption { return grpc.InTapHandle(b.admit) }

// admit charges a new stream's header list to the budget, and gives it back
// when the stream ends, however it ends: grpc-go cancels a stream's context
// when the stream closes, is reset, or its connection goes.
func (b *Budget) admit(ctx context.Context, info *tap.Info) (context.Context, error) {
	n := int64(0)
	for k, vs := range info.Header {
		for _, v := range vs {
			n += int64(len(k) + len(v) + fieldOverhead)
		}
	}
	if b.open.Add(n) > b.max {
		b.open.Add(-n)
		if b.refused != nil {
			b.refused.Inc()
		}
		return ctx, errExhausted
	}
	context.AfterFunc(ctx, func() { b.open.Add(-n) })
	return ctx, nil
}

// Open returns the header bytes charged to streams open now.
func (b *Budget) Open() int64 { return b.open.Load() }
