package claims

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func mustParse(t testing.TB, doc string) *Claims {
	t.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(%s): %v", doc, err)
	}
	return c
}

// TestReferenceExamples checks every example of the Traefik Hub document
// against its sample document (testdata/reference.json, with the document's
// missing colon after "user" put back).
func TestReferenceExamples(t *testing.T) {
	data, err := os.ReadFile("testdata/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, give := range []string{
		"Equals(`grp`, `admin`)",
		"Prefix(`referrer`, `http://example.com`)",
		"Contains(`referrer`, `/foo/`)",
		"Contains(`areas`, `home`)",
		"SplitContains(`scope`, ` `, `writer`)",
		"OneOf(`areas`, `office`, `lab`)",
		"Equals(`grp`, `admin`) && Equals(`active`, `true`)",
		"Equals(`grp`, `admin`) || Equals(`active`, `true`)",
		"!Equals(`grp`, `testers`)",
		"Equals(`user.name`, `John Snow`)",
	} {
		t.Run(give, func(t *testing.T) {
			if !MustCompile(give).Eval(doc) {
				t.Errorf("%s is false, the reference says true", give)
			}
		})
	}
}

const sample = `{
	"grp": "admin",
	"scope": "reader writer  deploy",
	"exp": 1700000000,
	"big": 12345678901234567890,
	"sci": 1.7e9,
	"one": 1.0,
	"half": 0.50,
	"neg": -0,
	"active": true,
	"off": false,
	"nothing": null,
	"empty": "",
	"areas": ["office", "home", 42, true, null, ["nested"], {"o": 1}],
	"user": {"name": "John Snow", "status": "undead", "roles": ["king"], "deep": {"er": "x"}},
	"a.b": "dotted",
	"a": {"b": "nested"},
	"back\\slash": "bs",
	"tricky\\.": "both",
	"": "empty key",
	"list": ["a"],
	"obj": {}
}`

