// Package claims compiles and evaluates the expressions a policy uses to decide,
// from an access token's claims, whether a request may pass.
//
// An expression is compiled once, when the configuration is loaded, into a
// [Program]; the program is then evaluated for every request against the
// token's [Claims], which are decoded once per token. Evaluation allocates
// nothing and never fails: a missing claim simply makes a function false.
//
// # Grammar
//
// In EBNF (the notation of the Go specification). Whitespace (space, tab, CR,
// LF) may appear between any two tokens.
//
//	Expression = AndExpr { "||" AndExpr } .
//	AndExpr    = Unary { "&&" Unary } .
//	Unary      = "!" Unary | Primary .
//	Primary    = Call | "(" Expression ")" .
//	Call       = Function "(" String { "," String } ")" .
//	Function   = "Equals" | "Prefix" | "Contains" | "SplitContains" | "OneOf" .
//	String     = RawString | QuotedString .
//	RawString  = "`" { any byte except "`" } "`" .
//	QuotedString = `"` { any byte except `"`, "\" or newline | Escape } `"` .
//
// "!" binds tighter than "&&", which binds tighter than "||"; both binary
// operators are left-associative. Function names are case-sensitive. A raw
// string is taken byte for byte (unlike Go, carriage returns are kept); a quoted
// string is decoded with Go's escape rules ([strconv.Unquote]). Nothing else is
// an argument: no bare words, numbers or nested calls.
//
// # Functions
//
//	Equals(key, value)         the claim's text is value
//	Prefix(key, value)         the claim's text starts with value
//	Contains(key, value)       string: value is a substring; array: an element is value
//	SplitContains(key, sep, value)
//	                           the claim's text, split at every sep, has a part that is value
//	OneOf(key, v1, v2, …)      scalar: the claim is one of the values;
//	                           array: an element is one of the values
//
// Equals, Prefix and SplitContains on an array or an object are false;
// Contains and OneOf on an object are false. The separator of SplitContains
// must not be empty.
//
// # Keys
//
// The first argument of every function is a key: a path of segments joined by
// ".", walked through nested objects ("user.name"). Inside a segment "\." is a
// literal dot and "\\" a literal backslash; any other backslash, and an empty
// segment, is a compile error. String decoding comes first, so in a quoted
// string a literal dot is written "user\\.name". A path that runs into
// anything but an object (an array, a string, …) is a missing claim. Arrays are
// never indexed.
//
// # Values
//
// Every scalar compares by its canonical text:
//
//   - a string is itself;
//   - a boolean is "true" or "false";
//   - an integer is plain decimal digits, however large ("1700000000",
//     "12345678901234567890"), also when the JSON wrote it as 1.7e9 or 1.0;
//   - any other number is its exact decimal value in shortest form, never
//     rounded through float64: plain ("0.5", "0.000001") unless that needs more
//     than five zeros after the point or more than 400 characters, then
//     scientific ("1e-7", "1.5e+400"), as JavaScript prints numbers.
//     A number with an absurd exponent (beyond ±2⁶²) keeps its JSON text;
//   - null equals nothing.
//
// Arguments are never converted: Equals(`exp`, `1.0`) is false for a claim of 1.
//
// # Claims
//
// A token's claims travel with it as a [*Claims] made by [Parse] from the JSON
// payload. Parse decodes every number with [encoding/json.Number] and stores
// each scalar's canonical text, and every object as a map, so that [Program.Eval]
// reads the tree with map look-ups and string comparisons only. Claims are
// immutable after Parse and safe for concurrent use, so a cache keeps them beside
// the token and shares them between requests.
//
// # Limits
//
// Hostile expressions are refused quickly with a [*SyntaxError]: the source may
// be at most [MaxLength] bytes and [MaxTokens] tokens, parentheses and "!"
// nest at most [MaxDepth] levels, and all arguments together hold at most
// [MaxArgBytes] bytes. Within these limits compiling is linear in the length of
// the source, and a program's [Program.String] form always compiles again to
// the same program.
package claims
