package authz

import (
	"bytes"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestEncodeHeaderField: the hand-written encoding is proto.Marshal's, for
// short and long names and values (one- and two-byte lengths).
func TestEncodeHeaderField(t *testing.T) {
	for _, tt := range []struct{ name, value string }{
		{"DPoP", "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig"},
		{"DPoP", strings.Repeat("x", 127)},
		{"DPoP", strings.Repeat("x", 128)},
		{"X-" + strings.Repeat("h", 200), strings.Repeat("v", 20000)},
		{"a", ""},
	} {
		opt, err := proto.MarshalOptions{Deterministic: true}.Marshal(headerOption(tt.name, tt.value))
		if err != nil {
			t.Fatal(err)
		}
		want := protowire.AppendBytes(protowire.AppendTag(nil, fieldOkHeaders, protowire.BytesType), opt)
		if got := encodeHeaderField(tt.name, tt.value); !bytes.Equal(got, want) {
			t.Errorf("%q=%.10q: got % x, want % x", tt.name, tt.value, got[:min(len(got), 40)], want[:min(len(want), 40)])
		}
	}
}

// TestWireWith: an encoded hit with a header added decodes to the hit with
// that header last, whatever the lengths (the ok response's length grows
// from one varint byte to two).
func TestWireWith(t *testing.T) {
	for _, tokenLen := range []int{10, 90, 120, 700, 20000} {
		token := strings.Repeat("t", tokenLen)
		hit := &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}, DynamicMetadata: metadata(map[string]string{"policy": "p"})}
		ok := hit.GetOkResponse()
		ok.Headers = append(ok.Headers, headerOption("authorization", "Bearer "+token), headerOption("x-group", "admin"))
		ok.HeadersToRemove = []string{"authorization"}
		var w wire
		if err := w.encode(hit, token); err != nil {
			t.Fatal(err)
		}
		plain, err := w.decode(token)
		if err != nil || !proto.Equal(plain, hit) {
			t.Fatalf("token of %d: the encoding decodes to %v (%v)", tokenLen, plain, err)
		}
		withProof, err := w.with(token, encodeHeaderField("DPoP", strings.Repeat("p", 60))).decode()
		if err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(hit).(*authv3.CheckResponse)
		want.GetOkResponse().Headers = append(want.GetOkResponse().Headers, headerOption("DPoP", strings.Repeat("p", 60)))
		if !proto.Equal(withProof, want) {
			t.Errorf("token of %d: with a proof it decodes to %v", tokenLen, withProof)
		}
	}
}
