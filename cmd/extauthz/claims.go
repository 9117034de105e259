package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/extauthz/extauthz/pkg/claims"
)

// maxClaimsBytes bounds the claims document, as the token endpoint's answer is bounded.
const maxClaimsBytes = 1 << 20

// runClaims evaluates an expression against a JSON document of claims and
// prints true or false. The expression is compiled first, so that a syntax
// error shows without waiting for input.
func runClaims(_ context.Context, args []string, std stdio) error {
	fs := newFlagSet("claims", "claims --expr EXPR [--claims FILE|-]", std)
	expr := fs.String("expr", "", "`EXPR`, the claims expression as a policy writes it (required)")
	file := fs.String("claims", "-", "a JSON object of claims: a `FILE`, or - for standard input")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "expr" })
	if !given {
		fs.Usage()
		return usagef("claims: --expr is required")
	}

	prog, err := claims.Compile(*expr)
	if err != nil {
		return usagef("claims: --expr: %w", err)
	}
	data, err := readClaims(*file, std.in)
	if err != nil {
		return usageError{err}
	}
	doc, err := claims.Parse(data)
	if err != nil {
		return usagef("%s: %w", describeSource(*file), err)
	}
	fmt.Fprintln(std.out, prog.Eval(doc))
	return nil
}

func readClaims(file string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxClaimsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describeSource(file), err)
	}
	if len(data) > maxClaimsBytes {
		return nil, fmt.Errorf("%s: more than %d bytes of claims", describeSource(file), maxClaimsBytes)
	}
	return data, nil
}

func describeSource(file string) string {
	if file == "-" {
		return "claims from standard input"
	}
	return "claims file " + file
}
