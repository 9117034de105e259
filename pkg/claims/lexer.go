package claims

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

type tokenKind uint8

const (
	tokEOF    tokenKind = iota
	tokWord             // a function name, or a bare word where none belongs
	tokString           // a raw or quoted string; text holds its decoded value
	tokLParen
	tokRParen
	tokComma
	tokAnd
	tokOr
	tokNot
)

type token struct {
	kind tokenKind
	pos  int    // byte offset of the token's first character
	text string // a word itself, or a string's decoded value
}

// describe names a token for error messages.
func (t token) describe(src string) string {
	switch t.kind {
	case tokEOF:
		return "end of expression"
	case tokWord:
		return strconv.Quote(t.text)
	case tokString:
		return "string " + quoteArg(t.text)
	case tokAnd:
		return `"&&"`
	case tokOr:
		return `"||"`
	default:
		return strconv.Quote(src[t.pos : t.pos+1])
	}
}

var punctuation = [256]tokenKind{'(': tokLParen, ')': tokRParen, ',': tokComma, '!': tokNot}

// lexer splits an expression into tokens on demand, as text/template/parse
// does, but without a goroutine: the parser asks for one token at a time.
type lexer struct {
	src string
	pos int
}

// next returns the next token, or a *SyntaxError for a character or string
// that cannot start or finish a token.
func (l *lexer) next() (token, error) {
	for l.pos < len(l.src) && isSpace(l.src[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start == len(l.src) {
		return token{kind: tokEOF, pos: start}, nil
	}
	c := l.src[start]
	switch {
	case c == '(' || c == ')' || c == ',' || c == '!':
		l.pos++
		return token{kind: punctuation[c], pos: start}, nil
	case c == '&' || c == '|':
		if start+1 < len(l.src) && l.src[start+1] == c {
			l.pos += 2
			if c == '&' {
				return token{kind: tokAnd, pos: start}, nil
			}
			return token{kind: tokOr, pos: start}, nil
		}
		op := string(c)
		return token{}, newSyntaxError(l.src, start, `a single "`+op+`" is not an operator: use "`+op+op+`"`)
	case c == '`':
		end := strings.IndexByte(l.src[start+1:], '`')
		if end < 0 {
			return token{}, newSyntaxError(l.src, start, "unterminated string: the opening ` has no closing `")
		}
		l.pos = start + 1 + end + 1
		return token{kind: tokString, pos: start, text: l.src[start+1 : start+1+end]}, nil
	case c == '"':
		return l.quoted()
	case isWordByte(c):
		for l.pos < len(l.src) && isWordByte(l.src[l.pos]) {
			l.pos++
		}
		return token{kind: tokWord, pos: start, text: l.src[start:l.pos]}, nil
	}
	r, _ := utf8.DecodeRuneInString(l.src[start:])
	msg := "unexpected character " + strconv.QuoteRune(r)
	if c == '=' {
		msg += ": compare with Equals(`key`, `value`)"
	}
	return token{}, newSyntaxError(l.src, start, msg)
}

// quoted decodes a double-quoted string with Go's escapes, pointing an error
// at the escape that is wrong.
func (l *lexer) quoted() (token, error) {
	start := l.pos
	var b strings.Builder
	s := l.src[start+1:]
	for {
		if s == "" || s[0] == '\n' {
			return token{}, newSyntaxError(l.src, start, `unterminated string: the opening " has no closing " on its line`)
		}
		if s[0] == '"' {
			l.pos = len(l.src) - len(s) + 1
			return token{kind: tokString, pos: start, text: b.String()}, nil
		}
		r, multibyte, tail, err := strconv.UnquoteChar(s, '"')
		if err != nil {
			return token{}, newSyntaxError(l.src, len(l.src)-len(s), "invalid escape sequence in string")
		}
		if r < utf8.RuneSelf || !multibyte {
			b.WriteByte(byte(r))
		} else {
			b.WriteRune(r)
		}
		s = tail
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// isWordByte reports the characters of a function name, and of the bare words
// and numbers people write by mistake where a string belongs.
func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}
