package sqlmove

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/router"
)

type opener = func(testing.TB, string) DB

// scenarios run on every backend.
var scenarios = []struct {
	name string
	run  func(t *testing.T, open opener)
}{
	{"SlotsAndPins", testSlotsAndPins},
	{"Keys", testKeys},
	{"MoveBack", testMoveBack},
	{"RolledBackAfterFlip", testRolledBackAfterFlip},
	{"UnfrozenWithoutFlip", testUnfrozenWithoutFlip},
	{"Interrupted", testInterrupted},
	{"Abandoned", testAbandoned},
	{"Tampered", testTampered},
	{"SourceChanged", testSourceChanged},
	{"Refused", testRefused},
	{"FenceAfterFlip", testFenceAfterFlip},
	{"PruneGuards", testPruneGuards},
}

// TestCore runs every scenario on every backend: SQLite files, and
// databases on a real MariaDB server (skipped where MariaDB is not
// installed, failed under CI).
func TestCore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			open := b.start(t)
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) { sc.run(t, open) })
			}
		})
	}
}

// pinned returns threeCells with keys pinned: key → cell.
func pinned(t *testing.T, pins map[string]string) *router.Table {
	t.Helper()
	tb := threeCells(t).Clone()
	for k, c := range pins {
		must(t, tb.SetWhitelist(k, c))
	}
	must(t, tb.Validate())
	return tb.Seal()
}

// expectRows counts the world's rows of slots [first, last] that a slot
// copy moves: not cell-scoped, owner not pinned.
func (e *env) expectRows(first, last int, tb *router.Table) int64 {
	pins := map[string]bool{}
	for _, w := range tb.Whitelist() {
		pins[w.Key] = true
	}
	var n int64
	for _, r := range e.world {
		if r.home == "" && r.slot() >= first && r.slot() <= last && !pins[r.owner()] {
			n++
		}
	}
	return n
}

