package claims

import (
	"strconv"
	"strings"
)

// Program is a compiled expression. It is immutable and safe for concurrent use.
type Program struct {
	root node
}

// Eval reports whether claims satisfy the expression. Nil claims have no
// claims at all. Eval allocates nothing.
func (p *Program) Eval(c *Claims) bool {
	return p.root.eval(c)
}

// String returns the expression in canonical form: backtick arguments where
// possible, single spaces around operators, only the parentheses precedence
// needs. It compiles again to the same program.
func (p *Program) String() string {
	var b strings.Builder
	p.root.format(&b, precOr)
	return b.String()
}

// Precedences, lowest first, for printing only the parentheses that matter.
const (
	precOr = iota + 1
	precAnd
	precNot
)

type node interface {
	eval(c *Claims) bool
	// format writes the node, in parentheses if it binds looser than outer.
	format(b *strings.Builder, outer int)
}

type (
	orNode  []node
	andNode []node
	notNode struct{ x node }
)

func (n orNode) eval(c *Claims) bool {
	for _, x := range n {
		if x.eval(c) {
			return true
		}
	}
	return false
}

func (n andNode) eval(c *Claims) bool {
	for _, x := range n {
		if !x.eval(c) {
			return false
		}
	}
	return true
}

func (n notNode) eval(c *Claims) bool { return !n.x.eval(c) }

func (n orNode) format(b *strings.Builder, outer int)  { formatList(b, n, " || ", precOr, outer) }
func (n andNode) format(b *strings.Builder, outer int) { formatList(b, n, " && ", precAnd, outer) }

func formatList(b *strings.Builder, list []node, op string, prec, outer int) {
	if prec < outer {
		b.WriteByte('(')
		defer b.WriteByte(')')
	}
	for i, x := range list {
		if i > 0 {
			b.WriteString(op)
		}
		x.format(b, prec+1)
	}
}

func (n notNode) format(b *strings.Builder, _ int) {
	b.WriteByte('!')
	n.x.format(b, precNot)
}

type function uint8

const (
	fnEquals function = iota
	fnPrefix
	fnContains
	fnSplitContains
	fnOneOf
)

// functions describes each function; maxArgs 0 means no upper bound.
var functions = [...]struct {
	name             string
	params           string
	minArgs, maxArgs int
}{
	fnEquals:        {"Equals", "2 arguments (key, value)", 2, 2},
	fnPrefix:        {"Prefix", "2 arguments (key, value)", 2, 2},
	fnContains:      {"Contains", "2 arguments (key, value)", 2, 2},
	fnSplitContains: {"SplitContains", "3 arguments (key, separator, value)", 3, 3},
	fnOneOf:         {"OneOf", "a key and at least one value (key, value, …)", 2, 0},
}

func lookupFunction(name string) (function, bool) {
	for fn, f := range functions {
		if f.name == name {
			return function(fn), true
		}
	}
	return 0, false
}

// callNode is a function call; args are the arguments after the key.
type callNode struct {
	fn   function
	key  []string
	args []string
	set  map[string]struct{} // the values of a long OneOf
}

func (n *callNode) eval(c *Claims) bool {
	v, ok := c.lookup(n.key)
	if !ok {
		return false
	}
	switch n.fn {
	case fnEquals:
		return v.scalar() && v.text == n.args[0]
	case fnPrefix:
		return v.scalar() && strings.HasPrefix(v.text, n.args[0])
	case fnContains:
		if v.kind == kindArray {
			for _, e := range v.elems {
				if e.scalar() && e.text == n.args[0] {
					return true
				}
			}
			return false
		}
		return v.scalar() && strings.Contains(v.text, n.args[0])
	case fnSplitContains:
		return v.scalar() && splitContains(v.text, n.args[0], n.args[1])
	case fnOneOf:
		if v.kind == kindArray {
			for _, e := range v.elems {
				if e.scalar() && n.oneOf(e.text) {
					return true
				}
			}
			return false
		}
		return v.scalar() && n.oneOf(v.text)
	}
	return false
}

func (n *callNode) oneOf(s string) bool {
	if n.set != nil {
		_, ok := n.set[s]
		return ok
	}
	for _, a := range n.args {
		if a == s {
			return true
		}
	}
	return false
}

// splitContains reports whether one of the parts strings.Split(s, sep) would
// return is value, without building the parts.
func splitContains(s, sep, value string) bool {
	for {
		i := strings.Index(s, sep)
		if i < 0 {
			return s == value
		}
		if s[:i] == value {
			return true
		}
		s = s[i+len(sep):]
	}
}

// keyEscaper undoes parseKey for one segment.
var keyEscaper = strings.NewReplacer(`\`, `\\`, `.`, `\.`)

func (n *callNode) format(b *strings.Builder, _ int) {
	b.WriteString(functions[n.fn].name)
	b.WriteByte('(')
	segs := make([]string, len(n.key))
	for i, s := range n.key {
		segs[i] = keyEscaper.Replace(s)
	}
	b.WriteString(quoteArg(strings.Join(segs, ".")))
	for _, a := range n.args {
		b.WriteString(", ")
		b.WriteString(quoteArg(a))
	}
	b.WriteByte(')')
}

// quoteArg writes s as a backtick string, or a Go-quoted one if it holds a backtick.
func quoteArg(s string) string {
	if strings.ContainsRune(s, '`') {
		return strconv.Quote(s)
	}
	return "`" + s + "`"
}
