package claims

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Peek is what a token cache needs of a JWT to trust a stored copy of it:
// its expiry and the client it names, read as [Claims.Expiry] and
// [Claims.Client] read them. A client id of up to 64 bytes is held in
// place, so that reading it allocates nothing.
type Peek struct {
	Expiry    time.Time // zero when the token has no usable exp
	client    [64]byte
	clientLen int    // of client, -1 when the id is in long
	long      string // a longer client id
	hasClient bool
}

// Client returns the client the token names, as [Claims.Client] does.
func (p *Peek) Client() (string, bool) {
	if p.clientLen < 0 {
		return p.long, p.hasClient
	}
	return string(p.client[:p.clientLen]), p.hasClient
}

// ClientBytes is Client without a copy: it points into p.
func (p *Peek) ClientBytes() ([]byte, bool) {
	if p.clientLen < 0 {
		return []byte(p.long), p.hasClient
	}
	return p.client[:p.clientLen], p.hasClient
}

func (p *Peek) setClient(id []byte) {
	p.hasClient = true
	if len(id) <= len(p.client) {
		p.clientLen = copy(p.client[:], id)
		return
	}
	p.clientLen, p.long = -1, string(id)
}

// peekBuffer is the size of payload decoded without allocating: a typical
// access token's claims fit several times over.
const peekBuffer = 2048

// PeekJWT returns the expiry and client of a JWT in compact serialization
// without building its [Claims]: the payload is validated as ParseJWT
// validates it, and only the top-level members Expiry and Client look at
// are read. Its answer is always ParseJWT's (a fuzz test holds it to that);
// it exists because a cache that reads a token back from a shared tier
// wants those two facts and nothing else.
func PeekJWT(token string) (Peek, error) {
	header, rest, ok := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || header == "" || strings.Contains(sig, ".") {
		return Peek{}, fmt.Errorf("%w: want three dot-separated parts", ErrNotJWT)
	}
	payload = strings.TrimRight(payload, "=")
	var buf [peekBuffer]byte
	data := buf[:0]
	if n := base64.RawURLEncoding.DecodedLen(len(payload)); n > len(buf) {
		data = make([]byte, 0, n)
	}
	data, err := base64.RawURLEncoding.AppendDecode(data, []byte(payload))
	if err != nil {
		return Peek{}, fmt.Errorf("%w: payload is not base64url", ErrNotJWT)
	}
	if !json.Valid(data) {
		return fullPeek(token)
	}
	members, ok := topLevel(data)
	if !ok {
		return fullPeek(token) // not an object, or a name or value read differently once decoded
	}
	var p Peek
	if raw := members.exp; raw != nil && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		p.Expiry, _ = numericDate(raw)
	}
	for _, raw := range members.client {
		if raw != nil && raw[0] == '"' {
			p.setClient(raw[1 : len(raw)-1])
			break
		}
	}
	return p, nil
}

// fullPeek is PeekJWT the long way, for payloads the short way does not read.
func fullPeek(token string) (Peek, error) {
	c, err := ParseJWT(token)
	if err != nil {
		return Peek{}, err
	}
	var p Peek
	p.Expiry, _ = c.Expiry()
	if id, ok := c.Client(); ok {
		p.setClient([]byte(id))
	}
	return p, nil
}

// peeked holds the raw values of the members PeekJWT reads; the last of
// duplicate names wins, as in a decoded object.
type peeked struct {
	exp    []byte
	client [len(clientClaims)][]byte
}

// topLevel finds the members of the valid JSON object data that PeekJWT
// reads. It reports false for anything that is not an object, and for a
// name or string value it would read that holds an escape or invalid UTF-8
// (decoding changes those; the caller takes the long way).
func topLevel(data []byte) (peeked, bool) {
	var p peeked
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return p, false
	}
	i = skipSpace(data, i+1)
	for i < len(data) && data[i] == '"' {
		end := skipValue(data, i)
		name := data[i+1 : end-1]
		i = skipSpace(data, end)
		i = skipSpace(data, i+1) // ':'
		end = skipValue(data, i)
		raw := data[i:end]
		switch member := read(name); {
		case member == notRead:
		case !plain(name) || (raw[0] == '"' && !plain(raw[1:len(raw)-1])):
			return p, false
		case member == readExp:
			p.exp = raw
		default:
			p.client[member] = raw
		}
		i = skipSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return p, true
}

// What read says of a member's name: an index in clientClaims, or one of these.
const (
	notRead = -1
	readExp = -2
)

// read says whether PeekJWT reads the member called name. A name with an
// escape might decode to one it reads: it is read too, and topLevel
// refuses it.
func read(name []byte) int {
	switch {
	case strings.IndexByte(string(name), '\\') >= 0, string(name) == "exp":
		return readExp
	}
	for i, c := range clientClaims {
		if string(name) == c {
			return i
		}
	}
	return notRead
}

// plain reports text that a JSON decoder keeps byte for byte.
func plain(text []byte) bool {
	return strings.IndexByte(string(text), '\\') < 0 && utf8.Valid(text)
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the value starting at data[i], in data that
// is valid JSON.
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		for j := i + 1; j < len(data); j++ {
			switch data[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return len(data)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = skipValue(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	default: // a number, true, false or null
		j := i
		for j < len(data) && !strings.ContainsRune(",}] \t\n\r", rune(data[j])) {
			j++
		}
		return j
	}
}
