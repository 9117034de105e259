package claims

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func jwtOf(payload string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

// TestPeekJWT: the short way reads what Expiry and Client read, including
// where decoding changes the bytes (escapes, invalid UTF-8, duplicates).
func TestPeekJWT(t *testing.T) {
	for _, tt := range []struct {
		payload    string
		wantExp    time.Time
		wantClient string
	}{
		{`{"client_id":"orders","exp":1700000000}`, time.Unix(1700000000, 0), "orders"},
		{` { "exp" : 1700000000.5 , "azp" : "b" } `, time.Unix(1700000000, 500_000_000), "b"},
		{`{"exp":1.7e9,"cid":"c","appid":"d"}`, time.Unix(1700000000, 0), "c"},
		{`{"exp":"1700000000","client_id":7,"azp":"e"}`, time.Time{}, "e"},
		{`{"exp":-1,"client_id":null}`, time.Time{}, ""},
		{`{"exp":1e300}`, time.Time{}, ""},
		{`{"exp":1,"exp":1700000000,"azp":"x","azp":"y"}`, time.Unix(1700000000, 0), "y"},
		{`{"nested":{"exp":1,"client_id":"inner"},"list":["exp",{"azp":"z"}],"azp":"outer"}`, time.Time{}, "outer"},
		{`{"client_id":"a\"b","s":"\\"}`, time.Time{}, `a"b`},
		{`{"client_\u0069d":"escaped name"}`, time.Time{}, "escaped name"},
		{"{\"client_id\":\"bad\xffutf8\"}", time.Time{}, "bad\ufffdutf8"},
		{`{"exp":true,"azp":false}`, time.Time{}, ""},
	} {
		token := jwtOf(tt.payload)
		got, err := PeekJWT(token)
		if err != nil {
			t.Errorf("PeekJWT(%s): %v", tt.payload, err)
			continue
		}
		if client, _ := got.Client(); !got.Expiry.Equal(tt.wantExp) || client != tt.wantClient {
			t.Errorf("PeekJWT(%s) = %v %q, want %v %q", tt.payload, got.Expiry, client, tt.wantExp, tt.wantClient)
		}
		samePeek(t, token)
	}
	for _, bad := range []string{"opaque", "h.!!!.s", jwtOf("nope"), jwtOf("[1]"), jwtOf(`{"a":1} x`), jwtOf(`{"a":1`), jwtOf("")} {
		if _, err := PeekJWT(bad); !errors.Is(err, ErrNotJWT) {
			t.Errorf("PeekJWT(%q): %v, want ErrNotJWT", bad, err)
		}
	}
	big := jwtOf(`{"pad":"` + strings.Repeat("x", 3*peekBuffer) + `","azp":"big","exp":1700000000}`)
	if got, err := PeekJWT(big); err != nil {
		t.Errorf("a payload beyond the stack buffer: %v", err)
	} else if client, _ := got.Client(); client != "big" {
		t.Errorf("a payload beyond the stack buffer: client %q", client)
	}
	long := strings.Repeat("c", 100)
	if got, err := PeekJWT(jwtOf(`{"azp":"` + long + `"}`)); err != nil {
		t.Error(err)
	} else if client, ok := got.Client(); !ok || client != long {
		t.Errorf("a 100-byte client id: %q %v", client, ok)
	} else if b, _ := got.ClientBytes(); string(b) != long {
		t.Errorf("ClientBytes of a 100-byte client id: %q", b)
	}
}

// TestPeekJWTAllocations: reading a typical token's expiry and client
// allocates nothing.
func TestPeekJWTAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool (json.Valid's scanners) drop at random: make test runs this test without it")
	}
	token := jwtOf(typicalClaims)
	if n := testing.AllocsPerRun(100, func() {
		p, _ := PeekJWT(token)
		if b, ok := p.ClientBytes(); !ok || len(b) == 0 {
			t.Fatal("no client")
		}
	}); n > 0 {
		t.Errorf("PeekJWT allocates %v times, want none", n)
	}
}

// samePeek fails t when PeekJWT and ParseJWT disagree about token.
func samePeek(t *testing.T, token string) {
	t.Helper()
	got, err := PeekJWT(token)
	c, cerr := ParseJWT(token)
	if (err == nil) != (cerr == nil) {
		t.Fatalf("PeekJWT error %v, ParseJWT error %v", err, cerr)
	}
	if cerr != nil {
		return
	}
	exp, _ := c.Expiry()
	client, ok := c.Client()
	if gotClient, gotOK := got.Client(); !got.Expiry.Equal(exp) || gotClient != client || gotOK != ok {
		t.Fatalf("PeekJWT %v %q %v, ParseJWT %v %q %v", got.Expiry, gotClient, gotOK, exp, client, ok)
	}
}

func FuzzPeekJWT(f *testing.F) {
	for _, seed := range []string{
		`{"client_id":"orders","exp":1700000000}`, `{"exp":1.5e9,"azp":"a\u0062"}`, `{"client_\u0069d":"x"}`,
		`{"a":[{"exp":1}],"exp":2,"cid":"c","cid":7}`, "{\"appid\":\"\xff\"}", `[]`, `{"exp":-0}`, `{"exp":1e400}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		samePeek(t, jwtOf(payload))
	})
}

// typicalClaims are an access token's claims as IdPs issue them.
const typicalClaims = `{"iss":"https://idp.example","sub":"orders","aud":"api","client_id":"orders","scope":"read write","grp":["a","b"],"exp":1700000000,"iat":1699996400,"jti":"0123456789abcdef"}`

// BenchmarkPeekJWT compares the short way with decoding all the claims.
func BenchmarkPeekJWT(b *testing.B) {
	token := jwtOf(typicalClaims)
	b.Run("peek", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = PeekJWT(token)
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, _ := ParseJWT(token)
			_, _ = c.Expiry()
			_, _ = c.Client()
		}
	})
}
