package authz

import (
	"bytes"
	"context"
	"errors"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"
)

// A cache hit's CheckResponse is kept encoded, as the bytes gRPC sends,
// around the token rather than with a copy of it: one cached client costs
// its token once, plus the two hundred bytes of the rest of its answer. A
// hit writes those bytes and the token's as they are (see Codec), with no
// message to build or marshal: one small allocation, for the parts.

// CheckResponse field numbers (envoy/service/auth/v3/external_auth.proto).
const (
	fieldStatus          = 1
	fieldOkResponse      = 3
	fieldDynamicMetadata = 4
	fieldOkHeaders       = 2 // OkHttpResponse.headers
)

// wireBuf is one part of an encoded answer. A pointer to it is a
// mem.Buffer that costs no allocation of its own, unlike a boxed SliceBuffer.
type wireBuf struct{ mem.SliceBuffer }

// wire is an encoded hit: front, then the token, then tail, with front and
// tail in one buffer. front holds the status field, the ok_response tag and
// length, and the ok response up to the token; tail the rest of it and the
// dynamic metadata, which starts at metaAt.
type wire struct {
	enc       string // front, then tail; a string, as it never changes
	frontLen  int32
	metaAt    int32 // in tail
	statusLen uint8 // bytes of the status field at the start of front
	lenLen    uint8 // bytes of ok_response's length, after its tag
}

func (w *wire) front() []byte { return readOnly(w.enc[:w.frontLen]) }
func (w *wire) tail() []byte  { return readOnly(w.enc[w.frontLen:]) }

