package admission_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
)

func TestConflicts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := func(c, key string, start, end int) admission.Record {
		r := admission.Record{Cell: c, Instance: c + "-0", Key: key, Kind: cell.Write, Start: at(start)}
		if end >= 0 {
			r.End = at(end)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		rs   []admission.Record
		want int
	}{
		{"one cell overlapping itself", []admission.Record{w("a1", "k", 0, 10), w("a1", "k", 5, 15)}, 0},
		{"handover in order", []admission.Record{w("a1", "k", 0, 10), w("b1", "k", 11, 20), w("a1", "k", 21, 30)}, 0},
		{"overlap", []admission.Record{w("a1", "k", 0, 10), w("b1", "k", 10, 20)}, 1},
		{"still running", []admission.Record{w("a1", "k", 0, -1), w("b1", "k", 100, 120)}, 1},
		{"different keys", []admission.Record{w("a1", "k", 0, 10), w("b1", "j", 5, 20)}, 0},
		{"reads ignored", []admission.Record{w("a1", "k", 0, 10), {Cell: "b1", Key: "k", Kind: cell.Read, Start: at(5), End: at(6)}}, 0},
		{"long write spans several", []admission.Record{w("a1", "k", 0, 100), w("b1", "k", 10, 20), w("b1", "k", 30, 40)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := admission.Conflicts(tc.rs)
			if len(got) != tc.want {
				t.Fatalf("got %d conflicts %v, want %d", len(got), got, tc.want)
			}
			for _, c := range got {
				t.Log(c)
			}
		})
	}
}

func TestLog(t *testing.T) {
	var l admission.Log
	r := admission.Record{Cell: "a1", Key: "k", Kind: cell.Write, Start: time.Unix(1, 0)}
	l.Admitted(r)
	l.Admitted(r)
	if n := l.Running(); n != 2 {
		t.Fatalf("running %d, want 2", n)
	}
	r.End = time.Unix(2, 0)
	l.Released(r)
	if n := l.Running(); n != 1 {
		t.Fatalf("running %d, want 1", n)
	}
	rs := l.Records()
	if len(rs) != 2 || rs[0].End.IsZero() || !rs[1].End.IsZero() {
		t.Fatalf("records %v: want one released and one running", rs)
	}
	l.Admitted(admission.Record{Cell: "b1", Key: "k", Kind: cell.Write, Start: time.Unix(3, 0)})
	if c := l.Conflicts(); len(c) != 1 {
		t.Fatalf("conflicts %v, want the running a1 write against b1's", c)
	}
}

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		d    admission.Decision
		want string
	}{
		{admission.Decision{}, "admitted"},
		{admission.Decision{Code: cell.CodeFrozen, Err: cell.ErrFrozen}, "FROZEN"},
		{admission.Decision{Err: errors.New("bad epoch")}, "error"},
	} {
		if got := tc.d.Outcome(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.d, got, tc.want)
		}
	}
}
