package claims

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// SyntaxError reports why an expression does not compile and where.
type SyntaxError struct {
	Src    string // Src is the whole expression.
	Offset int    // Offset is the byte offset of the problem in Src.
	Line   int    // Line is the 1-based line of the problem.
	Col    int    // Col is the 1-based column, in characters, of the problem.
	Msg    string // Msg says what is wrong, without position.
}

// snippetWidth bounds how much of a long line an error shows around the caret.
const snippetWidth = 72

func newSyntaxError(src string, offset int, msg string) *SyntaxError {
	offset = min(max(offset, 0), len(src))
	line := 1 + strings.Count(src[:offset], "\n")
	lineStart := strings.LastIndexByte(src[:offset], '\n') + 1
	return &SyntaxError{
		Src:    src,
		Offset: offset,
		Line:   line,
		Col:    1 + utf8.RuneCountInString(src[lineStart:offset]),
		Msg:    msg,
	}
}

// Error prints the position and message, then the line of the expression that
// holds the problem with a caret under it. Long lines are cut around the caret.
func (e *SyntaxError) Error() string {
	var b strings.Builder
	if strings.Contains(e.Src, "\n") {
		b.WriteString("line " + strconv.Itoa(e.Line) + ", ")
	}
	b.WriteString("column " + strconv.Itoa(e.Col) + ": " + e.Msg)

	offset := min(max(e.Offset, 0), len(e.Src))
	lineStart := strings.LastIndexByte(e.Src[:offset], '\n') + 1
	lineEnd := len(e.Src)
	if i := strings.IndexByte(e.Src[offset:], '\n'); i >= 0 {
		lineEnd = offset + i
	}
	before, after := []rune(e.Src[lineStart:offset]), []rune(e.Src[offset:lineEnd])
	prefix, suffix := "", ""
	if len(before) > snippetWidth/2 {
		before, prefix = before[len(before)-snippetWidth/2:], "…"
	}
	if len(after) > snippetWidth/2 {
		after, suffix = after[:snippetWidth/2], "…"
	}

	var caret strings.Builder
	b.WriteString("\n\t" + prefix)
	caret.WriteString("\n\t" + strings.Repeat(" ", utf8.RuneCountInString(prefix)))
	for _, r := range before {
		b.WriteRune(printable(r))
		// A tab stays a tab so that the caret lines up however tabs are shown.
		if r == '\t' {
			caret.WriteByte('\t')
		} else {
			caret.WriteByte(' ')
		}
	}
	for _, r := range after {
		b.WriteRune(printable(r))
	}
	b.WriteString(suffix + caret.String() + "^")
	return b.String()
}

// printable shows a character of the source on one terminal column or more,
// so that control characters cannot break the caret line.
func printable(r rune) rune {
	if r == utf8.RuneError || (r < ' ' && r != '\t') || r == 0x7f {
		return '·'
	}
	return r
}
