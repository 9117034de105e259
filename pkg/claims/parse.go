package claims

import (
	"fmt"
	"strings"
)

// Limits on what Compile accepts; see the package documentation.
const (
	MaxLength   = 1 << 20  // bytes of source
	MaxTokens   = 4096     // tokens of source
	MaxDepth    = 64       // nesting of parentheses and "!"
	MaxArgBytes = 64 << 10 // bytes of all decoded arguments together
)

// manyValues is the number of OneOf values from which a set beats a scan.
const manyValues = 8

// Compile parses an expression into a Program. A problem is reported as a
// *SyntaxError. Compile is meant to run once, when a configuration is loaded.
func Compile(src string) (*Program, error) {
	if len(src) > MaxLength {
		return nil, newSyntaxError(src, MaxLength, fmt.Sprintf("expression is %d bytes long, more than the limit of %d", len(src), MaxLength))
	}
	p := &parser{lex: lexer{src: src}}
	if err := p.next(); err != nil {
		return nil, err
	}
	if p.tok.kind == tokEOF {
		return nil, p.errorf(0, "empty expression: want a function call such as Equals(`grp`, `admin`)")
	}
	root, err := p.or("")
	if err != nil {
		return nil, err
	}
	switch p.tok.kind {
	case tokEOF:
		return &Program{root: root}, nil
	case tokRParen:
		return nil, p.errorf(p.tok.pos, `unbalanced parentheses: this ")" has no matching "("`)
	case tokWord, tokLParen, tokNot:
		return nil, p.errorf(p.tok.pos, `unexpected %s after a complete expression: join expressions with "&&" or "||"`, p.tok.describe(src))
	default:
		return nil, p.errorf(p.tok.pos, "unexpected %s after a complete expression", p.tok.describe(src))
	}
}

// MustCompile is Compile for expressions known to be valid; it panics on error.
func MustCompile(src string) *Program {
	prog, err := Compile(src)
	if err != nil {
		panic(err)
	}
	return prog
}

type parser struct {
	lex      lexer
	tok      token // the current token, not yet consumed
	tokens   int
	depth    int
	argBytes int
}

func (p *parser) errorf(pos int, format string, args ...any) *SyntaxError {
	return newSyntaxError(p.lex.src, pos, fmt.Sprintf(format, args...))
}

func (p *parser) next() error {
	tok, err := p.lex.next()
	if err != nil {
		return err
	}
	if p.tokens++; p.tokens > MaxTokens {
		return p.errorf(tok.pos, "expression has more than %d tokens", MaxTokens)
	}
	p.tok = tok
	return nil
}

