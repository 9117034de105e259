package claims

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Claims are a token's decoded claims, in the form [Program.Eval] reads
// directly. They are immutable and safe for concurrent use.
type Claims struct {
	root value
}

type kind uint8

const (
	kindNull kind = iota
	kindString
	kindNumber
	kindBool
	kindArray
	kindObject
)

// value is one JSON value. Scalars carry their canonical text, so comparing
// them needs no conversion at evaluation time.
type value struct {
	kind   kind
	text   string           // canonical text of a string, number or boolean
	elems  []value          // elements of an array
	fields map[string]value // members of an object
}

func (v value) scalar() bool {
	return v.kind == kindString || v.kind == kindNumber || v.kind == kindBool
}

// Parse decodes a JSON object, such as a JWT payload, into Claims. Numbers
// keep their exact value (see the package documentation for their text).
func Parse(data []byte) (*Claims, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("claims: no JSON object")
		}
		return nil, fmt.Errorf("claims: invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("claims: invalid JSON: data after the top-level value")
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("claims: JSON is %s, not an object", describe(doc))
	}
	return &Claims{root: convert(obj)}, nil
}

func describe(doc any) string {
	switch doc.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	default:
		return "an array"
	}
}

func convert(x any) value {
	switch x := x.(type) {
	case string:
		return value{kind: kindString, text: x}
	case json.Number:
		return value{kind: kindNumber, text: canonicalNumber(string(x))}
	case bool:
		return value{kind: kindBool, text: strconv.FormatBool(x)}
	case []any:
		elems := make([]value, len(x))
		for i, e := range x {
			elems[i] = convert(e)
		}
		return value{kind: kindArray, elems: elems}
	case map[string]any:
		fields := make(map[string]value, len(x))
		for k, e := range x {
			fields[k] = convert(e)
		}
		return value{kind: kindObject, fields: fields}
	default:
		return value{kind: kindNull}
	}
}

// lookup walks path through nested objects. It reports false when a segment
// is missing or the walk meets anything but an object.
func (c *Claims) lookup(path []string) (value, bool) {
	if c == nil {
		return value{}, false
	}
	v := c.root
	for _, seg := range path {
		if v.kind != kindObject {
			return value{}, false
		}
		var ok bool
		if v, ok = v.fields[seg]; !ok {
			return value{}, false
		}
	}
	return v, true
}

const (
	// maxPlainDigits bounds the plain form of a number, so that 1e999999 does
	// not become a megabyte of zeros.
	maxPlainDigits = 400
	// maxLeadingZeros is how many zeros may follow the point in plain form,
	// as in JavaScript: 0.000001 is plain, 0.0000001 is 1e-7.
	maxLeadingZeros = 5
)

// canonicalNumber returns the canonical text of a valid JSON number literal:
// its exact decimal value, without exponent, trailing fractional zeros or
// "-0" where the plain form is short enough, else in scientific form.
func canonicalNumber(lit string) string {
	s, sign := lit, ""
	if s[0] == '-' {
		s, sign = s[1:], "-"
	}
	mant, expText := s, ""
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant, expText = s[:i], s[i+1:]
	}
	intPart, frac := mant, ""
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		intPart, frac = mant[:i], mant[i+1:]
	}
	if frac == "" && expText == "" {
		if intPart == "0" {
			return "0"
		}
		return lit
	}
	exp := int64(0)
	if expText != "" {
		var err error
		// An exponent this large has no sensible decimal form: keep the text.
		if exp, err = strconv.ParseInt(expText, 10, 64); err != nil || exp > math.MaxInt64/2 || exp < math.MinInt64/2 {
			return lit
		}
	}

	// The value is digits × 10^e, with digits free of leading and trailing zeros.
	all := intPart + frac
	digits := strings.Trim(all, "0")
	if digits == "" {
		return "0"
	}
	trailing := len(strings.TrimLeft(all, "0")) - len(digits)
	e := exp - int64(len(frac)) + int64(trailing)
	n := int64(len(digits))
	point := e + n // digits before the decimal point

	switch {
	case e >= 0 && point <= maxPlainDigits:
		return sign + digits + strings.Repeat("0", int(e))
	case e < 0 && point > 0:
		return sign + digits[:point] + "." + digits[point:]
	case e < 0 && -point <= maxLeadingZeros:
		return sign + "0." + strings.Repeat("0", int(-point)) + digits
	}
	out := sign + digits[:1]
	if n > 1 {
		out += "." + digits[1:]
	}
	if point-1 >= 0 {
		return out + "e+" + strconv.FormatInt(point-1, 10)
	}
	return out + "e" + strconv.FormatInt(point-1, 10)
}
