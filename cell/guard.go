package cell

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

// Kind says whether a guarded method reads or writes.
type Kind uint8

// Method kinds. Only writes are tracked in flight: they are what the
// single-writer promise is about.
const (
	Read Kind = iota + 1
	Write
)

func (k Kind) String() string {
	switch k {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Config configures a Guard. Zero values mean the defaults.
type Config struct {
	// Cell is the ID of the cell this guard protects. Required.
	Cell string
	// Instance names this guard instance within the cell (e.g. the pod
	// name). Required.
	Instance string
	// StaleWait bounds how long a request that carries a newer epoch than
	// the guard's waits for the guard to catch up before it is refused
	// with STALE_MAP. Default 500ms.
	StaleWait time.Duration
	// FrozenRetryAfter is the pause suggested to callers refused with
	// FROZEN. Default 100ms.
	FrozenRetryAfter time.Duration
	// Clock is the time source. Default the real clock.
	Clock clock.Clock
}

// DefaultConfig returns the defaults for cell and instance.
func DefaultConfig(cell, instance string) Config {
	return Config{Cell: cell, Instance: instance, StaleWait: 500 * time.Millisecond, FrozenRetryAfter: 100 * time.Millisecond, Clock: clock.Real()}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := (router.Cell{ID: c.Cell, IDC: "x", State: router.StateActive}).Check(); err != nil || c.Cell == "" {
		return fmt.Errorf("cell: guard cell %q: %w", c.Cell, ErrBadConfig)
	}
	if err := (router.Cell{ID: c.Instance, IDC: "x", State: router.StateActive}).Check(); err != nil || c.Instance == "" {
		return fmt.Errorf("cell: guard instance %q (want 1-63 of A-Z a-z 0-9 . _ -): %w", c.Instance, ErrBadConfig)
	}
	if c.StaleWait < 0 || c.FrozenRetryAfter < 0 {
		return fmt.Errorf("cell: negative durations: %w", ErrBadConfig)
	}
	return nil
}

func (c *Config) setDefaults() {
	d := DefaultConfig(c.Cell, c.Instance)
	if c.StaleWait == 0 {
		c.StaleWait = d.StaleWait
	}
	if c.FrozenRetryAfter == 0 {
		c.FrozenRetryAfter = d.FrozenRetryAfter
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
}

// generation is one applied table and the writes admitted under it, per
// slot. A write is counted in the generation whose table admitted it.
type generation struct {
	table    *router.Table
	inflight []atomic.Int32 // by slot
	total    atomic.Int64
	// blocked marks the slots this cell may not write at this table's epoch
	// (not owned, frozen, or holding a frozen key or a key whitelisted
	// elsewhere). Writes still in flight for these slots in older
	// generations hold back the ack of this epoch.
	blocked    []bool
	superseded atomic.Bool
	// selfFenced: the map marks this cell fenced at this epoch.
	selfFenced bool
}

// Guard decides, inside a cell, whether this instance may serve a request
// for a key, from its own current table, and tracks the writes it admitted
// so that it acknowledges an epoch only once no write admitted under an
// older epoch is still running for a slot that epoch took away.
//
// It is a pure core: tables come in through Apply (from a router.Watcher's
// OnUpdate), the lease through its Fence; infra adapters publish Applied()
// as the instance's ack and keep the fence renewed.
type Guard struct {
	cfg   Config
	fence *Fence

	cur atomic.Pointer[generation]

	mu      sync.Mutex
	older   []*generation // superseded, with writes possibly still in flight
	changed chan struct{} // closed on every Apply
	applied uint64        // highest epoch acknowledged so far

	kick chan struct{} // a draining generation released a write
}

// NewGuard returns a guard for cfg.Cell starting at table t. fence may be
// nil for clusters that run without self-fencing (then an operator must
// confirm an IDC is down by hand before its slots move).
func NewGuard(cfg Config, t *router.Table, fence *Fence) (*Guard, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("cell: guard needs an initial table: %w", ErrBadConfig)
	}
	g := &Guard{cfg: cfg, fence: fence, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
	g.cur.Store(newGeneration(t, cfg.Cell))
	g.applied = t.Epoch()
	return g, nil
}

func newGeneration(t *router.Table, self string) *generation {
	n := t.SlotCount()
	g := &generation{table: t, inflight: make([]atomic.Int32, n), blocked: make([]bool, n)}
	if c, ok := t.Cell(self); ok && c.State == router.StateFenced {
		g.selfFenced = true
	}
	for s := 0; s < n; s++ {
		_, frozen := t.SlotFrozen(s)
		g.blocked[s] = frozen || t.SlotOwner(s) != self
	}
	for _, k := range t.FrozenKeys() {
		g.blocked[t.Slot(k.Key)] = true
	}
	for _, w := range t.Whitelist() {
		if w.Cell != self {
			g.blocked[t.Slot(w.Key)] = true
		}
	}
	return g
}

// Cell is the guarded cell's ID.
func (g *Guard) Cell() string { return g.cfg.Cell }

// Instance is this guard instance's name.
func (g *Guard) Instance() string { return g.cfg.Instance }

// Fence returns the guard's fence (nil when fencing is off).
func (g *Guard) Fence() *Fence { return g.fence }

// Table returns the table the guard currently decides with.
func (g *Guard) Table() *router.Table { return g.cur.Load().table }

// Apply installs a newer table; older or equal epochs are ignored. Requests
// admitted from now on are decided with it.
func (g *Guard) Apply(t *router.Table) {
	g.mu.Lock()
	old := g.cur.Load()
	if t.Epoch() <= old.table.Epoch() {
		g.mu.Unlock()
		return
	}
	if t.SlotCount() != old.table.SlotCount() {
		// A map is created with its slot count and keeps it; a table that
		// changes it cannot be compared slot by slot. Refuse everything
		// until an operator sorts it out, rather than guess.
		g.mu.Unlock()
		if g.fence != nil {
			g.fence.Trip(fmt.Sprintf("map slot count changed from %d to %d", old.table.SlotCount(), t.SlotCount()))
		}
		return
	}
	g.cur.Store(newGeneration(t, g.cfg.Cell))
	old.superseded.Store(true)
	g.older = append(g.older, old)
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
	g.signal()
}

func (g *Guard) signal() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// Admission is a guard's yes. For a write, Release must be called once the
// request is over (its effects committed or abandoned); it is safe to call
// more than once, and a no-op for reads.
type Admission struct {
	Key   string
	Kind  Kind
	Epoch uint64 // the epoch of the table that admitted the request
	Slot  int
	gen   *generation
	once  *atomic.Bool
	g     *Guard
}

// Release ends an admitted write.
func (a Admission) Release() {
	if a.once != nil && a.once.CompareAndSwap(false, true) {
		a.g.done(a.gen, a.Slot)
	}
}

// Admit decides whether this instance may serve a request for key. reqEpoch
// is the epoch the caller routed with (0 if unknown): if it is newer than
// the guard's, the guard waits up to StaleWait for that epoch first, so a
// caller with a fresh map never gets a stale guard's "yes".
//
// Refusals are *WrongCellError, *FrozenError, *FencedError, *StaleMapError
// or ErrNoKey (see CodeOf).
func (g *Guard) Admit(ctx context.Context, key string, kind Kind, reqEpoch uint64) (Admission, error) {
	if key == "" {
		return Admission{}, fmt.Errorf("cell: %s: %w", g.cfg.Cell, ErrNoKey)
	}
	if g.fence != nil {
		if err := g.fence.Check(); err != nil {
			return Admission{}, err
		}
	}
	if reqEpoch > g.cur.Load().table.Epoch() {
		if err := g.waitEpoch(ctx, reqEpoch); err != nil {
			return Admission{}, err
		}
	}
	for {
		gen := g.cur.Load()
		t := gen.table
		r := t.Lookup(key)
		if err := g.decide(key, kind, r, gen); err != nil {
			return Admission{}, err
		}
		a := Admission{Key: key, Kind: kind, Epoch: t.Epoch(), Slot: r.Slot}
		if kind != Write {
			return a, nil
		}
		gen.inflight[r.Slot].Add(1)
		gen.total.Add(1)
		// The count must be visible to whoever superseded gen: if the
		// table changed between the load and the count, undo and decide
		// again with the new one.
		if g.cur.Load() != gen {
			g.done(gen, r.Slot)
			continue
		}
		// Fencing is checked again after the write is counted, so a fence
		// that trips meanwhile is not missed.
		if g.fence != nil {
			if err := g.fence.Check(); err != nil {
				g.done(gen, r.Slot)
				return Admission{}, err
			}
		}
		a.gen, a.once, a.g = gen, new(atomic.Bool), g
		return a, nil
	}
}

// decide applies the rules: a cell fenced in the map admits nothing; only
// the owner serves a key; a frozen key takes no writes (its owner still
// serves reads: no write can change what they see until the flip).
func (g *Guard) decide(key string, kind Kind, r router.Route, gen *generation) error {
	t := gen.table
	if gen.selfFenced {
		return &FencedError{Cell: g.cfg.Cell, Instance: g.cfg.Instance, Reason: fmt.Sprintf("cell marked fenced in the map at epoch %d", t.Epoch())}
	}
	if r.Cell == nil || r.Cell.ID != g.cfg.Cell {
		wc := &WrongCellError{Key: key, Cell: g.cfg.Cell, Epoch: t.Epoch()}
		if r.Cell != nil {
			wc.Owner, wc.OwnerIDC = r.Cell.ID, r.Cell.IDC
		}
		return wc
	}
	if r.Frozen && kind == Write {
		return &FrozenError{Key: key, Slot: r.Slot, Cutover: r.Cutover, RetryAfter: g.cfg.FrozenRetryAfter, Epoch: t.Epoch()}
	}
	return nil
}

func (g *Guard) done(gen *generation, slot int) {
	gen.inflight[slot].Add(-1)
	gen.total.Add(-1)
	// Apply sets superseded before it signals, so a release that misses
	// the flag is seen by the Applied that Apply's signal triggers.
	if gen.superseded.Load() {
		g.signal()
	}
}

func (g *Guard) waitEpoch(ctx context.Context, epoch uint64) error {
	t := g.cfg.Clock.NewTimer(g.cfg.StaleWait)
	defer t.Stop()
	for {
		g.mu.Lock()
		ch := g.changed
		have := g.cur.Load().table.Epoch()
		g.mu.Unlock()
		if have >= epoch {
			return nil
		}
		select {
		case <-ch:
		case <-t.C():
			return &StaleMapError{Have: have, Want: epoch, RetryAfter: g.cfg.FrozenRetryAfter}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// InFlight returns the number of admitted writes still running.
func (g *Guard) InFlight() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.cur.Load().total.Load()
	for _, o := range g.older {
		n += o.total.Load()
	}
	return n
}

// Applied returns the highest epoch this instance may acknowledge: the
// newest applied epoch E such that no write admitted under an older epoch is
// still in flight for a slot E does not let this cell write. It never
// decreases.
func (g *Guard) Applied() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Drop superseded generations with nothing in flight.
	kept := g.older[:0]
	for _, o := range g.older {
		if o.total.Load() != 0 {
			kept = append(kept, o)
		}
	}
	clear(g.older[len(kept):])
	g.older = kept

	// Candidates, newest first: the current generation, then the older
	// ones still draining (their epochs were applied too).
	cands := append([]*generation{g.cur.Load()}, reversed(g.older)...)
	for _, c := range cands {
		e := c.table.Epoch()
		if e <= g.applied {
			break
		}
		if g.drainedFor(c) {
			g.applied = e
			break
		}
	}
	return g.applied
}

// drainedFor reports whether every generation older than c has no write in
// flight for a slot c blocks.
func (g *Guard) drainedFor(c *generation) bool {
	for _, o := range g.older {
		if o.table.Epoch() >= c.table.Epoch() {
			continue
		}
		for s, blocked := range c.blocked {
			if blocked && o.inflight[s].Load() != 0 {
				return false
			}
		}
	}
	return true
}

func reversed(gs []*generation) []*generation {
	out := make([]*generation, len(gs))
	for i, g := range gs {
		out[len(gs)-1-i] = g
	}
	return out
}

// NextApplied blocks until Applied() exceeds after and returns it, or
// returns ctx's error. One goroutine (the ack publisher) calls it.
func (g *Guard) NextApplied(ctx context.Context, after uint64) (uint64, error) {
	for {
		if e := g.Applied(); e > after {
			return e, nil
		}
		select {
		case <-g.kick:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}