// enter counts one level of nesting; leave undoes it.
func (p *parser) enter() error {
	if p.depth++; p.depth > MaxDepth {
		return p.errorf(p.tok.pos, "parentheses and \"!\" nest more than %d levels deep", MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

// or parses AndExpr { "||" AndExpr }; after says what came before, for errors.
func (p *parser) or(after string) (node, error) {
	x, err := p.and(after)
	if err != nil || p.tok.kind != tokOr {
		return x, err
	}
	list := join[orNode](nil, x)
	for p.tok.kind == tokOr {
		if err := p.next(); err != nil {
			return nil, err
		}
		y, err := p.and(`after "||"`)
		if err != nil {
			return nil, err
		}
		list = join(list, y)
	}
	return list, nil
}

// and parses Unary { "&&" Unary }; after says what came before, for errors.
func (p *parser) and(after string) (node, error) {
	x, err := p.unary(after)
	if err != nil || p.tok.kind != tokAnd {
		return x, err
	}
	list := join[andNode](nil, x)
	for p.tok.kind == tokAnd {
		if err := p.next(); err != nil {
			return nil, err
		}
		y, err := p.unary(`after "&&"`)
		if err != nil {
			return nil, err
		}
		list = join(list, y)
	}
	return list, nil
}

// join appends x to list, flattening a node of the list's own kind, so that
// long chains stay shallow and print back the same.
func join[T ~[]node](list T, x node) T {
	if xs, ok := x.(T); ok {
		return append(list, xs...)
	}
	return append(list, x)
}

func (p *parser) unary(after string) (node, error) {
	if p.tok.kind != tokNot {
		return p.primary(after)
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	if err := p.next(); err != nil {
		return nil, err
	}
	x, err := p.unary(`after "!"`)
	if err != nil {
		return nil, err
	}
	return notNode{x}, nil
}

func (p *parser) primary(after string) (node, error) {
	switch p.tok.kind {
	case tokWord:
		return p.call()
	case tokLParen:
		open := p.tok.pos
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		if err := p.next(); err != nil {
			return nil, err
		}
		x, err := p.or(`after "("`)
		if err != nil {
			return nil, err
		}
		switch p.tok.kind {
		case tokRParen:
			return x, p.next()
		case tokEOF:
			return nil, p.errorf(open, `unbalanced parentheses: this "(" is never closed`)
		default:
			return nil, p.errorf(p.tok.pos, `expected "&&", "||" or ")", found %s`, p.tok.describe(p.lex.src))
		}
	case tokString:
		return nil, p.errorf(p.tok.pos, "a string cannot stand alone: it is an argument of a function, as in Equals(`grp`, `admin`)")
	default:
		if after != "" {
			after = " " + after
		}
		return nil, p.errorf(p.tok.pos, "expected a function call%s, found %s", after, p.tok.describe(p.lex.src))
	}
}

func (p *parser) call() (node, error) {
	name := p.tok
	fn, ok := lookupFunction(name.text)
	if !ok {
		return nil, p.errorf(name.pos, "%s", unknownFunction(name.text))
	}
	spec := functions[fn]
	if err := p.next(); err != nil {
		return nil, err
	}
	if p.tok.kind != tokLParen {
		return nil, p.errorf(p.tok.pos, `expected "(" after %s, found %s`, spec.name, p.tok.describe(p.lex.src))
	}
	open := p.tok.pos
	if err := p.next(); err != nil {
		return nil, err
	}

	var args []token
	if p.tok.kind != tokRParen {
		for {
			arg, err := p.argument(spec.name, open, len(args) > 0)
			if err != nil {
				return nil, err
			}
			args = append(args, arg)
			if p.tok.kind != tokComma {
				break
			}
			if err := p.next(); err != nil {
				return nil, err
			}
		}
		switch p.tok.kind {
		case tokRParen:
		case tokEOF:
			return nil, p.errorf(open, `unbalanced parentheses: %s( is never closed`, spec.name)
		default:
			return nil, p.errorf(p.tok.pos, `expected "," or ")" after an argument of %s, found %s`, spec.name, p.tok.describe(p.lex.src))
		}
	}
	if err := p.next(); err != nil { // the closing ")"
		return nil, err
	}
	if len(args) < spec.minArgs || spec.maxArgs > 0 && len(args) > spec.maxArgs {
		return nil, p.errorf(name.pos, "%s takes %s, got %s", spec.name, spec.params, countArgs(len(args)))
	}
	return p.build(fn, args)
}

// argument reads one string argument of a call.
func (p *parser) argument(fn string, open int, afterComma bool) (token, error) {
	tok := p.tok
	switch tok.kind {
	case tokString:
		if p.argBytes += len(tok.text); p.argBytes > MaxArgBytes {
			return token{}, p.errorf(tok.pos, "arguments hold more than %d bytes together", MaxArgBytes)
		}
		return tok, p.next()
	case tokWord:
		if _, ok := lookupFunction(tok.text); ok {
			return token{}, p.errorf(tok.pos, "calls cannot be nested: the arguments of %s are strings", fn)
		}
		return token{}, p.errorf(tok.pos, "bare word %q: an argument is a string in backticks or double quotes, as `%s`", tok.text, tok.text)
	case tokEOF:
		return token{}, p.errorf(open, `unbalanced parentheses: %s( is never closed`, fn)
	}
	if afterComma {
		return token{}, p.errorf(tok.pos, `expected a string argument after ",", found %s`, tok.describe(p.lex.src))
	}
	return token{}, p.errorf(tok.pos, "expected a string argument of %s, found %s", fn, tok.describe(p.lex.src))
}

func (p *parser) build(fn function, args []token) (node, error) {
	key, msg := parseKey(args[0].text)
	if msg != "" {
		return nil, p.errorf(args[0].pos, "key %s: %s", quoteArg(args[0].text), msg)
	}
	c := &callNode{fn: fn, key: key}
	for _, a := range args[1:] {
		c.args = append(c.args, a.text)
	}
	if fn == fnSplitContains && c.args[0] == "" {
		return nil, p.errorf(args[1].pos, "the separator of SplitContains must not be empty")
	}
	if fn == fnOneOf && len(c.args) > manyValues {
		c.set = make(map[string]struct{}, len(c.args))
		for _, a := range c.args {
			c.set[a] = struct{}{}
		}
	}
	return c, nil
}

// parseKey splits a key into path segments, resolving `\.` and `\\`. It
// returns a message, not an error, so that the caller can place it.
func parseKey(key string) ([]string, string) {
	if key == "" {
		return nil, "a key must not be empty"
	}
	var segs []string
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; c {
		case '\\':
			if i+1 == len(key) || key[i+1] != '.' && key[i+1] != '\\' {
				return nil, `a backslash in a key must be followed by "." or "\"`
			}
			i++
			b.WriteByte(key[i])
		case '.':
			if b.Len() == 0 {
				return nil, "empty segment: a dot must separate two names"
			}
			segs = append(segs, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return nil, "empty segment: a dot must separate two names"
	}
	return append(segs, b.String()), ""
}

func countArgs(n int) string {
	switch n {
	case 0:
		return "none"
	case 1:
		return "1 argument"
	default:
		return fmt.Sprintf("%d arguments", n)
	}
}

func unknownFunction(name string) string {
	for _, f := range functions {
		if strings.EqualFold(f.name, name) {
			return fmt.Sprintf("unknown function %q: names are case-sensitive, did you mean %s?", name, f.name)
		}
	}
	return fmt.Sprintf("unknown function %q: want Equals, Prefix, Contains, SplitContains or OneOf", name)
}
