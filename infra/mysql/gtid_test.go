package mysql

import (
	"errors"
	"testing"
)

func TestParsePos(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"", "", false},
		{"0-1-5512", "0-1-5512", false},
		{"2-2-90,1-1-5512", "1-1-5512,2-2-90", false},
		{" 1-1-3,\n2-2-1 ", "1-1-3,2-2-1", false},
		{"1-1-18446744073709551615", "1-1-18446744073709551615", false},
		{"1-1", "", true},
		{"1-1-x", "", true},
		{"-1-1-1", "", true},
		{"1-1-1,1-2-2", "", true},
		{"4294967296-1-1", "", true},
	}
	for _, tt := range tests {
		p, err := ParsePos(tt.in)
		if tt.err {
			if !errors.Is(err, ErrBadGTID) {
				t.Errorf("ParsePos(%q) = %v, %v; want ErrBadGTID", tt.in, p, err)
			}
			continue
		}
		if err != nil || p.String() != tt.want {
			t.Errorf("ParsePos(%q) = %q, %v; want %q", tt.in, p, err, tt.want)
		}
	}
}

func mustPos(t *testing.T, s string) Pos {
	t.Helper()
	p, err := ParsePos(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPosArithmetic(t *testing.T) {
	tests := []struct {
		p, q          string
		covers        bool
		minus, maxPos string
	}{
		{"", "", true, "", ""},
		{"1-1-5", "", true, "1-1-5", "1-1-5"},
		{"", "1-1-5", false, "", "1-1-5"},
		{"1-1-5", "1-1-5", true, "", "1-1-5"},
		{"1-1-5", "1-1-4", true, "1-1-5", "1-1-5"},
		{"1-1-4", "1-1-5", false, "", "1-1-5"},
		{"1-1-5,2-2-3", "2-2-9", false, "1-1-5", "1-1-5,2-2-9"},
		{"1-1-5,2-2-9", "1-1-5,2-2-3", true, "2-2-9", "1-1-5,2-2-9"},
		{"1-1-5", "2-2-3,3-3-1", false, "1-1-5", "1-1-5,2-2-3,3-3-1"},
	}
	for _, tt := range tests {
		p, q := mustPos(t, tt.p), mustPos(t, tt.q)
		if got := p.Covers(q); got != tt.covers {
			t.Errorf("%q.Covers(%q) = %v", tt.p, tt.q, got)
		}
		if got := p.Minus(q).String(); got != tt.minus {
			t.Errorf("%q.Minus(%q) = %q, want %q", tt.p, tt.q, got, tt.minus)
		}
		if got := p.Max(q).String(); got != tt.maxPos {
			t.Errorf("%q.Max(%q) = %q, want %q", tt.p, tt.q, got, tt.maxPos)
		}
	}
}