// readOnly returns s's bytes without copying them: gRPC only reads them.
func readOnly(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

var errTokenNotInAnswer = errors.New("authz: the token is not in the encoded answer")

// encode keeps hit, whose ok response carries token once, encoded, with a
// reference to token rather than a copy of it.
func (w *wire) encode(hit *authv3.CheckResponse, token string) error {
	opts := protov2.MarshalOptions{Deterministic: true}
	status, err := opts.Marshal(hit.Status)
	if err != nil {
		return err
	}
	ok, err := opts.Marshal(hit.GetOkResponse())
	if err != nil {
		return err
	}
	meta, err := opts.Marshal(hit.DynamicMetadata)
	if err != nil {
		return err
	}
	at := bytes.Index(ok, []byte(token))
	if at < 0 || token == "" {
		return errTokenNotInAnswer
	}
	var enc []byte
	if hit.Status != nil {
		enc = protowire.AppendBytes(protowire.AppendTag(nil, fieldStatus, protowire.BytesType), status)
	}
	statusLen := len(enc)
	enc = protowire.AppendTag(enc, fieldOkResponse, protowire.BytesType)
	lenLen := protowire.SizeVarint(uint64(len(ok)))
	enc = protowire.AppendVarint(enc, uint64(len(ok)))
	enc = append(enc, ok[:at]...)
	frontLen := len(enc)
	enc = append(enc, ok[at+len(token):]...)
	metaAt := len(enc) - frontLen
	enc = protowire.AppendBytes(protowire.AppendTag(enc, fieldDynamicMetadata, protowire.BytesType), meta)
	*w = wire{enc: string(enc), frontLen: int32(frontLen), metaAt: int32(metaAt), statusLen: uint8(statusLen), lenLen: uint8(lenLen)}
	return nil
}

// wireOut is one response as gRPC writes it: the parts of an encoded hit.
type wireOut struct {
	bufs  [3]wireBuf
	parts [3]mem.Buffer
}

func newWireOut(front []byte, token string, tail []byte) *wireOut {
	o := &wireOut{bufs: [3]wireBuf{{front}, {readOnly(token)}, {tail}}}
	o.parts = [3]mem.Buffer{&o.bufs[0], &o.bufs[1], &o.bufs[2]}
	return o
}

// out returns the encoding as gRPC writes it, with token, the one it was
// encoded with (the answer's: the encoding refers to it, not a copy).
func (w *wire) out(token string) *wireOut { return newWireOut(w.front(), token, w.tail()) }

// with returns the encoding with one more header: the ok response grows by
// extra, an encoded OkHttpResponse.headers field placed after the others,
// so its length is written anew.
func (w *wire) with(token string, extra []byte) *wireOut {
	f, t := w.front(), w.tail()
	okStart := int(w.statusLen) + 1 + int(w.lenLen)
	okLen := len(f) - okStart + len(token) + int(w.metaAt) + len(extra)
	front := make([]byte, 0, len(f)+2)
	front = append(front, f[:w.statusLen+1]...)
	front = protowire.AppendVarint(front, uint64(okLen))
	front = append(front, f[okStart:]...)
	tail := make([]byte, 0, len(t)+len(extra))
	tail = append(tail, t[:w.metaAt]...)
	tail = append(tail, extra...)
	tail = append(tail, t[w.metaAt:]...)
	return newWireOut(front, token, tail)
}

// decode returns the encoding as a CheckResponse: for misses, HTTP mode
// and callers in the process, never for a gRPC hit.
func (w *wire) decode(token string) (*authv3.CheckResponse, error) { return w.out(token).decode() }

// decode returns o as a CheckResponse.
func (o *wireOut) decode() (*authv3.CheckResponse, error) {
	resp := &authv3.CheckResponse{}
	return resp, protov2.Unmarshal(mem.BufferSlice(o.parts[:]).Materialize(), resp)
}

// encodeHeaderField encodes one OkHttpResponse.headers field as
// headerOption(name, value) marshals, into one buffer: header {key, value},
// append {} (false), append_action OVERWRITE_IF_EXISTS_OR_ADD. A test
// holds it to proto.Marshal's output.
func encodeHeaderField(name, value string) []byte {
	// proto3 leaves empty strings out.
	var hv int
	if name != "" {
		hv += protowire.SizeTag(1) + protowire.SizeBytes(len(name))
	}
	if value != "" {
		hv += protowire.SizeTag(2) + protowire.SizeBytes(len(value))
	}
	opt := protowire.SizeTag(1) + protowire.SizeBytes(hv) + 2 + 2
	b := make([]byte, 0, protowire.SizeTag(fieldOkHeaders)+protowire.SizeBytes(opt))
	b = protowire.AppendTag(b, fieldOkHeaders, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(opt))
	b = protowire.AppendTag(b, 1, protowire.BytesType) // HeaderValueOption.header
	b = protowire.AppendVarint(b, uint64(hv))
	if name != "" {
		b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), name) // HeaderValue.key
	}
	if value != "" {
		b = protowire.AppendString(protowire.AppendTag(b, 2, protowire.BytesType), value) // HeaderValue.value
	}
	b = append(b, 0x12, 0x00)                                                      // append: BoolValue{false}
	b = append(b, 0x18, byte(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)) // append_action
	return b
}

// codec is gRPC's proto codec, but for an encoded hit, which it writes as
// it is.
type codec struct{ proto encoding.CodecV2 }

// Codec returns the codec the gRPC server must use (grpc.ForceServerCodecV2)
// for Check's encoded answers; every other message goes through gRPC's own
// proto codec.
func Codec() encoding.CodecV2 { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if o, ok := v.(*wireOut); ok {
		return o.parts[:], nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (codec) Name() string { return proto.Name }

// Register serves Check on gs. Its answers are CheckResponses or encoded
// hits, which only Codec can write: gs must have been made with
// grpc.ForceServerCodecV2(Codec()).
func (s *Server) Register(gs *grpc.Server) {
	desc := authv3.Authorization_ServiceDesc
	desc.HandlerType = (*any)(nil)
	desc.Methods = []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}}
	gs.RegisterService(&desc, s)
}

// checkMethod is Check's full method name.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Server)
	req := &authv3.CheckRequest{}
	if err := dec(req); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return s.check(ctx, req)
	}
	return interceptor(ctx, req, &grpc.UnaryServerInfo{Server: s, FullMethod: checkMethod}, func(ctx context.Context, req any) (any, error) {
		return s.check(ctx, req.(*authv3.CheckRequest))
	})
}
