package claims

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

// FuzzCompile checks that Compile never panics, that it fails only with a
// *SyntaxError, and that every program it accepts prints a form that compiles
// to the same program and evaluates the same.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{
		"Equals(`grp`, `admin`) && Equals(`active`, `true`)",
		"!(Prefix(`referrer`, `http://`) || Contains(`areas`, `home`))",
		"SplitContains(`scope`, ` `, `writer`) && OneOf(`areas`, `office`, `lab`)",
		`Equals("user\\.name", "a\x60b\u00e9\xff")`,
		"OneOf(`a`, `1`, `2`, `3`, `4`, `5`, `6`, `7`, `8`, `9`)",
		"((Equals(`a\\\\b`, `c`)))",
		"Equals(`a`, `b`) &",
		"Equals(`a`, `b",
		"",
	} {
		f.Add(seed)
	}
	doc, err := Parse([]byte(sample))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src string) {
		prog, err := Compile(src)
		if err != nil {
			var serr *SyntaxError
			if !errors.As(err, &serr) {
				t.Fatalf("Compile(%q) error %T is not a *SyntaxError", src, err)
			}
			if serr.Offset < 0 || serr.Offset > len(src) || serr.Line < 1 || serr.Col < 1 {
				t.Fatalf("Compile(%q): bad position in %+v", src, serr)
			}
			_ = serr.Error()
			return
		}
		assertRoundTrip(t, prog)
		if MustCompile(prog.String()).Eval(doc) != prog.Eval(doc) {
			t.Fatalf("%q and its String form %q evaluate differently", src, prog.String())
		}
	})
}

// FuzzParse checks that Parse never panics and that every number keeps its
// exact value in its canonical text.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{sample, `{"n": 1.5e-7}`, `{"n": -0.0}`, `{"n": 1e400}`, `{"a": [1, {"b": 2.50}]}`, `[]`, `{`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		checkNumbers(t, c.root)
	})
}

func checkNumbers(t *testing.T, v value) {
	switch v.kind {
	case kindArray:
		for _, e := range v.elems {
			checkNumbers(t, e)
		}
	case kindObject:
		for _, e := range v.fields {
			checkNumbers(t, e)
		}
	case kindNumber:
		// Only exponents big.Rat can expand cheaply are compared.
		if i := strings.IndexAny(v.text, "eE"); i >= 0 && len(v.text)-i > 5 {
			return
		}
		if _, ok := new(big.Rat).SetString(v.text); !ok {
			t.Fatalf("canonical text %q is not a number", v.text)
		}
	}
}
