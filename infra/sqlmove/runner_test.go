package sqlmove

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

const cluster = "sqlmove"

var errKilled = errors.New("runner killed by the test")

// runLab is an embedded etcd with the map, SQLite cells a1 (IDC-A, slots
// 0-127) and b1 (IDC-B, 128-255), and a copy mover that reads the map
// from etcd. No guards: nothing writes the books while the runners run;
// these tests are about crash safety.
type runLab struct {
	*env
	store *etcdstore.Store
	cli   *clientv3.Client
	plan  *failover.Plan

	mu       sync.Mutex
	progress []string
}

func newRunLab(t *testing.T) *runLab {
	t.Helper()
	srv := etcdtest.Start(t)
	cli := etcdtest.Client(t, srv)
	store := etcdtest.Store(t, cli, cluster)
	tb := etcdtest.TwoCellMap(t, testSlots)
	// Canaries pinned to a1 (the whitelist stage moves them), a key of an
	// a1 slot pinned to b1 (it lives there all along and must survive the
	// slot moving onto b1), and one in a b1 slot pinned to a1.
	for k, c := range map[string]string{keyIn("canary-", 3): "a1", keyIn("canary-", 90): "a1", keyIn("atb-", 17): "b1", keyIn("bta-", 200): "a1"} {
		must(t, tb.SetWhitelist(k, c))
	}
	must(t, tb.Validate())
	_, err := store.Create(ctxT(t), "test map", tb)
	must(t, err)
	sealed, _, err := store.Load(ctxT(t))
	must(t, err)
	rl := &runLab{store: store, cli: cli}
	rl.env = newEnv(t, startSQLite(t), sealed, 2, func(c *Config) {
		c.Table = func(ctx context.Context) (*router.Table, error) {
			tb, _, err := store.Load(ctx)
			return tb, err
		}
	})
	stages, err := failover.ParseStages("whitelist,1/8,1")
	must(t, err)
	rl.plan, err = failover.NewPlan(sealed, failover.Request{
		From: failover.Endpoints{IDCs: []string{"IDC-A"}}, To: failover.Endpoints{IDCs: []string{"IDC-B"}}, Stages: stages,
	})
	must(t, err)
	return rl
}

func (rl *runLab) acquire() *etcdcutover.Control {
	rl.t.Helper()
	ctl, err := etcdcutover.Acquire(ctxT(rl.t), rl.cli, etcdcutover.Config{Cluster: cluster, Actor: "tester", LockTTL: 2 * time.Second, Logger: quiet})
	must(rl.t, err)
	return ctl
}

