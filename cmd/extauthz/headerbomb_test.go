package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/harness"
	"github.com/extauthz/extauthz/pkg/config"
)

const (
	// headerBombStreams and headerBombFields are the header bomb of issue
	// 18: 10 streams of 450,000 fields "x-b: a", each a one-byte reference
	// to the dynamic table, 4.5 MB sent in all. HPACK counts a field as its
	// name, its value and 32 bytes (RFC 7541 §4.1), 36 here, so a stream's
	// header list is 16.2 MB: just under grpc-go's default limit (16 MiB),
	// which let the old server decode all of it.
	headerBombStreams = 10
	headerBombFields  = 450_000

	// maxHeaderBombGrowth bounds what the bomb adds to the server's peak
	// resident set (VmHWM over VmRSS before the bomb). Without a header-list
	// limit the server decoded each stream's 16.2 MB list into about 40 MB
	// of memory, and grew by 406 to 433 MB in all; with the 64 KiB limit it
	// drops the connection at the first CONTINUATION frame past the limit
	// and grows by 2.7 to 2.9 MB (connection buffers). 16 MiB is five times
	// that, and less than one decoded stream of the bomb would cost.
	maxHeaderBombGrowth = 16 << 20

	// heldOpenConns is how many connections TestGRPCHeaderListHeldOpen
	// fills with streams that wait for a request body that never comes:
	// more than one, to show that the bound is the process's.
	heldOpenConns = 10

	// maxHeldOpenGrowth bounds what heldOpenConns connections, each with
	// maxConcurrentStreams streams whose header lists are just under
	// maxHeaderBytes, add to the peak resident set. grpc-go keeps about
	// 275 KB for such a stream (a metadata map sized by its field count), so
	// without config.OpenHeaderLists one connection grew it by 280 MB and 10
	// by 2.8 GB. With it, 256 streams stay open in all and the rest are
	// refused: 86 to 96 MB measured, however many connections. 160 MiB
	// leaves room for the GC's headroom (more if GOGC is set) and fails if
	// the budget stops holding one connection's streams.
	maxHeldOpenGrowth = 160 << 20

	// h2Timeout bounds every wait on the server over a raw connection.
	h2Timeout = 15 * time.Second

	// indexedNewest is HPACK's one-byte indexed field (RFC 7541 §6.1: the
	// high bit, then the index in 7 bits) for the dynamic table's newest
	// entry, which follows the static table's 61 (§2.3.3).
	indexedNewest = 0x80 | 62
)

// bombField is the field the bomb repeats.
var bombField = hpack.HeaderField{Name: "x-b", Value: "a"}

// TestGRPCHeaderBomb sends issue 18's header bomb over raw HTTP/2. The
// server drops a connection as soon as a stream's header list passes
// maxHeaderBytes (x/net's framer refuses the next CONTINUATION frame, and
// grpc-go closes the connection without a GOAWAY), so the bomb's streams
// take one connection each; none reaches Check, the resident set grows by
// less than maxHeaderBombGrowth, and the server goes on answering.
func TestGRPCHeaderBomb(t *testing.T) {
	proc := startHeaderLimits(t)
	checks := checksTotal(t, proc.AdminAddress)
	baseline := resetPeak(t, proc.PID())

	var c *h2Client
	var outcomes []string
	var sent, maxRSS int64
	for range headerBombStreams {
		if c == nil || c.closed() {
			c = dialH2(t, proc.GRPCAddress)
			if got := c.settings[http2.SettingMaxHeaderListSize]; got != config.DefaultMaxGRPCHeaderBytes {
				t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE = %d, want %d", got, config.DefaultMaxGRPCHeaderBytes)
			}
		}
		id := c.openStream()
		block := c.headerBlock(headerBombFields)
		n, err := c.writeHeaders(id, block)
		sent += int64(n)
		c.barrier()
		o := c.outcome(id)
		if err != nil {
			o += fmt.Sprintf(" (the server took %d of the block's %d bytes: %v)", n, len(block), err)
		}
		outcomes = append(outcomes, o)
		if rss, _ := residentSet(t, proc.PID()); rss > maxRSS {
			maxRSS = rss
		}
	}
	_, peak := residentSet(t, proc.PID())
	t.Logf("baseline VmRSS %.1f MB; bomb sent %.1f MB; VmRSS at most %.1f MB; VmHWM %.1f MB: growth %.1f MB",
		mb(baseline), mb(sent), mb(maxRSS), mb(peak), mb(peak-baseline))
	for i, o := range outcomes {
		t.Logf("stream %d: %s", i+1, o)
		if !refused(o) {
			t.Errorf("bombed stream %d: %s, want RST_STREAM, the connection closed, or an error status", i+1, o)
		}
	}
	if peak-baseline > maxHeaderBombGrowth {
		t.Errorf("the bomb grew the resident set by %.1f MB, want at most %.1f MB", mb(peak-baseline), mb(maxHeaderBombGrowth))
	}
	if got := checksTotal(t, proc.AdminAddress); got != checks {
		t.Errorf("extauthz_checks_total went from %v to %v: a bombed stream reached Check", checks, got)
	}
	checkAllowed(t, proc.GRPCAddress)
}

