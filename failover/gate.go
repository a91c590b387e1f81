package failover

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cellkit/cellkit/router"
)

// DataMover is the data gate of a stage: it returns once the targets of m
// hold every write the sources made for m's slots and keys (which are
// frozen while it runs), or an error if that cannot be shown before ctx
// ends. Implementations live in infra (SQL replication, row copy); NoneMover
// is the gate of stateless services.
type DataMover interface {
	// Name names the mover in records and progress ("none", "mysql-gtid").
	Name() string
	// WaitData blocks until the targets have every write, and says how it
	// knows in words ("replica at GTID 0-1-5512").
	WaitData(ctx context.Context, cutover string, m Movement) (string, error)
}

// Pruner is an optional DataMover capability, for movers that copy rows
// rather than replicate them: the sources keep the moved rows until the
// flip has landed, and Prune deletes them afterwards. The runner calls it,
// holding the cutover lock and with a table it has just read, after every
// flip it applies and whenever it starts, holds or ends, so a prune that a
// crash interrupted is finished by the next runner. Prune must be
// idempotent and must never delete a row whose owner key t says the cell
// it deletes from owns, nor one of a frozen slot or key (a move in
// progress). Its errors are reported, never fatal: rows left behind are
// unreachable behind the guards.
type Pruner interface {
	Prune(ctx context.Context, cutover string, t *router.Table) (string, error)
}

// NoneMover is the DataMover of stateless services: there is nothing to
// move, so the gate passes at once.
type NoneMover struct{}

// Name is "none".
func (NoneMover) Name() string { return "none" }

// WaitData passes at once.
func (NoneMover) WaitData(context.Context, string, Movement) (string, error) {
	return "stateless: nothing to move", nil
}

// GateInput is what a gate checks: the stage just flipped.
type GateInput struct {
	Cutover string
	Stage   string
	Move    Movement
	// Table is the map after the flip.
	Table *router.Table
	// Since is when the flip landed: a gate over a time window (an error
	// rate) should look only at what came after it.
	Since time.Time
}

// GateResult is one check of one gate.
type GateResult struct {
	Gate   string  `json:"gate"`
	OK     bool    `json:"ok"`
	Value  float64 `json:"value"`
	Detail string  `json:"detail,omitempty"`
}

func (r GateResult) String() string {
	verdict := "pass"
	if !r.OK {
		verdict = "FAIL"
	}
	if r.Detail == "" {
		return fmt.Sprintf("%s %s (%g)", r.Gate, verdict, r.Value)
	}
	return fmt.Sprintf("%s %s (%g): %s", r.Gate, verdict, r.Value, r.Detail)
}

// Gate is an SLO check run during a stage's verify step, repeatedly over
// the bake time. A gate that cannot evaluate (its backend is down) must
// fail: verify fails closed.
type Gate interface {
	Name() string
	Check(ctx context.Context, in GateInput) GateResult
}

// Prober sends one synthetic guarded request for key through the data
// plane (the SDK or cellrouter) and reports whether it was served.
type Prober func(ctx context.Context, key string) error

// ProbeGate is the built-in gate: synthetic requests to keys of the moved
// slots (and the moved whitelisted keys) must all be served.
type ProbeGate struct {
	Probe Prober
	// Keys is how many keys each check probes. Default 8.
	Keys int
	// Prefix names the synthetic keys ("probe-" by default); they must be
	// keys no real user has.
	Prefix string
}

// Name is "probe".
func (g ProbeGate) Name() string { return "probe" }

// Check probes keys of the moved slots; the value is the number of failed
// probes.
func (g ProbeGate) Check(ctx context.Context, in GateInput) GateResult {
	n := g.Keys
	if n <= 0 {
		n = 8
	}
	prefix := g.Prefix
	if prefix == "" {
		prefix = "probe-"
	}
	slotCount := 0
	if in.Table != nil {
		slotCount = in.Table.SlotCount()
	}
	keys := ProbeKeys(in.Move, slotCount, prefix, n)
	res := GateResult{Gate: g.Name(), OK: true}
	var failed []string
	for _, k := range keys {
		if err := g.Probe(ctx, k); err != nil {
			res.Value++
			failed = append(failed, fmt.Sprintf("%s: %v", k, err))
		}
	}
	switch {
	case len(keys) == 0:
		res.Detail = "no keys to probe"
	case len(failed) > 0:
		res.OK = false
		res.Detail = fmt.Sprintf("%d of %d probes failed: %s", len(failed), len(keys), strings.Join(failed[:min(3, len(failed))], "; "))
	default:
		res.Detail = fmt.Sprintf("%d probes served", len(keys))
	}
	return res
}

// ProbeKeys returns up to n keys served by m's targets after m: the moved
// whitelisted keys first, then synthetic keys (prefix + counter) whose
// slots are spread over m's slot ranges. Deterministic.
func ProbeKeys(m Movement, slotCount int, prefix string, n int) []string {
	var out []string
	for _, k := range m.Keys {
		if len(out) == n {
			return out
		}
		out = append(out, k.Key)
	}
	total := m.SlotCount()
	if total == 0 || slotCount == 0 {
		return out
	}
	// The wanted slots: n evenly spaced picks over the moved slots.
	want := map[int]bool{}
	picks := min(n-len(out), total)
	for i := 0; i < picks; i++ {
		idx := i * total / max(picks, 1)
		for _, r := range m.Slots {
			size := r.Last - r.First + 1
			if idx < size {
				want[r.First+idx] = true
				break
			}
			idx -= size
		}
	}
	// Searching a key for a slot takes about slotCount tries; bound it.
	for i := 0; len(want) > 0 && i < 64*slotCount; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if s := router.Slot(k, slotCount); want[s] {
			delete(want, s)
			out = append(out, k)
		}
	}
	return out
}
