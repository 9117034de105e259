package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/pkg/secret"
)

var zapNop = zap.NewNop()

// TestAuthorize decides admin calls by what the caller brings: an address
// is worth nothing, loopback included (a sidecar proxy makes every mesh
// caller loopback); the socket's file mode is a credential.
func TestAuthorize(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	loopback := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 40000}
	loopback6 := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 40000}
	sidecar := &net.TCPAddr{IP: net.ParseIP("127.0.0.6"), Port: 40000} // Istio's inbound passthrough
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 40000}
	remote := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 40000}
	socket := &net.UnixAddr{Name: "@", Net: "unix"}
	verified := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}}
	unverified := credentials.TLSInfo{State: tls.ConnectionState{}}
	tests := []struct {
		name   string
		auth   Auth
		addr   net.Addr
		socket bool
		tls    credentials.AuthInfo
		bearer string
		want   codes.Code
	}{
		{name: "open, loopback", addr: loopback, want: codes.Unimplemented},
		{name: "open, IPv6 loopback", addr: loopback6, want: codes.Unimplemented},
		{name: "open, a mesh caller through the sidecar", addr: sidecar, want: codes.Unimplemented},
		{name: "open, mapped loopback", addr: mapped, want: codes.Unimplemented},
		{name: "open, remote", addr: remote, want: codes.Unimplemented},
		{name: "open, remote with a token", addr: remote, bearer: token, want: codes.Unimplemented},
		{name: "open, on the socket", addr: socket, socket: true, want: codes.OK},
		{name: "token, on the socket without it", auth: Auth{Token: secret.New(token)}, addr: socket, socket: true, want: codes.OK},
		{name: "token, remote, right", auth: Auth{Token: secret.New(token)}, addr: remote, bearer: token, want: codes.OK},
		{name: "token, loopback, none", auth: Auth{Token: secret.New(token)}, addr: loopback, want: codes.Unauthenticated},
		{name: "token, sidecar, none", auth: Auth{Token: secret.New(token)}, addr: sidecar, want: codes.Unauthenticated},
		{name: "token, wrong", auth: Auth{Token: secret.New(token)}, addr: remote, bearer: token + "x", want: codes.Unauthenticated},
		{name: "token, a prefix of it", auth: Auth{Token: secret.New(token)}, addr: remote, bearer: token[:16], want: codes.Unauthenticated},
		{name: "client CA, verified", auth: Auth{ClientCA: true}, addr: remote, tls: verified, want: codes.OK},
		{name: "client CA, no certificate", auth: Auth{ClientCA: true}, addr: remote, tls: unverified, want: codes.Unauthenticated},
		{name: "client CA, loopback, no certificate", auth: Auth{ClientCA: true}, addr: loopback, want: codes.Unauthenticated},
		{name: "both, the token", auth: Auth{ClientCA: true, Token: secret.New(token)}, addr: remote, tls: unverified, bearer: token, want: codes.OK},
		{name: "both, the certificate", auth: Auth{ClientCA: true, Token: secret.New(token)}, addr: remote, tls: verified, want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{}
			s.log = zapNop
			s.auth.Store(&tt.auth)
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: tt.addr, AuthInfo: tt.tls})
			if tt.socket {
				ctx = context.WithValue(ctx, onSocket{}, true)
			}
			if tt.bearer != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tt.bearer))
			}
			if got := status.Code(s.authorize(ctx, "/extauthz.admin.v1.Admin/PurgeTokens")); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