func testSlotsAndPins(t *testing.T, open opener) {
	pB, pA, pC := keyIn("pinb-", 5), keyIn("pina-", 6), keyIn("pinc-", 7)
	tb := pinned(t, map[string]string{pA: "a1"})
	e := newEnv(t, open, tb, 2)
	e.addUser("a1", pB)
	e.addUser("a1", pC)
	// An earlier cutover moved pB to b1 and pC to c1 as canaries and died
	// before its prune: a1 still holds their rows, now stale, and pB got
	// writes at b1 since. A slot copy must not carry them over.
	canaries := keys("a1", "b1", pB)
	canaries.Keys = append(canaries.Keys, failover.KeyMove{Key: pC, From: "a1", To: "c1"})
	e.maps.apply(t, failover.OpFreeze, "cut-0", canaries)
	_, err := e.mover.Copy(ctxT(t), "cut-0", canaries)
	must(t, err)
	tb = e.maps.apply(t, failover.OpFlip, "cut-0", canaries)
	e.credit("b1", pB, 5)
	bLive := e.rowsOf("b1", pB)

	mv := slots(0, 49, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-1", mv)
	cr, err := e.mover.Copy(ctxT(t), "cut-1", mv)
	must(t, err)
	want := e.expectRows(0, 49, tb)
	if len(cr.Pairs) != 1 || cr.Pairs[0].Rows != want || cr.Pairs[0].Written != want || cr.Pairs[0].InPlace != 0 {
		t.Fatalf("copy report %+v, want %d rows written", cr.Pairs, want)
	}
	if s := cr.String(); !strings.Contains(s, fmt.Sprintf("copied %s rows of 50 slots a1→b1 in ", commas(want))) || !strings.HasSuffix(s, ", verified") {
		t.Errorf("description %q", s)
	}
	t.Log(cr)
	// Pins override slots: nothing of pA (stays at a1) or pC (lives at c1)
	// reached b1, and pB's live rows at b1 are untouched.
	if n := e.rowsOf("b1", pA); n != 0 {
		t.Errorf("%d rows of %s (pinned to the source) copied to b1", n, pA)
	}
	if n := e.rowsOf("b1", pC); n != 0 {
		t.Errorf("%d rows of %s (pinned to c1) copied to b1", n, pC)
	}
	if n := e.rowsOf("b1", pB); n != bLive {
		t.Errorf("%s (pinned to b1) has %d rows at b1, want its %d live ones", pB, n, bLive)
	}
	e.check(e.maps.get(), false)
	en := e.entry("cut-1", "a1", "b1")
	if en.State != StateCopied || en.Rows != want || en.SlotCount() != 50 || len(en.Checksums) != len(testTables) {
		t.Fatalf("journal entry %+v", en)
	}
	for tbl, d := range cr.Pairs[0].Checksums {
		if en.Checksums[tbl] != d {
			t.Errorf("journal checksum of %s %v, report %v", tbl, en.Checksums[tbl], d)
		}
	}

	// A re-run changes nothing and says the same.
	again, err := e.mover.Copy(ctxT(t), "cut-1", mv)
	must(t, err)
	p := again.Pairs[0]
	if p.Rows != want || p.Written != 0 || p.InPlace != 50 || p.Entry != cr.Pairs[0].Entry {
		t.Errorf("re-run report %+v", p)
	}
	for tbl, d := range cr.Pairs[0].Checksums {
		if p.Checksums[tbl] != d {
			t.Errorf("re-run checksum of %s %v, first run %v", tbl, p.Checksums[tbl], d)
		}
	}

	// Before the flip a prune deletes nothing of the slots: they are
	// frozen. It finishes the canaries' copies (pB and pC left a1).
	staleRows := e.rowsOf("a1", pB) + e.rowsOf("a1", pC)
	before := e.slotRows("a1", 0, 49) - staleRows
	pr, err := e.mover.PruneAll(ctxT(t), e.maps.get())
	must(t, err)
	t.Log(pr)
	if pr.Pending != 1 || pr.Pruned != 2 || len(pr.Sources) != 1 || pr.Sources[0] != (Removed{Cell: "a1", Rows: int64(staleRows), Keys: 2}) {
		t.Errorf("prune before the flip: %+v", pr)
	}
	if got := e.slotRows("a1", 0, 49); got != before {
		t.Errorf("prune before the flip left %d rows of the frozen slots at a1, want %d", got, before)
	}

	tb2 := e.maps.apply(t, failover.OpFlip, "cut-1", mv)
	e.check(tb2, false)
	s, err := e.mover.Prune(ctxT(t), "cut-1", tb2)
	must(t, err)
	t.Log(s)
	if !strings.HasPrefix(s, "pruned ") || !strings.Contains(s, "of 50 slots from a1; 1 copy fully pruned") {
		t.Errorf("prune said %q", s)
	}
	e.check(tb2, true)
	if n := e.rowsOf("a1", pA); n == 0 {
		t.Errorf("the rows of %s, pinned to the source, were pruned", pA)
	}
	if en := e.entry("cut-1", "a1", "b1"); en.State != StatePruned || en.PrunedRows < want {
		t.Errorf("journal entry after prune: %+v", en)
	}
	// Idempotent.
	s, err = e.mover.Prune(ctxT(t), "cut-1", tb2)
	must(t, err)
	if s != "" {
		t.Errorf("second prune said %q", s)
	}
	e.check(tb2, true)
}

func testKeys(t *testing.T, open opener) {
	kB := keyIn("kb-", 120) // follows b1's slot 120
	kA := keyIn("ka-", 30)  // pinned to a1
	kC := keyIn("kc-", 30)  // pinned to c1, same slot: not part of the move
	tb := pinned(t, map[string]string{kA: "a1", kC: "c1"})
	e := newEnv(t, open, tb, 1)
	e.addUser("b1", kB)
	neighbours := e.slotRows("b1", 120, 120) - e.rowsOf("b1", kB)

	mv := keys("b1", "c1", kB)
	mv.Keys = append(mv.Keys, failover.KeyMove{Key: kA, From: "a1", To: "c1"})
	cr, pr := e.moveAndPrune("cut-k", mv)
	t.Log(cr, "; ", pr)
	if len(cr.Pairs) != 2 || cr.Pairs[0].From != "a1" || cr.Pairs[1].From != "b1" {
		t.Fatalf("pairs %+v", cr.Pairs)
	}
	if got, want := cr.Pairs[1].Rows, int64(len(userRows(kB, 0))); got != want {
		t.Errorf("copied %d rows of %s, want %d", got, kB, want)
	}
	tb2 := e.maps.get()
	if tb2.Owner(kB).ID != "c1" || tb2.Owner(kA).ID != "c1" {
		t.Fatalf("keys not pinned to c1 after the flip")
	}
	e.check(tb2, true)
	if n := e.slotRows("b1", 120, 120); n != neighbours {
		t.Errorf("b1 slot 120 has %d rows after the key left, want the %d of its other keys", n, neighbours)
	}
	if pr.Pruned != 2 {
		t.Errorf("prune report %+v", pr)
	}
}

func testMoveBack(t *testing.T, open opener) {
	e := newEnv(t, open, threeCells(t), 2)
	e.moveAndPrune("cut-1", slots(0, 49, "a1", "b1"))
	e.check(e.maps.get(), true)
	_, pr := e.moveAndPrune("cut-2", slots(0, 49, "b1", "a1"))
	if len(pr.Sources) != 1 || pr.Sources[0].Cell != "b1" || pr.Pruned != 1 {
		t.Errorf("prune of the move back: %+v", pr)
	}
	e.check(e.maps.get(), true)
	if en := e.entry("cut-1", "a1", "b1"); en.State != StatePruned {
		t.Errorf("first move: %s", en.State)
	}
	if en := e.entry("cut-2", "b1", "a1"); en.State != StatePruned {
		t.Errorf("move back: %s", en.State)
	}
}

// A stage flipped, then rolled back (the same cutover, in reverse) before
// any prune: the first copy is superseded, the second prunes the target.
func testRolledBackAfterFlip(t *testing.T, open opener) {
	e := newEnv(t, open, threeCells(t), 2)
	mv := slots(60, 69, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-r", mv)
	_, err := e.mover.Copy(ctxT(t), "cut-r", mv)
	must(t, err)
	e.maps.apply(t, failover.OpFlip, "cut-r", mv)
	back := mv.Reverse()
	e.maps.apply(t, failover.OpFreeze, "cut-r", back)
	_, err = e.mover.Copy(ctxT(t), "cut-r", back)
	must(t, err)
	tb := e.maps.apply(t, failover.OpFlip, "cut-r", back)
	pr, err := e.mover.PruneAll(ctxT(t), tb)
	must(t, err)
	t.Log(pr)
	if pr.Superseded != 1 || pr.Pruned != 1 || len(pr.Sources) != 1 || pr.Sources[0].Cell != "b1" {
		t.Errorf("prune report %+v", pr)
	}
	if en := e.entry("cut-r", "a1", "b1"); en.State != StateSuperseded || en.PrunedRows != 0 {
		t.Errorf("the rolled-back copy: %+v", en)
	}
	if en := e.entry("cut-r", "b1", "a1"); en.State != StatePruned {
		t.Errorf("the rollback's copy: %+v", en)
	}
	e.check(tb, true)
}

// A stage copied and then unfrozen (aborted, or the flip refused): the
// copy is superseded and its rows at the target removed.
func testUnfrozenWithoutFlip(t *testing.T, open opener) {
	e := newEnv(t, open, threeCells(t), 2)
	mv := slots(50, 59, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-s", mv)
	cr, err := e.mover.Copy(ctxT(t), "cut-s", mv)
	must(t, err)
	tb := e.maps.apply(t, failover.OpUnfreeze, "cut-s", mv)
	pr, err := e.mover.PruneAll(ctxT(t), tb)
	must(t, err)
	t.Log(pr)
	if pr.Superseded != 1 || len(pr.Sources) != 0 || len(pr.Targets) != 1 || pr.Targets[0].Rows != cr.Pairs[0].Rows {
		t.Errorf("prune report %+v after copying %d rows", pr, cr.Pairs[0].Rows)
	}
	if en := e.entry("cut-s", "a1", "b1"); en.State != StateSuperseded || en.CleanedRows != cr.Pairs[0].Rows {
		t.Errorf("entry %+v", en)
	}
	e.check(tb, true)
}

// A copy cancelled after n batches, then run again, completes and
// verifies; the move then ends like an uninterrupted one.
func testInterrupted(t *testing.T, open opener) {
	for _, n := range []int{1, 7, 40, 150} {
		t.Run(fmt.Sprint("after-", n, "-batches"), func(t *testing.T) {
			e := newEnv(t, open, threeCells(t), 2, func(c *Config) { c.BatchRows = 3 })
			mv := slots(0, 49, "a1", "b1")
			e.maps.apply(t, failover.OpFreeze, "cut-i", mv)
			ctx, cancel := context.WithCancel(ctxT(t))
			batches := 0
			e.mover.hooks.afterBatch = func(filter, string, int) {
				if batches++; batches == n {
					cancel()
				}
			}
			_, err := e.mover.Copy(ctx, "cut-i", mv)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted copy: %v", err)
			}
			if en := e.entry("cut-i", "a1", "b1"); en.State != StateCopying {
				t.Errorf("journal entry of the interrupted copy: %s", en.State)
			}
			partial := e.slotRows("b1", 0, 49)
			e.mover.hooks.afterBatch = nil
			cr, err := e.mover.Copy(ctxT(t), "cut-i", mv)
			must(t, err)
			p := cr.Pairs[0]
			t.Logf("%d rows at b1 after the interruption; the re-run: %s (%d written)", partial, cr, p.Written)
			if want := e.expectRows(0, 49, e.maps.get()); p.Rows != want || p.Written+int64(partial) != want {
				t.Errorf("re-run: %d rows, %d written after %d were in place; want %d", p.Rows, p.Written, partial, want)
			}
			tb := e.maps.apply(t, failover.OpFlip, "cut-i", mv)
			_, err = e.mover.PruneAll(ctxT(t), tb)
			must(t, err)
			e.check(tb, true)
		})
	}
}

// A copy that never finished, whose stage was then unfrozen: Prune marks
// it abandoned and removes what it left at the target.
func testAbandoned(t *testing.T, open opener) {
	e := newEnv(t, open, threeCells(t), 2, func(c *Config) { c.BatchRows = 2 })
	mv := slots(0, 49, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-a", mv)
	ctx, cancel := context.WithCancel(ctxT(t))
	batches := 0
	e.mover.hooks.afterBatch = func(filter, string, int) {
		if batches++; batches == 60 {
			cancel()
		}
	}
	if _, err := e.mover.Copy(ctx, "cut-a", mv); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy: %v", err)
	}
	left := e.slotRows("b1", 0, 49)
	if left == 0 {
		t.Fatal("the interrupted copy committed nothing; interrupt later")
	}
	// While frozen the copy may still be running: hands off.
	pr, err := e.mover.PruneAll(ctxT(t), e.maps.get())
	must(t, err)
	if pr.Pending != 1 || pr.String() != "" || e.slotRows("b1", 0, 49) != left {
		t.Fatalf("prune while frozen: %+v", pr)
	}
	tb := e.maps.apply(t, failover.OpUnfreeze, "cut-a", mv)
	pr, err = e.mover.PruneAll(ctxT(t), tb)
	must(t, err)
	t.Log(pr)
	if pr.Abandoned != 1 || len(pr.Targets) != 1 || pr.Targets[0].Rows != int64(left) || len(pr.Sources) != 0 {
		t.Errorf("prune report %+v, %d rows were left at b1", pr, left)
	}
	e.check(tb, true)
}

// firstMovedOrder returns an order of the world in slots [first, last].
func (e *env) firstMovedOrder(first, last int) row {
	for _, r := range e.world {
		if r.table == "orders" && r.home == "" && r.slot() >= first && r.slot() <= last {
			return r
		}
	}
	e.t.Fatal("no order in the slots")
	return row{}
}

// Verification catches a target changed between copy and verify, refuses,
// and a re-run repairs it.
func testTampered(t *testing.T, open opener) {
	for _, tc := range []struct {
		name   string
		tamper func(e *env, r row) string
	}{
		{"update", func(e *env, r row) string {
			return "UPDATE orders SET amount = amount + 1 WHERE order_id = '" + r.cols["order_id"].(string) + "'"
		}},
		{"null", func(e *env, r row) string {
			return "UPDATE orders SET memo = NULL, big = NULL WHERE order_id = '" + r.cols["order_id"].(string) + "'"
		}},
		{"delete", func(e *env, r row) string {
			return "DELETE FROM orders WHERE order_id = '" + r.cols["order_id"].(string) + "'"
		}},
		{"insert", func(e *env, r row) string {
			return fmt.Sprintf("INSERT INTO orders (order_id, slot, owner, amount) VALUES ('ord-extra', %d, '%s', 1)", r.slot(), r.owner())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, open, threeCells(t), 2)
			mv := slots(0, 49, "a1", "b1")
			e.maps.apply(t, failover.OpFreeze, "cut-t", mv)
			r := e.firstMovedOrder(0, 49)
			if r.cols["memo"] == nil && tc.name == "null" {
				r.cols["memo"] = "x" // make sure the update changes something
				_, err := e.cells["a1"].DB.ExecContext(ctxT(t), "UPDATE orders SET memo = 'x' WHERE order_id = ?", r.cols["order_id"])
				must(t, err)
			}
			e.mover.hooks.beforeVerify = func(string, string) {
				if _, err := e.cells["b1"].DB.ExecContext(ctxT(t), tc.tamper(e, r)); err != nil {
					t.Errorf("tamper: %v", err)
				}
			}
			_, err := e.mover.Copy(ctxT(t), "cut-t", mv)
			var me *MismatchError
			if !errors.As(err, &me) || !errors.Is(err, ErrMismatch) {
				t.Fatalf("copy of a tampered target: %v", err)
			}
			if me.Table != "orders" || me.Slot != r.slot() || me.From != "a1" || me.To != "b1" || me.More != 0 {
				t.Errorf("mismatch %+v, want orders slot %d", me, r.slot())
			}
			t.Log(me)
			if en := e.entry("cut-t", "a1", "b1"); en.State != StateCopying {
				t.Errorf("a refused copy is journaled %s", en.State)
			}
			e.mover.hooks.beforeVerify = nil
			cr, err := e.mover.Copy(ctxT(t), "cut-t", mv)
			must(t, err)
			if p := cr.Pairs[0]; p.InPlace != 49 || p.Written == 0 {
				t.Errorf("repair: %+v, want one slot re-copied", p)
			}
			tb := e.maps.apply(t, failover.OpFlip, "cut-t", mv)
			_, err = e.mover.PruneAll(ctxT(t), tb)
			must(t, err)
			e.check(tb, true)
		})
	}
}

// A write to the source during the copy (a freeze violated) is caught.
func testSourceChanged(t *testing.T, open opener) {
	e := newEnv(t, open, threeCells(t), 1)
	mv := slots(0, 49, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-w", mv)
	r := e.firstMovedOrder(0, 49)
	e.mover.hooks.beforeVerify = func(string, string) {
		_, err := e.cells["a1"].DB.ExecContext(ctxT(t), "UPDATE orders SET amount = amount + 1 WHERE order_id = ?", r.cols["order_id"])
		must(t, err)
	}
	_, err := e.mover.Copy(ctxT(t), "cut-w", mv)
	if !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("copy with a write at the source: %v", err)
	}
	t.Log(err)
}

// The mover refuses a movement it cannot copy safely, writing nothing.
func testRefused(t *testing.T, open opener) {
	k := keyIn("k-", 10)
	e := newEnv(t, open, threeCells(t), 1)
	e.maps.apply(t, failover.OpFreeze, "other", slots(60, 69, "a1", "b1"))
	e.maps.apply(t, failover.OpFreeze, "cut-x", slots(0, 9, "a1", "b1"))
	for _, tc := range []struct {
		name string
		mv   failover.Movement
		err  error
	}{
		{"not frozen", slots(10, 19, "a1", "b1"), ErrNotFrozen},
		{"frozen by another cutover", slots(60, 69, "a1", "b1"), ErrNotFrozen},
		{"not the source", slots(0, 9, "c1", "b1"), ErrNotFrozen},
		{"key not frozen", keys("a1", "b1", k), ErrNotFrozen},
		{"unknown cell", slots(0, 9, "a1", "z9"), ErrBadMovement},
		{"to itself", slots(0, 9, "a1", "a1"), ErrBadMovement},
		{"slot twice", failover.Movement{Slots: append(slots(0, 9, "a1", "b1").Slots, slots(5, 5, "a1", "c1").Slots...)}, ErrBadMovement},
		{"slot out of range", slots(250, 300, "a1", "b1"), ErrBadMovement},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			_, err := e.mover.WaitData(ctxT(t), "cut-x", tc.mv)
			if !errors.Is(err, tc.err) {
				t.Fatalf("WaitData: %v, want %v", err, tc.err)
			}
		})
	}
	for _, c := range []string{"b1", "c1"} {
		if n := e.slotRows(c, 0, 99); n != 0 {
			t.Errorf("%d rows written to %s", n, c)
		}
	}
}

