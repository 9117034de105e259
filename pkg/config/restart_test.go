package config

import (
	"slices"
	"testing"
)

func TestRestartOnly(t *testing.T) {
	base := "policies:\n  o: {url: 'https://x/t'}\n"
	load := func(extra string) *Config {
		t.Helper()
		cfg, err := Parse([]byte(extra+base), "")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	old := load("")
	tests := []struct {
		give string
		want []string
	}{
		{"log: {level: debug}\n", nil},
		{"defaultPolicy: o\n", nil},
		{"server: {grpcAddress: ':9100'}\n", []string{"server.grpcAddress"}},
		{"server: {httpAddress: ''}\n", []string{"server.httpAddress"}},
		{"server: {grpc: {maxConnectionAge: 1m}, shutdownTimeout: 5s}\n", []string{"server.grpc.maxConnectionAge", "server.shutdownTimeout"}},
		{"store: {maxEntries: 5}\nlog: {format: console}\n", []string{"store.maxEntries", "log.format"}},
		{"tracing: {endpoint: 'otel:4317'}\n", []string{"tracing"}},
		{"server: {grpc: {maxHeaderBytes: 8192}, admin: {socket: /run/a.sock}}\n", []string{"server.grpc.maxHeaderBytes", "server.admin.socket"}},
		{"server: {admin: {token: 0123456789abcdef0123}}\n", nil},
	}
	for _, tt := range tests {
		if got := RestartOnly(old, load(tt.give)); !slices.Equal(got, tt.want) {
			t.Errorf("%q: RestartOnly = %q, want %q", tt.give, got, tt.want)
		}
	}
}
