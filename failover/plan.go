package failover

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/cellkit/cellkit/router"
)

// Errors of planning. Every refusal wraps ErrBadPlan and says why.
var (
	ErrBadPlan       = errors.New("bad cutover plan")
	ErrNothingToMove = errors.New("nothing to move")
)

// Endpoints names cells, directly or as whole IDCs.
type Endpoints struct {
	Cells []string `json:"cells,omitempty"`
	IDCs  []string `json:"idcs,omitempty"`
}

func (e Endpoints) String() string {
	var parts []string
	for _, c := range e.Cells {
		parts = append(parts, "cell "+c)
	}
	for _, i := range e.IDCs {
		parts = append(parts, "idc "+i)
	}
	return strings.Join(parts, ", ")
}

// Fraction is a share of the moving set, Num/Den, 0 < Num/Den <= 1.
type Fraction struct{ Num, Den int }

func (f Fraction) String() string {
	if f.Num == f.Den {
		return "1"
	}
	return strconv.Itoa(f.Num) + "/" + strconv.Itoa(f.Den)
}

// of returns ceil(f * n).
func (f Fraction) of(n int) int { return (f.Num*n + f.Den - 1) / f.Den }

func (f Fraction) less(g Fraction) bool { return f.Num*g.Den < g.Num*f.Den }

// StageSpec is one stage of a plan: the canary keys ("whitelist") or a
// cumulative fraction of the moving slots.
type StageSpec struct {
	Whitelist bool     `json:"whitelist,omitempty"`
	Fraction  Fraction `json:"fraction,omitzero"`
}

func (s StageSpec) String() string {
	if s.Whitelist {
		return "whitelist"
	}
	return s.Fraction.String()
}

// DefaultStages is whitelist, 1/256, 1/8, 1/4, 1/2, 1.
func DefaultStages() []StageSpec {
	return []StageSpec{{Whitelist: true}, frac(1, 256), frac(1, 8), frac(1, 4), frac(1, 2), frac(1, 1)}
}

func frac(n, d int) StageSpec { return StageSpec{Fraction: Fraction{n, d}} }

// ParseStages parses "whitelist,1/256,1/16,1/2,1".
func ParseStages(s string) ([]StageSpec, error) {
	var out []StageSpec
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "whitelist" {
			out = append(out, StageSpec{Whitelist: true})
			continue
		}
		num, den, ok := strings.Cut(part, "/")
		if !ok {
			den = "1"
		}
		n, err1 := strconv.Atoi(num)
		d, err2 := strconv.Atoi(den)
		if err1 != nil || err2 != nil || n <= 0 || d <= 0 || n > d {
			return nil, fmt.Errorf("failover: stage %q: want \"whitelist\" or a fraction like 1/8 in (0, 1]: %w", part, ErrBadPlan)
		}
		out = append(out, StageSpec{Fraction: Fraction{n, d}})
	}
	return out, checkStages(out)
}

func checkStages(stages []StageSpec) error {
	if len(stages) == 0 {
		return fmt.Errorf("failover: no stages: %w", ErrBadPlan)
	}
	var last *Fraction
	for i, s := range stages {
		if s.Whitelist {
			if i != 0 {
				return fmt.Errorf("failover: the whitelist stage must come first (it is stage %d): %w", i+1, ErrBadPlan)
			}
			continue
		}
		f := s.Fraction
		if f.Num <= 0 || f.Den <= 0 || f.Num > f.Den {
			return fmt.Errorf("failover: stage %d fraction %s not in (0, 1]: %w", i+1, f, ErrBadPlan)
		}
		if last != nil && !last.less(f) {
			return fmt.Errorf("failover: stage fractions must increase: %s then %s: %w", last, f, ErrBadPlan)
		}
		last = &stages[i].Fraction
	}
	return nil
}

// Request says what to move.
type Request struct {
	From, To Endpoints
	// Stages defaults to DefaultStages().
	Stages []StageSpec
	// Canaries are the keys the whitelist stage moves. Empty: the keys
	// currently whitelisted to a source cell.
	Canaries []string
}

// Plan is the deterministic result of planning: what each stage moves.
type Plan struct {
	From      []string `json:"from"` // source cells
	To        []string `json:"to"`   // target cells
	SlotCount int      `json:"slotCount"`
	Epoch     uint64   `json:"epoch"`       // the map epoch it was planned on
	Moving    int      `json:"movingSlots"` // slots the whole plan moves
	BlockSize int      `json:"blockSize"`   // slots moved together, spread over the slot space
	Stages    []Stage  `json:"stages"`
}