// A copy whose stage flips under it (another runner took over and
// finished it: this one is a zombie) backs out before its commit, so it
// cannot delete what the new owner wrote.
func testFenceAfterFlip(t *testing.T, open opener) {
	e := newEnv(t, open, threeCells(t), 2, func(c *Config) { c.BatchRows = 2 })
	mv := slots(0, 49, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-f", mv)
	flipped := false
	e.mover.hooks.afterBatch = func(it filter, _ string, _ int) {
		if it.slot == 20 && !flipped {
			flipped = true
			e.maps.apply(t, failover.OpFlip, "cut-f", mv)
		}
	}
	_, err := e.mover.Copy(ctxT(t), "cut-f", mv)
	if !errors.Is(err, ErrNotFrozen) {
		t.Fatalf("copy flipped under it: %v", err)
	}
	t.Log(err)
	if n := e.slotRows("b1", 20, 49); n != 0 {
		t.Errorf("%d rows of slots 20-49 committed at b1 after the flip", n)
	}
	if n := e.slotRows("b1", 0, 19); n == 0 {
		t.Errorf("nothing of slots 0-19 committed before the flip")
	}
}

// Prune never deletes rows the source owns, rows of frozen slots or keys,
// or rows of keys pinned to the source; and it re-reads the map before it
// commits a delete.
func testPruneGuards(t *testing.T, open opener) {
	pA, pG := keyIn("pina-", 6), keyIn("ping-", 12)
	e := newEnv(t, open, pinned(t, map[string]string{pA: "a1", pG: "c1"}), 2)
	// Rows of pG at a1 that no copy carried (pinned to c1 by hand, say):
	// they are not the copy's to delete.
	e.addStale("a1", pG)
	stale := e.rowsOf("a1", pG)
	kF := keyIn("u0-", 11)
	mv := slots(0, 49, "a1", "b1")
	e.maps.apply(t, failover.OpFreeze, "cut-g", mv)
	_, err := e.mover.Copy(ctxT(t), "cut-g", mv)
	must(t, err)
	flipped := e.maps.apply(t, failover.OpFlip, "cut-g", mv)

	// Another cutover freezes slot 10 and key kF (slot 11) before the prune.
	slot10, kFRows, pARows := e.slotRows("a1", 10, 10), e.rowsOf("a1", kF), e.rowsOf("a1", pA)
	if slot10 == 0 || kFRows == 0 || pARows == 0 {
		t.Fatalf("test data: %d %d %d", slot10, kFRows, pARows)
	}
	frozen := e.maps.edit(t, func(tb *router.Table) error {
		if err := tb.Freeze(router.SlotRange{First: 10, Last: 10}, "other"); err != nil {
			return err
		}
		return tb.FreezeKey(kF, "other")
	})
	// A prune on a stale map (it shows nothing frozen) is fenced by the
	// fresh read inside its transaction.
	_, err = e.mover.PruneAll(ctxT(t), flipped)
	if !errors.Is(err, ErrMapChanged) {
		t.Errorf("prune on a stale map: %v, want ErrMapChanged", err)
	}
	pr, err := e.mover.PruneAll(ctxT(t), frozen)
	must(t, err)
	t.Log(pr)
	if got := e.slotRows("a1", 10, 10); got != slot10 {
		t.Errorf("frozen slot 10: %d rows left of %d", got, slot10)
	}
	if got := e.rowsOf("a1", kF); got != kFRows {
		t.Errorf("frozen key %s: %d rows left of %d", kF, got, kFRows)
	}
	if got := e.rowsOf("a1", pA); got != pARows {
		t.Errorf("key %s pinned to the source: %d rows left of %d", pA, got, pARows)
	}
	if n := e.slotRows("a1", 12, 49) - e.rowsOf("a1", pG); n != 0 {
		t.Errorf("%d rows of slots 12-49 left at the source", n)
	}
	if en := e.entry("cut-g", "a1", "b1"); en.State != StateCopied || pr.Pending != 1 {
		t.Errorf("entry with a frozen slot: %s, pending %d", en.State, pr.Pending)
	}
	// Slots a1 still owns are never pruned, whatever the journal says.
	if n := e.slotRows("a1", 50, 99); n == 0 {
		t.Errorf("a1's own slots are empty")
	}

	thawed := e.maps.edit(t, func(tb *router.Table) error {
		tb.UnfreezeKey(kF)
		return tb.Unfreeze(router.SlotRange{First: 10, Last: 10})
	})
	pr, err = e.mover.PruneAll(ctxT(t), thawed)
	must(t, err)
	t.Log(pr)
	if en := e.entry("cut-g", "a1", "b1"); en.State != StatePruned {
		t.Errorf("entry after the thaw: %s", en.State)
	}
	if got := e.rowsOf("a1", pA); got != pARows {
		t.Errorf("key %s pinned to the source: %d rows left of %d", pA, got, pARows)
	}
	if got := e.rowsOf("a1", pG); got != stale {
		t.Errorf("rows of %s no copy carried: %d left of %d", pG, got, stale)
	}
	for _, tb := range testTables {
		_, err := e.cells["a1"].DB.ExecContext(ctxT(t), "DELETE FROM "+tb.Name+" WHERE owner = ?", pG)
		must(t, err)
	}
	e.check(thawed, true)
}