// TestGRPCHeaderListHeldOpen measures the worst case within the limits:
// connections each holding maxConcurrentStreams streams whose header lists
// are just under maxHeaderBytes, open because the client never sends the
// request body. Each stream is held open or refused with
// RESOURCE_EXHAUSTED, none reaches Check, and the resident set stays
// bounded however many connections hold them. The README states these
// figures.
func TestGRPCHeaderListHeldOpen(t *testing.T) {
	proc := startHeaderLimits(t)
	checks := checksTotal(t, proc.AdminAddress)
	baseline := resetPeak(t, proc.PID())

	open := 0 // streams held open, all connections together
	for i := range heldOpenConns {
		c := dialH2(t, proc.GRPCAddress)
		streams := int(c.settings[http2.SettingMaxConcurrentStreams])
		if streams != config.DefaultMaxConcurrentStreams {
			t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", streams, config.DefaultMaxConcurrentStreams)
		}
		fields := (int(c.settings[http2.SettingMaxHeaderListSize]) - c.requestSize()) / int(bombField.Size())
		ids := make([]uint32, streams)
		for j := range ids {
			ids[j] = c.openStream()
			if _, err := c.writeHeaders(ids[j], c.headerBlock(fields)); err != nil {
				t.Fatalf("connection %d, stream %d: %v", i+1, j+1, err)
			}
		}
		if !c.barrier() {
			t.Fatalf("connection %d: %s", i+1, c.outcome(ids[0]))
		}
		exhausted := 0
		for _, id := range ids {
			switch o := c.outcome(id); o {
			case "open":
				open++
			case "HEADERS grpc-status " + strconv.Itoa(int(codes.ResourceExhausted)):
				exhausted++
			default:
				t.Fatalf("connection %d, stream %d: %s, want it open or RESOURCE_EXHAUSTED", i+1, id, o)
			}
		}
		rss, peak := residentSet(t, proc.PID())
		t.Logf("connection %d: %d streams of %d header bytes (%d fields): %d RESOURCE_EXHAUSTED, %d held open in all; VmRSS %.1f MB, VmHWM %.1f MB: growth %.1f MB",
			i+1, streams, c.requestSize()+fields*int(bombField.Size()), fields, exhausted, open, mb(rss), mb(peak), mb(peak-baseline))
	}
	// Without streams held open the figures would measure nothing.
	if open == 0 || open > config.OpenHeaderLists {
		t.Errorf("%d streams held open, want 1 to %d (config.OpenHeaderLists)", open, config.OpenHeaderLists)
	}
	if _, peak := residentSet(t, proc.PID()); peak-baseline > maxHeldOpenGrowth {
		t.Errorf("%d connections of held streams grew the resident set by %.1f MB, want at most %.1f MB",
			heldOpenConns, mb(peak-baseline), mb(maxHeldOpenGrowth))
	}
	if got := checksTotal(t, proc.AdminAddress); got != checks {
		t.Errorf("extauthz_checks_total went from %v to %v: a stream without a body reached Check", checks, got)
	}
	checkAllowed(t, proc.GRPCAddress)
}

// startHeaderLimits runs the binary with server.grpc at its defaults and
// warms it with one Check, so that what is set up lazily counts in the
// baseline.
func startHeaderLimits(t *testing.T) *harness.Process {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the resident set is read from /proc")
	}
	proc, _, _ := startConfig(t, `
server: {grpcAddress: "127.0.0.1:0", httpAddress: "", adminAddress: "127.0.0.1:0"}
policies:
  orders: {url: %[1]s}
`, nil)
	checkAllowed(t, proc.GRPCAddress)
	return proc
}