// Stage is one stage of a plan. Moves lists only what this stage adds;
// Cumulative counts every slot moved once it is done.
type Stage struct {
	Name       string            `json:"name"`
	Keys       []KeyMove         `json:"keys,omitempty"`
	Moves      []router.SlotMove `json:"moves,omitempty"`
	Slots      int               `json:"slots"`
	Cumulative int               `json:"cumulative"`
	Share      float64           `json:"share"` // Cumulative / SlotCount: the users affected once it is done
}

// KeyMove is one canary key pinned to a new cell.
type KeyMove struct {
	Key  string `json:"key"`
	From string `json:"from"`
	To   string `json:"to"`
}

// SpreadBlocks is how many blocks the slot space is cut into for spreading
// stages: a stage moves whole blocks, taken in bit-reversed order so each
// stage is spread evenly over the slot space. With 1024 slots a block is one
// slot; with 65536 it is 64, which keeps the map small (an owner range per
// block at worst).
const SpreadBlocks = 1024

// NewPlan plans moving everything the source cells own to the target cells.
// It is a pure function of the table and the request.
func NewPlan(t *router.Table, req Request) (*Plan, error) {
	stages := req.Stages
	if stages == nil {
		stages = DefaultStages()
	}
	if err := checkStages(stages); err != nil {
		return nil, err
	}
	from, err := resolve(t, "source", req.From)
	if err != nil {
		return nil, err
	}
	to, err := resolve(t, "target", req.To)
	if err != nil {
		return nil, err
	}
	for _, c := range to {
		if slices.Contains(from, c) {
			return nil, fmt.Errorf("failover: cell %s is both a source and a target: %w", c, ErrBadPlan)
		}
		if cell, _ := t.Cell(c); cell.State != router.StateActive {
			return nil, fmt.Errorf("failover: target cell %s is %s, not active: %w", c, cell.State, ErrBadPlan)
		}
	}

	n := t.SlotCount()
	block := max(1, n/SpreadBlocks)
	// Moving slots grouped by block, blocks in bit-reversed order.
	isSource := map[string]bool{}
	for _, c := range from {
		isSource[c] = true
	}
	var order [][]int
	nb := n / block
	width := bits.Len(uint(nb - 1))
	for i := 0; i < nb; i++ {
		b := int(bits.Reverse(uint(i)) >> (bits.UintSize - width))
		if width == 0 {
			b = 0
		}
		var grp []int
		for s := b * block; s < (b+1)*block; s++ {
			if isSource[t.SlotOwner(s)] {
				grp = append(grp, s)
			}
		}
		if len(grp) > 0 {
			order = append(order, grp)
		}
	}
	moving := 0
	for _, g := range order {
		moving += len(g)
	}

	// Targets balanced by slot count: each block goes to the target that
	// owns the fewest slots so far (ties by ID).
	load := map[string]int{}
	for _, c := range to {
		load[c] = len(t.SlotsOf(c))
	}
	target := make([]string, len(order))
	for i, g := range order {
		best := to[0]
		for _, c := range to[1:] {
			if load[c] < load[best] {
				best = c
			}
		}
		target[i] = best
		load[best] += len(g)
	}
	slotTarget := map[int]string{}
	for i, g := range order {
		for _, s := range g {
			slotTarget[s] = target[i]
		}
	}

	p := &Plan{From: from, To: to, SlotCount: n, Epoch: t.Epoch(), Moving: moving, BlockSize: block}
	taken, done := 0, 0
	for _, st := range stages {
		if st.Whitelist {
			keys, err := canaries(t, req.Canaries, isSource, slotTarget, to)
			if err != nil {
				return nil, err
			}
			p.Stages = append(p.Stages, Stage{Name: "whitelist", Keys: keys, Cumulative: done})
			continue
		}
		want := st.Fraction.of(moving)
		var slots []int
		for taken < len(order) && done < want {
			slots = append(slots, order[taken]...)
			done += len(order[taken])
			taken++
		}
		slices.Sort(slots)
		p.Stages = append(p.Stages, Stage{Name: st.String(), Moves: moves(t, slots, slotTarget), Slots: len(slots), Cumulative: done})
	}
	// The stage that completes the move also takes the keys whitelisted to
	// a source cell that no earlier stage moved: after it the sources serve
	// nothing (a drained cell goes offline, which it may only do empty).
	if k := len(p.Stages) - 1; k >= 0 && !stages[k].Whitelist && p.Stages[k].Cumulative == moving {
		moved := map[string]bool{}
		for _, st := range p.Stages {
			for _, km := range st.Keys {
				moved[km.Key] = true
			}
		}
		left, err := canaries(t, nil, isSource, slotTarget, to)
		if err != nil {
			return nil, err
		}
		for _, km := range left {
			if !moved[km.Key] {
				p.Stages[k].Keys = append(p.Stages[k].Keys, km)
			}
		}
	}
	for i := range p.Stages {
		p.Stages[i].Share = float64(p.Stages[i].Cumulative) / float64(n)
	}
	keys := 0
	for _, st := range p.Stages {
		keys += len(st.Keys)
	}
	if moving == 0 && keys == 0 {
		return nil, fmt.Errorf("failover: %s own no slots and no whitelisted keys: %w: %w", req.From, ErrNothingToMove, ErrBadPlan)
	}
	return p, nil
}

