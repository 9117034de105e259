package hostname

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		give, host, port string
		wantErr          error
	}{
		{"", "", "", nil},
		{"api.example.com", "api.example.com", "", nil},
		{"API.Example.COM", "api.example.com", "", nil},
		{"api.example.com.", "api.example.com", "", nil},
		{"api.example.com.:443", "api.example.com", "443", nil},
		{"API.example.com:8443", "api.example.com", "8443", nil},
		{"my_host.internal", "my_host.internal", "", nil},
		{"10.0.0.1:80", "10.0.0.1", "80", nil},
		{"[::1]:9001", "[::1]", "9001", nil},
		{"[2001:DB8::0:1]", "[2001:db8::1]", "", nil},
		{"bücher.example", "xn--bcher-kva.example", "", nil},
		{"BÜCHER.example.:443", "xn--bcher-kva.example", "443", nil},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", "", nil},
		{"api.example.com:0443", "api.example.com", "443", nil},
		{"api.example.com:00000000443", "api.example.com", "443", nil},
		{"[::1]:09001", "[::1]", "9001", nil},
		{"api.example.com:", "", "", ErrPort},
		{"api.example.com:00", "", "", ErrPort},
		{"api.example.com:065536", "", "", ErrPort},
		{"api.example.com:+443", "", "", ErrPort},
		{"api.example.com:4 43", "", "", ErrPort},
		{"api.example.com:0", "", "", ErrPort},
		{"api.example.com:65536", "", "", ErrPort},
		{"api.example.com:https", "", "", ErrPort},
		{"::1", "", "", ErrPort},
		{"[::1", "", "", ErrName},
		{"[::1]x", "", "", ErrName},
		{"[10.0.0.1]", "", "", ErrName},
		{"[fe80::1%eth0]", "", "", ErrName},
		{"api.example.com..", "", "", ErrName},
		{".api.example.com", "", "", ErrName},
		{"api..example.com", "", "", ErrName},
		{"api example.com", "", "", ErrName},
		{"api.example.com, evil.example.com", "", "", ErrName},
		{"api.example.com/x", "", "", ErrName},
		{"user@api.example.com", "", "", ErrName},
		{"api.example.com\x00", "", "", ErrName},
		{"api%2eexample.com", "", "", ErrName},
		{strings.Repeat("a", 64) + ".example.com", "", "", ErrName},
		{strings.Repeat("a.", 200), "", "", ErrTooLong},
	}
	for _, tt := range tests {
		host, port, err := Normalize(tt.give)
		if host != tt.host || port != tt.port || !errors.Is(err, tt.wantErr) {
			t.Errorf("Normalize(%q) = %q, %q, %v; want %q, %q, %v", tt.give, host, port, err, tt.host, tt.port, tt.wantErr)
		}
	}
}

func TestNormalizeDoesNotAllocateForNormalHosts(t *testing.T) {
	for _, h := range []string{"api.example.com", "api.example.com:443", "api.example.com:0443", "api.example.com.", "10.0.0.1"} {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = Normalize(h) }); n != 0 {
			t.Errorf("Normalize(%q) allocates %v times", h, n)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"api.example.com", "API.example.com.:443", "[::1]:1", "bücher.example", "a..b", "xn--", "[", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		host, port, err := Normalize(h)
		if err != nil {
			return
		}
		again := host
		if port != "" {
			again += ":" + port
		}
		if h2, p2, err := Normalize(again); err != nil || h2 != host || p2 != port {
			t.Fatalf("Normalize(%q) = %q, %q, but Normalize(%q) = %q, %q, %v", h, host, port, again, h2, p2, err)
		}
		if strings.HasPrefix(port, "0") {
			t.Fatalf("Normalize(%q) = port %q: ports are numbers, written without leading zeros", h, port)
		}
		if strings.ContainsAny(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZ ,/@%\\") || strings.HasSuffix(host, ".") {
			t.Fatalf("Normalize(%q) = %q", h, host)
		}
	})
}