func TestEval(t *testing.T) {
	doc := mustParse(t, sample)
	tests := []struct {
		name string
		give string
		want bool
	}{
		{"equals string", "Equals(`grp`, `admin`)", true},
		{"equals is exact", "Equals(`grp`, `Admin`)", false},
		{"equals integer", "Equals(`exp`, `1700000000`)", true},
		{"equals huge integer", "Equals(`big`, `12345678901234567890`)", true},
		{"equals exponent integer", "Equals(`sci`, `1700000000`)", true},
		{"equals one point zero", "Equals(`one`, `1`)", true},
		{"argument is not converted", "Equals(`one`, `1.0`)", false},
		{"equals fraction", "Equals(`half`, `0.5`)", true},
		{"equals minus zero", "Equals(`neg`, `0`)", true},
		{"equals true", "Equals(`active`, `true`)", true},
		{"equals false", "Equals(`off`, `false`)", true},
		{"null equals nothing", "Equals(`nothing`, `null`)", false},
		{"null equals no empty string", "Equals(`nothing`, ``)", false},
		{"equals empty string", "Equals(`empty`, ``)", true},
		{"equals on array", "Equals(`list`, `a`)", false},
		{"equals on object", "Equals(`obj`, `{}`)", false},
		{"equals missing", "Equals(`missing`, ``)", false},

		{"prefix", "Prefix(`grp`, `adm`)", true},
		{"prefix whole", "Prefix(`grp`, `admin`)", true},
		{"prefix empty", "Prefix(`grp`, ``)", true},
		{"prefix longer", "Prefix(`grp`, `admins`)", false},
		{"prefix number", "Prefix(`exp`, `1700`)", true},
		{"prefix on array", "Prefix(`list`, `a`)", false},
		{"prefix on null", "Prefix(`nothing`, ``)", false},
		{"prefix missing", "Prefix(`missing`, ``)", false},

		{"contains substring", "Contains(`grp`, `dmi`)", true},
		{"contains not substring", "Contains(`grp`, `x`)", false},
		{"contains element", "Contains(`areas`, `home`)", true},
		{"contains element is exact", "Contains(`areas`, `hom`)", false},
		{"contains number element", "Contains(`areas`, `42`)", true},
		{"contains bool element", "Contains(`areas`, `true`)", true},
		{"contains skips nested array", "Contains(`areas`, `nested`)", false},
		{"contains null element", "Contains(`areas`, `null`)", false},
		{"contains on object", "Contains(`user`, `name`)", false},
		{"contains on number", "Contains(`exp`, `000`)", true},
		{"contains missing", "Contains(`missing`, ``)", false},

		{"split contains", "SplitContains(`scope`, ` `, `writer`)", true},
		{"split contains first", "SplitContains(`scope`, ` `, `reader`)", true},
		{"split contains last", "SplitContains(`scope`, ` `, `deploy`)", true},
		{"split contains empty part", "SplitContains(`scope`, ` `, ``)", true},
		{"split contains no substring", "SplitContains(`scope`, ` `, `write`)", false},
		{"split contains long separator", "SplitContains(`scope`, `er `, `read`)", true},
		{"split contains no separator in claim", "SplitContains(`grp`, `,`, `admin`)", true},
		{"split contains on array", "SplitContains(`list`, `,`, `a`)", false},
		{"split contains missing", "SplitContains(`missing`, ` `, `a`)", false},

		{"one of scalar", "OneOf(`grp`, `user`, `admin`)", true},
		{"one of scalar none", "OneOf(`grp`, `user`, `guest`)", false},
		{"one of single value", "OneOf(`grp`, `admin`)", true},
		{"one of array", "OneOf(`areas`, `lab`, `office`)", true},
		{"one of array none", "OneOf(`areas`, `lab`, `garage`)", false},
		{"one of array number", "OneOf(`areas`, `7`, `42`)", true},
		{"one of many values", "OneOf(`grp`, `a`, `b`, `c`, `d`, `e`, `f`, `g`, `h`, `i`, `admin`)", true},
		{"one of many values none", "OneOf(`grp`, `a`, `b`, `c`, `d`, `e`, `f`, `g`, `h`, `i`, `j`)", false},
		{"one of many values array", "OneOf(`areas`, `a`, `b`, `c`, `d`, `e`, `f`, `g`, `h`, `i`, `home`)", true},
		{"one of object", "OneOf(`obj`, `{}`)", false},
		{"one of null", "OneOf(`nothing`, `null`, ``)", false},
		{"one of missing", "OneOf(`missing`, ``)", false},

		{"nested", "Equals(`user.name`, `John Snow`)", true},
		{"nested deeper", "Equals(`user.deep.er`, `x`)", true},
		{"nested array", "Contains(`user.roles`, `king`)", true},
		{"path through string", "Equals(`grp.x`, ``)", false},
		{"path through array", "Equals(`list.0`, `a`)", false},
		{"path through null", "Equals(`nothing.x`, ``)", false},
		{"path missing middle", "Equals(`user.nobody.name`, ``)", false},
		{"escaped dot", "Equals(`a\\.b`, `dotted`)", true},
		{"unescaped dot walks", "Equals(`a.b`, `nested`)", true},
		{"escaped backslash", "Equals(`back\\\\slash`, `bs`)", true},
		{"escaped backslash then dot", "Equals(`tricky\\\\\\.`, `both`)", true},
		{"quoted string key escape", `Equals("a\\.b", "dotted")`, true},
		{"quoted string value escape", `Equals("grp", "\x61dmin")`, true},

		{"and", "Equals(`grp`, `admin`) && Equals(`active`, `true`)", true},
		{"and false", "Equals(`grp`, `admin`) && Equals(`active`, `false`)", false},
		{"or", "Equals(`grp`, `x`) || Equals(`active`, `true`)", true},
		{"or false", "Equals(`grp`, `x`) || Equals(`active`, `false`)", false},
		{"not", "!Equals(`grp`, `testers`)", true},
		{"not not", "!!Equals(`grp`, `admin`)", true},
		{"not missing is true", "!Equals(`missing`, `x`)", true},
		{"and binds tighter than or", "Equals(`grp`, `admin`) || Equals(`grp`, `x`) && Equals(`grp`, `y`)", true},
		{"and binds tighter than or, other side", "Equals(`grp`, `x`) && Equals(`grp`, `y`) || Equals(`grp`, `admin`)", true},
		{"parentheses override", "(Equals(`grp`, `admin`) || Equals(`grp`, `x`)) && Equals(`grp`, `y`)", false},
		{"not binds tighter than and", "!Equals(`grp`, `x`) && Equals(`grp`, `admin`)", true},
		{"not of group", "!(Equals(`grp`, `x`) || Equals(`grp`, `admin`))", false},
		{"whitespace anywhere", " \n\t( Equals ( `grp` ,\r\n `admin` ) )\n", true},
		{"no whitespace", "!Equals(`grp`,`x`)&&Equals(`grp`,`admin`)||Equals(`a`,`b`)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := Compile(tt.give)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := prog.Eval(doc); got != tt.want {
				t.Errorf("Eval(%s) = %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func TestEvalWithoutClaims(t *testing.T) {
	for _, tt := range []struct {
		give string
		want bool
	}{
		{"Equals(`grp`, ``)", false},
		{"!Equals(`grp`, ``)", true},
		{"OneOf(`a`, `b`) || Contains(`a`, ``)", false},
	} {
		if got := MustCompile(tt.give).Eval(nil); got != tt.want {
			t.Errorf("Eval(%s) on nil claims = %v, want %v", tt.give, got, tt.want)
		}
	}
}

func TestEvalAllocatesNothing(t *testing.T) {
	doc := mustParse(t, sample)
	prog := MustCompile("(Equals(`grp`, `admin`) || Prefix(`user.name`, `John`)) && Contains(`areas`, `home`) && " +
		"SplitContains(`scope`, ` `, `deploy`) && OneOf(`areas`, `a`, `b`, `c`, `d`, `e`, `f`, `g`, `h`, `i`, `home`) && !Equals(`missing`, `x`)")
	if !prog.Eval(doc) {
		t.Fatal("expression is false")
	}
	if n := testing.AllocsPerRun(100, func() { prog.Eval(doc) }); n != 0 {
		t.Errorf("Eval allocates %v times per run, want 0", n)
	}
}

func TestCanonicalNumber(t *testing.T) {
	tests := []struct{ give, want string }{
		{"0", "0"},
		{"-0", "0"},
		{"-0.0", "0"},
		{"0e10", "0"},
		{"7", "7"},
		{"-7", "-7"},
		{"1700000000", "1700000000"},
		{"12345678901234567890", "12345678901234567890"},
		{"-98765432109876543210987654321", "-98765432109876543210987654321"},
		{"1.0", "1"},
		{"1.000", "1"},
		{"1.7e9", "1700000000"},
		{"1.7E+9", "1700000000"},
		{"17e-1", "1.7"},
		{"1700e-2", "17"},
		{"0.5", "0.5"},
		{"0.50", "0.5"},
		{"-0.5", "-0.5"},
		{"12.25", "12.25"},
		{"123e-1", "12.3"},
		{"0.000001", "0.000001"},
		{"1e-6", "0.000001"},
		{"1e-7", "1e-7"},
		{"0.00000015", "1.5e-7"},
		{"-2.50e-10", "-2.5e-10"},
		{"12345678901234567890.5", "12345678901234567890.5"},
		{"1e20", "100000000000000000000"},
		{"1e400", "1e+400"},
		{"-1.25e401", "-1.25e+401"},
		{"1e399", "1" + strings.Repeat("0", 399)},
		{"1e99999999999999999999", "1e99999999999999999999"},
		{"1e-99999999999999999999", "1e-99999999999999999999"},
		{"1e4611686018427387904", "1e4611686018427387904"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := canonicalNumber(tt.give); got != tt.want {
				t.Errorf("canonicalNumber(%s) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, give, wantErr string }{
		{"empty", "", "claims: no JSON object"},
		{"blank", "  \n", "claims: no JSON object"},
		{"bad JSON", `{"a":}`, "claims: invalid JSON: invalid character '}'"},
		{"truncated", `{"a": 1`, "claims: invalid JSON: unexpected EOF"},
		{"array", `["a"]`, "claims: JSON is an array, not an object"},
		{"string", `"a"`, "claims: JSON is a string, not an object"},
		{"number", `1`, "claims: JSON is a number, not an object"},
		{"null", `null`, "claims: JSON is null, not an object"},
		{"bool", `true`, "claims: JSON is a boolean, not an object"},
		{"trailing data", `{} {}`, "claims: invalid JSON: data after the top-level value"},
		{"trailing garbage", `{}x`, "claims: invalid JSON: data after the top-level value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.give))
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want %q", tt.give, err, tt.wantErr)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		wantCol int
		wantErr string
	}{
		{"empty", "", 1, "empty expression"},
		{"blank", "  \t ", 1, "empty expression"},
		{"unknown function", "Equal(`a`, `b`)", 1, `unknown function "Equal": want Equals, Prefix, Contains, SplitContains or OneOf`},
		{"case-sensitive name", "oneof(`a`, `b`)", 1, `unknown function "oneof": names are case-sensitive, did you mean OneOf?`},
		{"unknown function after operator", "Equals(`a`, `b`) && Is(`a`)", 21, `unknown function "Is"`},
		{"too few arguments", "Equals(`a`)", 1, "Equals takes 2 arguments (key, value), got 1 argument"},
		{"too many arguments", "Prefix(`a`, `b`, `c`)", 1, "Prefix takes 2 arguments (key, value), got 3 arguments"},
		{"no arguments", "Contains()", 1, "Contains takes 2 arguments (key, value), got none"},
		{"split contains arguments", "SplitContains(`a`, `b`)", 1, "SplitContains takes 3 arguments (key, separator, value), got 2 arguments"},
		{"one of without values", " OneOf(`a`)", 2, "OneOf takes a key and at least one value (key, value, …), got 1 argument"},
		{"unclosed group", "(Equals(`a`, `b`)", 1, `unbalanced parentheses: this "(" is never closed`},
		{"unclosed inner group", "(Equals(`a`, `b`) && (Equals(`a`, `b`))", 1, `unbalanced parentheses: this "(" is never closed`},
		{"unclosed call", "Equals(`a`, `b`", 7, "unbalanced parentheses: Equals( is never closed"},
		{"unclosed call after comma", "Equals(`a`,", 7, "unbalanced parentheses: Equals( is never closed"},
		{"extra closing", "Equals(`a`, `b`))", 17, `unbalanced parentheses: this ")" has no matching "("`},
		{"closing first", ")", 1, `expected a function call, found ")"`},
		{"empty group", "()", 2, `expected a function call after "(", found ")"`},
		{"unterminated raw string", "Equals(`a`, `b)", 13, "unterminated string: the opening ` has no closing `"},
		{"unterminated quoted string", `Equals("a", "b)`, 13, `unterminated string: the opening " has no closing " on its line`},
		{"quoted string across lines", "Equals(\"a\n\", `b`)", 8, `unterminated string: the opening " has no closing " on its line`},
		{"bad escape", `Equals("a\q", "b")`, 10, "invalid escape sequence in string"},
		{"lone ampersand", "Equals(`a`, `b`) & Equals(`a`, `b`)", 18, `a single "&" is not an operator: use "&&"`},
		{"lone bar", "Equals(`a`, `b`) | Equals(`a`, `b`)", 18, `a single "|" is not an operator: use "||"`},
		{"triple ampersand", "Equals(`a`, `b`) &&& Equals(`a`, `b`)", 20, `a single "&" is not an operator: use "&&"`},
		{"trailing call", "Equals(`a`, `b`) Equals(`a`, `b`)", 18, `unexpected "Equals" after a complete expression: join expressions with "&&" or "||"`},
		{"trailing string", "Equals(`a`, `b`) `c`", 18, "unexpected string `c` after a complete expression"},
		{"trailing comma", "Equals(`a`, `b`),", 17, `unexpected "," after a complete expression`},
		{"trailing operator", "Equals(`a`, `b`) ||", 20, `expected a function call after "||", found end of expression`},
		{"leading operator", "&& Equals(`a`, `b`)", 1, `expected a function call, found "&&"`},
		{"dangling not", "Equals(`a`, `b`) && !", 22, `expected a function call after "!", found end of expression`},
		{"missing operand", "Equals(`a`, `b`) && || Equals(`a`, `b`)", 21, `expected a function call after "&&", found "||"`},
		{"bare word argument", "Equals(grp, `admin`)", 8, "bare word \"grp\": an argument is a string in backticks or double quotes, as `grp`"},
		{"number argument", "Equals(`exp`, 1700000000)", 15, `bare word "1700000000"`},
		{"nested call", "Equals(`a`, Prefix(`b`, `c`))", 13, "calls cannot be nested: the arguments of Equals are strings"},
		{"comma without argument", "Equals(`a`, , `b`)", 13, `expected a string argument after ",", found ","`},
		{"trailing comma in call", "Equals(`a`, `b`,)", 17, `expected a string argument after ",", found ")"`},
		{"leading comma in call", "Equals(, `b`)", 8, `expected a string argument of Equals, found ","`},
		{"missing comma", "Equals(`a` `b`)", 12, `expected "," or ")" after an argument of Equals, found string ` + "`b`"},
		{"name without call", "Equals && Equals(`a`, `b`)", 8, `expected "(" after Equals, found "&&"`},
		{"name at end", "Equals", 7, `expected "(" after Equals, found end of expression`},
		{"string alone", "`grp`", 1, "a string cannot stand alone"},
		{"group not closed by operator", "(Equals(`a`, `b`) Equals(`a`, `b`))", 19, `expected "&&", "||" or ")", found "Equals"`},
		{"unexpected character", "Equals(`a`, `b`) # comment", 18, "unexpected character '#'"},
		{"equals sign", "Equals(`grp`, `admin`) == `x`", 24, "unexpected character '=': compare with Equals(`key`, `value`)"},
		{"non-ASCII character", "Equals(`a`, `b`) ∧ Equals(`a`, `b`)", 18, "unexpected character '∧'"},
		{"column counts characters", "Equals(`ä`, `ö`) Foo", 18, `unexpected "Foo"`},
		{"empty key", "Equals(``, `b`)", 8, "key ``: a key must not be empty"},
		{"empty segment", "Equals(`a..b`, `c`)", 8, "key `a..b`: empty segment: a dot must separate two names"},
		{"leading dot", "Equals(`.a`, `c`)", 8, "key `.a`: empty segment"},
		{"trailing dot", "Equals(`a.`, `c`)", 8, "key `a.`: empty segment"},
		{"bad key escape", "Equals(`a\\b`, `c`)", 8, "key `a\\b`: " + `a backslash in a key must be followed by "." or "\"`},
		{"key ends in backslash", "Equals(`a\\`, `c`)", 8, "key `a\\`: " + `a backslash in a key must be followed by "." or "\"`},
		{"empty separator", "SplitContains(`scope`, ``, `a`)", 24, "the separator of SplitContains must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := Compile(tt.give)
			var serr *SyntaxError
			if !errors.As(err, &serr) {
				t.Fatalf("Compile(%q) = %v, %v; want a *SyntaxError", tt.give, prog, err)
			}
			if !strings.HasPrefix(serr.Msg, tt.wantErr) {
				t.Errorf("message = %q, want prefix %q", serr.Msg, tt.wantErr)
			}
			if serr.Col != tt.wantCol {
				t.Errorf("column = %d, want %d (%s)", serr.Col, tt.wantCol, serr.Msg)
			}
		})
	}
}

func TestSyntaxErrorPrintsCaret(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{
			name: "one line",
			give: "Equals(`grp`, `admin`) & Equals(`a`, `b`)",
			want: "column 24: a single \"&\" is not an operator: use \"&&\"\n" +
				"\tEquals(`grp`, `admin`) & Equals(`a`, `b`)\n" +
				"\t                       ^",
		},
		{
			name: "several lines",
			give: "Equals(`grp`, `admin`) &&\n\tEquals(`a`, `b`, `c`)",
			want: "line 2, column 2: Equals takes 2 arguments (key, value), got 3 arguments\n" +
				"\t\tEquals(`a`, `b`, `c`)\n" +
				"\t\t^",
		},
		{
			name: "control characters shown as dots",
			give: "Equals(`a\x00`, `b`) Foo",
			want: "column 19: unexpected \"Foo\" after a complete expression: join expressions with \"&&\" or \"||\"\n" +
				"\tEquals(`a·`, `b`) Foo\n" +
				"\t                  ^",
		},
		{
			name: "long line cut around the caret",
			give: "OneOf(`k`" + strings.Repeat(", `abcdef`", 20) + ") &&",
			want: "column 214: expected a function call after \"&&\", found end of expression\n" +
				"\t…f`, `abcdef`, `abcdef`, `abcdef`) &&\n" +
				"\t                                     ^",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.give)
			if err == nil {
				t.Fatal("no error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct{ give, want string }{
		{"Equals(`grp`,`admin`)", "Equals(`grp`, `admin`)"},
		{`Equals("grp", "admin")`, "Equals(`grp`, `admin`)"},
		{`Equals("a", "has ` + "`" + `backtick")`, "Equals(`a`, \"has `backtick\")"},
		{"Equals(`a\\.b`, `c`)", "Equals(`a\\.b`, `c`)"},
		{"Equals(`a\\\\b`, `c`)", "Equals(`a\\\\b`, `c`)"},
		{"((Equals(`a`, `b`)))", "Equals(`a`, `b`)"},
		{"Equals(`a`,`b`)&&(Equals(`c`,`d`)&&Equals(`e`,`f`))", "Equals(`a`, `b`) && Equals(`c`, `d`) && Equals(`e`, `f`)"},
		{"(Equals(`a`,`b`)||Equals(`c`,`d`))&&Equals(`e`,`f`)", "(Equals(`a`, `b`) || Equals(`c`, `d`)) && Equals(`e`, `f`)"},
		{"Equals(`a`,`b`)||(Equals(`c`,`d`)&&Equals(`e`,`f`))", "Equals(`a`, `b`) || Equals(`c`, `d`) && Equals(`e`, `f`)"},
		{"!(Equals(`a`,`b`))", "!Equals(`a`, `b`)"},
		{"!(Equals(`a`,`b`)&&Equals(`c`,`d`))", "!(Equals(`a`, `b`) && Equals(`c`, `d`))"},
		{"!!Equals(`a`,`b`)", "!!Equals(`a`, `b`)"},
		{"OneOf(`a`,`b`,`c`)", "OneOf(`a`, `b`, `c`)"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			prog := MustCompile(tt.give)
			if got := prog.String(); got != tt.want {
				t.Errorf("String() = %s, want %s", got, tt.want)
			}
			assertRoundTrip(t, prog)
		})
	}
}

func TestLimits(t *testing.T) {
	call := "Equals(`a`, `b`)"
	tests := []struct {
		name    string
		give    string
		wantErr string
	}{
		{"too long", call + strings.Repeat(" ", MaxLength), "expression is 1048592 bytes long, more than the limit of 1048576"},
		{"deep parentheses", strings.Repeat("(", 10000) + call + strings.Repeat(")", 10000), "parentheses and \"!\" nest more than 64 levels deep"},
		{"deep not", strings.Repeat("!", 100000) + call, "parentheses and \"!\" nest more than 64 levels deep"},
		{"unclosed parentheses", strings.Repeat("(", 100000), "parentheses and \"!\" nest more than 64 levels deep"},
		{"many tokens", call + strings.Repeat(" && "+call, 1000), "expression has more than 4096 tokens"},
		{"large arguments", "OneOf(`a`" + strings.Repeat(", `"+strings.Repeat("x", 1000)+"`", 100) + ")", "arguments hold more than 65536 bytes together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.give)
			var serr *SyntaxError
			if !errors.As(err, &serr) || serr.Msg != tt.wantErr {
				t.Errorf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}

	t.Run("at the limits", func(t *testing.T) {
		for _, give := range []string{
			strings.Repeat("(", MaxDepth) + call + strings.Repeat(")", MaxDepth),
			strings.Repeat("!", MaxDepth) + call,
			call + strings.Repeat(" || "+call, 4096/7-1),
			"OneOf(`a`, `" + strings.Repeat("x", MaxArgBytes-1) + "`)",
		} {
			prog, err := Compile(give)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			assertRoundTrip(t, prog)
		}
	})
}

// assertRoundTrip checks that a program's String form compiles to the same program.
func assertRoundTrip(t testing.TB, prog *Program) {
	t.Helper()
	again, err := Compile(prog.String())
	if err != nil {
		t.Fatalf("String() form %q does not compile: %v", prog.String(), err)
	}
	if again.String() != prog.String() || !sameNode(again.root, prog.root) {
		t.Fatalf("String() form %q compiles to a different program %q", prog.String(), again.String())
	}
}

// sameNode compares two programs structurally.
func sameNode(a, b node) bool {
	switch a := a.(type) {
	case orNode:
		b, ok := b.(orNode)
		return ok && sameList(a, b)
	case andNode:
		b, ok := b.(andNode)
		return ok && sameList(a, b)
	case notNode:
		b, ok := b.(notNode)
		return ok && sameNode(a.x, b.x)
	case *callNode:
		b, ok := b.(*callNode)
		return ok && a.fn == b.fn && slices.Equal(a.key, b.key) && slices.Equal(a.args, b.args) && len(a.set) == len(b.set)
	}
	return false
}

func sameList(a, b []node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameNode(a[i], b[i]) {
			return false
		}
	}
	return true
}
