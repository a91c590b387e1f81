package prometheus

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadSpec is wrapped by every error of ParseSpec (a *SpecError).
var ErrBadSpec = errors.New("bad prometheus gate spec")

// SpecError says why a gate spec does not parse. errors.Is(err, ErrBadSpec)
// holds.
type SpecError struct {
	Spec   string
	Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("prometheus: gate spec %q: %s", e.Spec, e.Reason)
}

func (e *SpecError) Unwrap() error { return ErrBadSpec }

// ParseSpec reads the command-line form of a gate, "<PromQL> <op> <number>"
// ("sum(rate(http_errors_total[1m])) < 0.01"), into a Config with Query,
// Op and Threshold set; the caller sets URL and the rest.
//
// PromQL has comparison operators of its own ("x > 0", `{code!="200"}`),
// so the spec splits on the rightmost operator that stands outside
// parentheses, brackets, braces and string literals and is followed by
// nothing but a number: "rate(x[1m]) > 0 < 5" is the query
// "rate(x[1m]) > 0" against "< 5". The number is a finite Go or PromQL
// float literal ("0.01", "-1", "1e-3", "0x10"). Comments (#) are not
// allowed: on one line a comment would hide the operator.
func ParseSpec(spec string) (Config, error) {
	fail := func(format string, args ...any) (Config, error) {
		return Config{}, &SpecError{Spec: spec, Reason: fmt.Sprintf(format, args...)}
	}
	cands, err := topLevelOps(spec)
	if err != nil {
		return fail("%v", err)
	}
	if len(cands) == 0 {
		return fail("no comparison operator (< <= > >= == !=) outside parentheses, brackets, braces and strings; want \"<query> <op> <number>\"")
	}
	// The rightmost operator followed by a number wins.
	var rhsErr error
	for i := len(cands) - 1; i >= 0; i-- {
		c := cands[i]
		rhs := strings.TrimSpace(spec[c.end:])
		v, err := parseThreshold(rhs)
		if err != nil {
			if rhsErr == nil {
				rhsErr = fmt.Errorf("after the last operator %q: %w", string(c.op), err)
			}
			continue
		}
		query := strings.TrimSpace(spec[:c.start])
		if query == "" {
			return fail("no query before %q", string(c.op))
		}
		return Config{Query: query, Op: c.op, Threshold: v}, nil
	}
	return fail("%v; want \"<query> <op> <number>\"", rhsErr)
}

func parseThreshold(s string) (float64, error) {
	if s == "" {
		return 0, errors.New("no threshold")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		// PromQL also reads hexadecimal integers ("0x1f"), which
		// ParseFloat takes only with a p exponent.
		n, ierr := strconv.ParseInt(s, 0, 64)
		if ierr != nil {
			return 0, fmt.Errorf("threshold %q is not a number", s)
		}
		v = float64(n)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("threshold %q is not a finite number", s)
	}
	return v, nil
}

// opAt is a comparison operator found at the top level of a spec:
// spec[start:end] is the operator.
type opAt struct {
	op         Op
	start, end int
}

// topLevelOps returns, left to right, the comparison operators of s that
// stand outside brackets and string literals. Brackets must balance and
// strings must end.
func topLevelOps(s string) ([]opAt, error) {
	var (
		out   []opAt
		stack []byte // the closing brackets awaited, innermost last
	)
	closer := map[byte]byte{'(': ')', '[': ']', '{': '}'}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch ch {
		case '"', '\'', '`':
			end := stringEnd(s, i)
			if end < 0 {
				return nil, fmt.Errorf("string literal at offset %d does not end", i)
			}
			i = end
			continue
		case '#':
			return nil, fmt.Errorf("comment (#) at offset %d; a spec is one expression without comments", i)
		case '(', '[', '{':
			stack = append(stack, closer[ch])
			continue
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != ch {
				return nil, fmt.Errorf("unbalanced %q at offset %d", ch, i)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		if len(stack) > 0 {
			continue
		}
		for _, op := range ops {
			if strings.HasPrefix(s[i:], string(op)) {
				out = append(out, opAt{op: op, start: i, end: i + len(op)})
				i += len(op) - 1
				break
			}
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("unbalanced brackets: %q never closed", string(stack[len(stack)-1]))
	}
	return out, nil
}

// stringEnd returns the index of the quote that ends the PromQL string
// literal opening at s[i], or -1. Backquoted strings are raw; the others
// take backslash escapes.
func stringEnd(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j
		}
	}
	return -1
}
