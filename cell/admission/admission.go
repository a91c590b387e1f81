package admission

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cellkit/cellkit/cell"
)

// Record is one admitted request as a guard adapter saw it.
type Record struct {
	Cell     string
	Instance string
	Key      string
	Kind     cell.Kind
	Epoch    uint64 // epoch of the table that admitted it
	Slot     int
	Method   string    // gRPC full method, or the HTTP route pattern
	Start    time.Time // when the guard said yes
	End      time.Time // when the handler returned, before the write was released; zero while running
}

func (r Record) String() string {
	end := "running"
	if !r.End.IsZero() {
		end = r.End.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%s %s/%s key %q slot %d epoch %d %s [%s, %s]",
		r.Kind, r.Cell, r.Instance, r.Key, r.Slot, r.Epoch, r.Method, r.Start.Format(time.RFC3339Nano), end)
}

// Decision is one guard decision on a guarded request.
type Decision struct {
	Cell     string
	Instance string
	Method   string
	Kind     cell.Kind
	Key      string
	Code     cell.Code // "" when admitted or when Err is not a guard refusal
	Err      error     // nil when admitted
}

// Outcome names the decision for metrics: "admitted", a refusal code
// (WRONG_CELL, FROZEN, FENCED, STALE_MAP, NO_KEY), or "error" for anything
// else (a malformed epoch, a cancelled request).
func (d Decision) Outcome() string {
	switch {
	case d.Err == nil:
		return "admitted"
	case d.Code != "":
		return string(d.Code)
	}
	return "error"
}

// Log collects records from OnAdmit and OnRelease hooks. The zero value is
// ready; it is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	done    []Record
	running map[Record]int // admitted, not yet released (End zero): how many alike
}

// Admitted records that r was admitted (use as an OnAdmit hook).
func (l *Log) Admitted(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running == nil {
		l.running = map[Record]int{}
	}
	r.End = time.Time{}
	l.running[r]++
}

// Released records that r ended (use as an OnRelease hook).
func (l *Log) Released(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := r
	k.End = time.Time{}
	if l.running[k] > 1 {
		l.running[k]--
	} else {
		delete(l.running, k)
	}
	l.done = append(l.done, r)
}

// Records returns every record: the released ones, then those still
// running (with a zero End).
func (l *Log) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.done)
	for r, n := range l.running {
		for range n {
			out = append(out, r)
		}
	}
	return out
}

// Running returns how many admitted requests have not been released.
func (l *Log) Running() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.running {
		n += c
	}
	return n
}

// Conflicts returns the pairs of writes in the log that break the
// single-writer promise (see Conflicts).
func (l *Log) Conflicts() []Conflict { return Conflicts(l.Records()) }

// Conflict is two writes for one key, admitted by different cells, whose
// admission intervals overlap.
type Conflict struct{ A, B Record }

func (c Conflict) String() string {
	return fmt.Sprintf("key %q written by two cells at once:\n\t%v\n\t%v", c.A.Key, c.A, c.B)
}

// Conflicts returns every pair of write records for the same key from
// different cells whose [Start, End] intervals overlap; a record with a
// zero End is still running and overlaps everything after its Start. Reads
// are ignored. The records must come from one process's clock (as in an
// integration test) for the comparison to mean anything.
func Conflicts(records []Record) []Conflict {
	byKey := map[string][]Record{}
	for _, r := range records {
		if r.Kind == cell.Write {
			byKey[r.Key] = append(byKey[r.Key], r)
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []Conflict
	for _, k := range keys {
		rs := byKey[k]
		slices.SortFunc(rs, func(a, b Record) int {
			if c := a.Start.Compare(b.Start); c != 0 {
				return c
			}
			return strings.Compare(a.Cell, b.Cell)
		})
		// Sweep in start order, keeping the records whose interval is
		// still open at the current start.
		var open []Record
		for _, r := range rs {
			kept := open[:0]
			for _, o := range open {
				if o.End.IsZero() || !o.End.Before(r.Start) {
					kept = append(kept, o)
					if o.Cell != r.Cell {
						out = append(out, Conflict{A: o, B: r})
					}
				}
			}
			open = append(kept, r)
		}
	}
	return out
}