func resolve(t *router.Table, role string, e Endpoints) ([]string, error) {
	set := map[string]bool{}
	for _, c := range e.Cells {
		if _, ok := t.Cell(c); !ok {
			return nil, fmt.Errorf("failover: %s cell %q: %w: %w", role, c, router.ErrUnknownCell, ErrBadPlan)
		}
		set[c] = true
	}
	for _, idc := range e.IDCs {
		found := false
		for _, c := range t.Cells() {
			if c.IDC == idc {
				set[c.ID], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("failover: %s IDC %q has no cells: %w", role, idc, ErrBadPlan)
		}
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("failover: no %s cells given: %w", role, ErrBadPlan)
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	slices.Sort(out)
	return out, nil
}

// canaries picks the whitelist stage's keys and where each goes: to the
// target of its slot if the slot moves, else to the least-loaded target.
func canaries(t *router.Table, keys []string, isSource map[string]bool, slotTarget map[int]string, to []string) ([]KeyMove, error) {
	explicit := len(keys) > 0
	if !explicit {
		for _, w := range t.Whitelist() {
			if isSource[w.Cell] {
				keys = append(keys, w.Key)
			}
		}
	}
	var out []KeyMove
	for _, k := range keys {
		if err := router.CheckKey(k); err != nil {
			return nil, fmt.Errorf("failover: canary: %w: %w", err, ErrBadPlan)
		}
		owner := t.Owner(k)
		if owner == nil || !isSource[owner.ID] {
			if explicit {
				return nil, fmt.Errorf("failover: canary key %q is served by %s, not by a source cell: %w", k, owner.ID, ErrBadPlan)
			}
			continue
		}
		dst, ok := slotTarget[t.Slot(k)]
		if !ok {
			dst = to[0]
		}
		out = append(out, KeyMove{Key: k, From: owner.ID, To: dst})
	}
	return out, nil
}

// moves groups sorted slots into ranges with one source and one target.
func moves(t *router.Table, slots []int, slotTarget map[int]string) []router.SlotMove {
	var out []router.SlotMove
	for _, s := range slots {
		from, to := t.SlotOwner(s), slotTarget[s]
		if k := len(out); k > 0 && out[k-1].Last == s-1 && out[k-1].From == from && out[k-1].To == to {
			out[k-1].Last = s
			continue
		}
		out = append(out, router.SlotMove{SlotRange: router.SlotRange{First: s, Last: s}, From: from, To: to})
	}
	return out
}

// Reverse returns the plan that moves back exactly what p moves, stage by
// stage in the same order (the smallest share first again): every slot
// move and key move with its source and target swapped. epoch is the map
// epoch it is planned on (the map after p finished). It moves only what p
// moved, not everything the targets own; each stage's freeze still checks
// that the slots are where p left them (ErrMapChanged otherwise).
func (p *Plan) Reverse(epoch uint64) *Plan {
	r := &Plan{From: slices.Clone(p.To), To: slices.Clone(p.From), SlotCount: p.SlotCount, Epoch: epoch,
		Moving: p.Moving, BlockSize: p.BlockSize}
	for _, st := range p.Stages {
		m := Movement{Slots: st.Moves, Keys: st.Keys}.Reverse()
		r.Stages = append(r.Stages, Stage{Name: st.Name, Keys: m.Keys, Moves: m.Slots, Slots: st.Slots,
			Cumulative: st.Cumulative, Share: st.Share})
	}
	return r
}