func (rl *runLab) onProgress(p failover.Progress) {
	if p.Kind != "data" {
		return
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.progress = append(rl.progress, p.Message)
}

// said reports whether a data progress message contains s.
func (rl *runLab) said(s string) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, m := range rl.progress {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func (rl *runLab) table() *router.Table {
	rl.t.Helper()
	tb, _, err := rl.store.Load(ctxT(rl.t))
	must(rl.t, err)
	return tb
}

// moved are the slots of plan stage i.
func (rl *runLab) moved(i int) []router.SlotMove { return rl.plan.Stages[i].Moves }

func (rl *runLab) slotRowsOf(cell string, moves []router.SlotMove) int {
	n := 0
	for _, m := range moves {
		n += rl.slotRows(cell, m.First, m.Last)
	}
	return n
}

// resume runs a second runner on the record of a killed one and checks the
// cutover ends done with every row at its owner exactly once.
func (rl *runLab) resume(id string) {
	t := rl.t
	t.Helper()
	ctl := rl.acquire() // waits for the dead runner's lease to expire
	defer ctl.Close()
	rec, _, err := ctl.Records().Get(ctxT(t), id)
	must(t, err)
	r := failover.Runner{Control: ctl, Mover: rl.mover, GateInterval: 20 * time.Millisecond, OnProgress: rl.onProgress}
	final, err := r.Run(ctxT(t), rec, failover.Event{Kind: failover.EvResume, At: time.Now()})
	must(t, err)
	if final.Status != failover.StatusDone {
		t.Fatalf("resumed cutover ended %s: %s", final.Status, final.Reason)
	}
	tb := rl.table()
	if got := len(tb.SlotsOf("a1")); got != 0 {
		t.Errorf("a1 still owns %d slots", got)
	}
	for _, w := range tb.Whitelist() {
		if w.Cell != "b1" {
			t.Errorf("key %s still pinned to %s", w.Key, w.Cell)
		}
	}
	rl.check(tb, true)
	es, err := rl.mover.Journal(ctxT(t))
	must(t, err)
	for _, e := range es {
		if e.State != StatePruned {
			t.Errorf("journal entry %s %s→%s %s is %s", e.ID, e.From, e.To, router.FormatSlotRanges(e.Slots), e.State)
		}
	}
	if len(es) != 3 {
		t.Errorf("%d journal entries, want one per stage", len(es))
	}
	if !rl.said("copy: copied ") || !rl.said("copy: pruned ") {
		t.Errorf("progress never reported the copy and the prune: %q", rl.progress)
	}
}

func (rl *runLab) start(why string, r *failover.Runner) *failover.State {
	rl.t.Helper()
	st := failover.NewState(failover.NewID("cut", time.Now()), "tester", why, rl.plan,
		failover.Options{Auto: true, Bake: 50 * time.Millisecond, BarrierTimeout: 10 * time.Second, DataTimeout: 30 * time.Second}, time.Now())
	must(rl.t, r.Control.(*etcdcutover.Control).Create(ctxT(rl.t), st))
	return st
}

// TestRunnerKilledBetweenCopyAndFlip: the runner dies after the copy of
// stage 1/8 was verified and journaled, before its flip. A second runner
// resumes: it re-runs the copy (a no-op), flips, prunes and finishes.
func TestRunnerKilledBetweenCopyAndFlip(t *testing.T) {
	rl := newRunLab(t)
	ctl := rl.acquire()
	r := failover.Runner{Control: ctl, Mover: rl.mover, GateInterval: 20 * time.Millisecond, OnProgress: rl.onProgress,
		BeforeAction: func(s *failover.State, a failover.Action) error {
			if s.Stage == 1 && a.Kind == failover.ActApplyMap && a.Change.Op == failover.OpFlip {
				return errKilled
			}
			return nil
		}}
	st := rl.start("kill before the flip", &r)
	if _, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()}); !errors.Is(err, errKilled) {
		t.Fatalf("runner not killed: %v", err)
	}
	ctl.Abandon() // the process is gone: its lease runs out

	// Copied and verified, not flipped, not pruned.
	tb := rl.table()
	m := rl.moved(1)
	if o := tb.SlotOwner(m[0].First); o != "a1" {
		t.Fatalf("slot %d owned by %s before the flip", m[0].First, o)
	}
	if en := rl.stageEntry(st.ID, 1); en.State != StateCopied {
		t.Fatalf("entry after the kill: %+v", en)
	}
	if rl.slotRowsOf("b1", m) == 0 || rl.slotRowsOf("b1", m) != rl.slotRowsOf("a1", m)-rl.pinnedRows(tb, m) {
		t.Fatalf("stage 1/8 at b1: %d rows; at a1: %d", rl.slotRowsOf("b1", m), rl.slotRowsOf("a1", m))
	}
	rl.resume(st.ID)
}

// stageEntry returns the journal entry of the copy of plan stage i.
func (rl *runLab) stageEntry(cutover string, i int) Entry {
	rl.t.Helper()
	var want []router.SlotRange
	for _, m := range rl.moved(i) {
		want = append(want, m.SlotRange)
	}
	es, err := rl.mover.Journal(ctxT(rl.t))
	must(rl.t, err)
	for _, e := range es {
		if e.Cutover == cutover && router.FormatSlotRanges(e.Slots) == router.FormatSlotRanges(want) {
			return e
		}
	}
	rl.t.Fatalf("no journal entry for stage %d (slots %s)", i, router.FormatSlotRanges(want))
	return Entry{}
}

// pinnedRows counts a1's rows of keys pinned anywhere in moves.
func (rl *runLab) pinnedRows(tb *router.Table, moves []router.SlotMove) int {
	n := 0
	for _, w := range tb.Whitelist() {
		s := tb.Slot(w.Key)
		for _, m := range moves {
			if s >= m.First && s <= m.Last {
				n += rl.rowsOf("a1", w.Key)
			}
		}
	}
	return n
}

// killAtPrune kills its runner at the first prune after stage 1's flip:
// it cancels the runner's context and abandons its lease, as a process
// that died would.
type killAtPrune struct {
	*Mover
	armed  func() bool
	kill   func()
	killed bool
}