// checkAllowed sends a Check with the orders client's credentials over a
// new gRPC connection and fails the test unless it is allowed.
func checkAllowed(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"policy": "orders"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Host: "h", Path: "/", Headers: map[string]string{"authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("orders-app:s3cret"))},
		}},
	}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check: %v %v", resp, err)
	}
}

// checksTotal sums extauthz_checks_total over its labels.
func checksTotal(t *testing.T, adminAddress string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(scrape(t, adminAddress), "\n") {
		if !strings.HasPrefix(line, "extauthz_checks_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += v
	}
	return sum
}

// refused reports whether an outcome ends a stream with an error.
func refused(outcome string) bool {
	switch {
	case strings.HasPrefix(outcome, "RST_STREAM "), strings.HasPrefix(outcome, "connection closed"):
		return true
	case strings.HasPrefix(outcome, "HEADERS grpc-status "):
		return !strings.HasPrefix(outcome, "HEADERS grpc-status 0")
	}
	return false
}

// resetPeak resets pid's peak resident set (VmHWM) to its current one and
// returns that, in bytes. Where the kernel does not allow it, the peak
// stays the one since start, and growth is overstated, never understated.
func resetPeak(t *testing.T, pid int) int64 {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Logf("VmHWM is the peak since start: %v", err)
	}
	rss, _ := residentSet(t, pid)
	return rss
}

// residentSet returns pid's resident set (VmRSS) and its peak (VmHWM), in
// bytes.
func residentSet(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		name, value, _ := strings.Cut(line, ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		*dst = kb << 10
	}
	if rss == 0 || peak == 0 {
		t.Fatalf("no VmRSS or VmHWM in /proc/%d/status", pid)
	}
	return rss, peak
}

// mb converts bytes to megabytes (10⁶ bytes) for the logs.
func mb(n int64) float64 { return float64(n) / 1e6 }

// h2Client is a raw HTTP/2 connection (prior knowledge) to the gRPC
// listener. A goroutine reads every frame the server sends, so that the
// server never blocks writing to the test, and records how each stream was
// answered; only the test's goroutine writes.
type h2Client struct {
	t         *testing.T
	fr        *http2.Framer
	authority string
	settings  map[http2.SettingID]uint32 // the server's
	nextID    uint32
	sentSets  int // SETTINGS frames written

	enc      *hpack.Encoder
	encBuf   bytes.Buffer
	mirror   *hpack.Decoder // decodes what enc writes, as the server does
	mirrored []hpack.HeaderField

	events chan struct{} // a token after every frame read
	mu     sync.Mutex
	// Guarded by mu:
	answers map[uint32]string // stream → the server's first answer
	acks    int               // SETTINGS ACKs read
	goAway  string
	readErr error // why the reader stopped; nil while it reads
}

// dialH2 opens a connection, sends the client preface and SETTINGS, and
// reads the server's SETTINGS before anything else is written: a client
// must know the frame size its peer accepts. The connection closes with
// the test.
func dialH2(t *testing.T, addr string) *h2Client {
	t.Helper()
	c := &h2Client{
		t: t, fr: h2cWithin(t, addr, h2Timeout), authority: addr, settings: map[http2.SettingID]uint32{}, nextID: 1,
		events: make(chan struct{}, 1), answers: map[uint32]string{},
	}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.encBuf)
	c.mirror = hpack.NewDecoder(4096, func(f hpack.HeaderField) { c.mirrored = append(c.mirrored, f) })
	c.sentSets++ // h2cWithin wrote one
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok {
			if sf.IsAck() {
				c.acks++
				continue
			}
			_ = sf.ForeachSetting(func(s http2.Setting) error {
				c.settings[s.ID] = s.Val
				return nil
			})
			break
		}
	}
	if err := c.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	go c.read()
	return c
}