func (k *killAtPrune) Prune(ctx context.Context, cutover string, t *router.Table) (string, error) {
	if !k.killed && k.armed() {
		k.killed = true
		k.kill()
		return "", errKilled
	}
	return k.Mover.Prune(ctx, cutover, t)
}

// TestRunnerKilledBetweenFlipAndPrune: the runner dies right after stage
// 1/8's flip, before it prunes the source. The second runner prunes when
// it starts, and finishes.
func TestRunnerKilledBetweenFlipAndPrune(t *testing.T) {
	rl := newRunLab(t)
	ctl := rl.acquire()
	ctx, cancel := context.WithCancel(ctxT(t))
	flipping := false
	km := &killAtPrune{Mover: rl.mover, armed: func() bool { return flipping }, kill: func() { cancel(); ctl.Abandon() }}
	r := failover.Runner{Control: ctl, Mover: km, GateInterval: 20 * time.Millisecond, OnProgress: rl.onProgress,
		BeforeAction: func(s *failover.State, a failover.Action) error {
			if s.Stage == 1 && a.Kind == failover.ActApplyMap && a.Change.Op == failover.OpFlip {
				flipping = true
			}
			return nil
		}}
	st := rl.start("kill before the prune", &r)
	if _, err := r.Run(ctx, st, failover.Event{Kind: failover.EvStart, At: time.Now()}); err == nil || !km.killed {
		t.Fatalf("runner not killed at the prune: %v", err)
	}

	// Flipped, not pruned.
	tb := rl.table()
	m := rl.moved(1)
	if o := tb.SlotOwner(m[0].First); o != "b1" {
		t.Fatalf("slot %d owned by %s after the flip", m[0].First, o)
	}
	if en := rl.stageEntry(st.ID, 1); en.State != StateCopied {
		t.Fatalf("entry after the kill: %+v", en)
	}
	if n := rl.slotRowsOf("a1", m); n == 0 {
		t.Fatal("the source was pruned before the kill")
	}
	rl.check(tb, false)
	rl.resume(st.ID)
}

// failGate fails the stage named stage.
type failGate struct{ stage string }

func (g failGate) Name() string { return "fail-" + g.stage }
func (g failGate) Check(_ context.Context, in failover.GateInput) failover.GateResult {
	return failover.GateResult{OK: in.Stage != g.stage, Detail: "stage " + in.Stage}
}

// TestRunnerRollsBackWithCopies: a gate fails after stage 1/8's flip; the
// runner rolls it back with the same protocol in reverse (a copy b1→a1);
// an operator's rollback then undoes the whitelist stage. The journal ends
// with every copy pruned or superseded and every row back at a1, once.
func TestRunnerRollsBackWithCopies(t *testing.T) {
	rl := newRunLab(t)
	ctl := rl.acquire()
	defer ctl.Close()
	r := failover.Runner{Control: ctl, Mover: rl.mover, Gates: []failover.Gate{failGate{"1/8"}}, GateInterval: 20 * time.Millisecond, OnProgress: rl.onProgress}
	st := rl.start("roll back", &r)
	final, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
	must(t, err)
	if final.Status != failover.StatusFailed || !final.Stages[1].RolledBack {
		t.Fatalf("ended %s: %s", final.Status, final.Reason)
	}
	tb := rl.table()
	rl.check(tb, true)
	r.Gates = nil
	back, err := r.Run(ctxT(t), final, failover.Event{Kind: failover.EvRollback, At: time.Now(), Detail: "tester: undo"})
	must(t, err)
	if back.Status != failover.StatusRolledBack {
		t.Fatalf("after the operator's rollback: %s (%s)", back.Status, back.Reason)
	}
	tb = rl.table()
	rl.check(tb, true)
	es, err := rl.mover.Journal(ctxT(t))
	must(t, err)
	states := map[State]int{}
	for _, e := range es {
		states[e.State]++
		t.Logf("%s→%s slots %s keys %v: %s, %d rows, %d pruned", e.From, e.To, router.FormatSlotRanges(e.Slots), e.Keys, e.State, e.Rows, e.PrunedRows)
	}
	// whitelist a1→b1 and back, 1/8 a1→b1 and back: each forward copy was
	// pruned from a1 after its flip; each rollback copy pruned b1.
	if states[StatePruned] != 4 || len(es) != 4 {
		t.Errorf("journal states %v", states)
	}
}