func (c *h2Client) read() {
	for {
		f, err := c.fr.ReadFrame()
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				c.acks++
			}
		case *http2.RSTStreamFrame:
			c.answer(f.StreamID, "RST_STREAM "+f.ErrCode.String())
		case *http2.MetaHeadersFrame:
			status := "none"
			for _, hf := range f.Fields {
				if hf.Name == "grpc-status" {
					status = hf.Value
				}
			}
			c.answer(f.StreamID, "HEADERS grpc-status "+status)
		case *http2.GoAwayFrame:
			c.goAway = fmt.Sprintf("GOAWAY %v %q", f.ErrCode, f.DebugData())
		}
		if err != nil {
			c.readErr = err
		}
		c.mu.Unlock()
		select {
		case c.events <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// answer records the server's first answer to stream id; mu is held.
func (c *h2Client) answer(id uint32, what string) {
	if _, ok := c.answers[id]; !ok {
		c.answers[id] = what
	}
}

// openStream returns the next client stream id.
func (c *h2Client) openStream() uint32 {
	id := c.nextID
	c.nextID += 2
	return id
}

// request returns the fields of a Check call, without its body.
func (c *h2Client) request() []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/envoy.service.auth.v3.Authorization/Check"},
		{Name: ":authority", Value: c.authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}
}

// requestSize is the request's fields' share of a header list.
func (c *h2Client) requestSize() int {
	n := 0
	for _, f := range c.request() {
		n += int(f.Size())
	}
	return n
}

// headerBlock returns a Check call's header block: the request's fields,
// then bombField n times. The encoder writes bombField last, so it is the
// dynamic table's newest entry (inserted on a connection's first stream,
// found there on the next ones), and the other n-1 are indexedNewest.
func (c *h2Client) headerBlock(n int) []byte {
	c.t.Helper()
	c.encBuf.Reset()
	for _, f := range append(c.request(), bombField) {
		if err := c.enc.WriteField(f); err != nil {
			c.t.Fatal(err)
		}
	}
	prefix := c.encBuf.Len()
	block := append(make([]byte, 0, prefix+n-1), c.encBuf.Bytes()...)
	block = append(block, bytes.Repeat([]byte{indexedNewest}, n-1)...)
	// The server's decoder has to see what this one does: every field the
	// encoder wrote (they change the dynamic table), then bombField again.
	c.mirrored = c.mirrored[:0]
	if _, err := c.mirror.Write(block[:prefix+1]); err != nil {
		c.t.Fatal(err)
	}
	if err := c.mirror.Close(); err != nil {
		c.t.Fatal(err)
	}
	if got, want := len(c.mirrored), len(c.request())+2; got != want || c.mirrored[got-1] != bombField {
		c.t.Fatalf("the header block decodes to %v, want the request, then %v twice", c.mirrored, bombField)
	}
	return block
}

// writeHeaders writes block as a HEADERS frame and as many CONTINUATION
// frames as the server's SETTINGS_MAX_FRAME_SIZE requires, without
// END_STREAM: the stream waits for a body. It returns the bytes of block
// written before an error.
func (c *h2Client) writeHeaders(id uint32, block []byte) (int, error) {
	size := 16 << 10 // RFC 9113's default
	if v, ok := c.settings[http2.SettingMaxFrameSize]; ok {
		size = int(v)
	}
	frag := block[:min(len(block), size)]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndHeaders: len(frag) == len(block)})
	n := 0
	for err == nil {
		n += len(frag)
		if n == len(block) {
			break
		}
		frag = block[n:min(len(block), n+size)]
		err = c.fr.WriteContinuation(id, n+len(frag) == len(block), frag)
	}
	return n, err
}

// barrier writes SETTINGS and waits for their ACK or for the connection to
// close, and reports whether the server acknowledged. The server handles
// frames in order: its ACK means that it has handled every frame written
// before.
func (c *h2Client) barrier() bool {
	c.t.Helper()
	// A write fails only on a broken connection, which the reader sees too.
	written := c.fr.WriteSettings() == nil
	if written {
		c.sentSets++
	}
	deadline := time.NewTimer(h2Timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		acked, closed := written && c.acks >= c.sentSets, c.readErr != nil
		c.mu.Unlock()
		if acked || closed {
			return acked
		}
		select {
		case <-c.events:
		case <-deadline.C:
			c.t.Fatalf("the server neither acknowledged SETTINGS nor closed the connection within %v", h2Timeout)
		}
	}
}

// closed reports whether the reader has stopped.
func (c *h2Client) closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr != nil
}

// outcome says how the server has answered stream id so far: "open" when
// it has not and the connection is up.
func (c *h2Client) outcome(id uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.answers[id]; ok {
		return a
	}
	if c.readErr != nil {
		if c.goAway != "" {
			return fmt.Sprintf("connection closed after %s: %v", c.goAway, c.readErr)
		}
		return fmt.Sprintf("connection closed: %v", c.readErr)
	}
	return "open"
}
