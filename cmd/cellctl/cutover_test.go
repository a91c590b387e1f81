package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// Flags that keep test cutovers quick: no guards are registered, so the
// barriers pass at once; the bake is short.
var quick = []string{"--bake", "100ms", "--gate-interval", "50ms"}

func aToB(extra ...string) []string {
	return append([]string{"--from-idc", "IDC-A", "--to-idc", "IDC-B"}, extra...)
}

func startArgs(extra ...string) []string {
	return append(append([]string{"cutover", "start"}, aToB(quick...)...), extra...)
}

// newCluster starts etcd and creates the four-cell map (a1, a2 in IDC-A;
// b1, b2 in IDC-B; 256 slots each).
func newCluster(t *testing.T) (*ctl, string) {
	t.Helper()
	ep := startEtcd(t)
	c := newCtl(t, ep)
	c.must(initArgs("--reason", "first map")...)
	return c, ep
}

// table reads the map as a raw client would.
func (c *ctl) table() *router.Table {
	c.t.Helper()
	tbl, err := router.Decode([]byte(c.must("map", "show", "-o", "json").stdout))
	if err != nil {
		c.t.Fatal(err)
	}
	return tbl
}

func (c *ctl) record(id string) failover.State {
	c.t.Helper()
	return decodeJSON[failover.State](c.t, c.must("cutover", "status", id, "-o", "json").stdout)
}

var idRe = regexp.MustCompile(`cellctl cutover resume ((?:cut|drain|failover)-[0-9a-f-]+)`)

// cutoverID finds the ID a start printed in its "next" line.
func cutoverID(t *testing.T, r runResult) string {
	t.Helper()
	m := idRe.FindStringSubmatch(r.stdout + r.stderr)
	if m == nil {
		t.Fatalf("no cutover ID in the output:\n%s%s", r.stdout, r.stderr)
	}
	return m[1]
}

// owners lists every slot's owner: what a rollback must restore.
func owners(tbl *router.Table) []router.OwnerRange { return tbl.OwnerRanges() }

func sameOwners(a, b []router.OwnerRange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCutoverPlan: the plan of a two-IDC move, exactly, and as JSON.
func TestCutoverPlan(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	c.must("whitelist", "add", "u42", "--cell", "a1", "--reason", "canary")

	r := c.must(append([]string{"cutover", "plan"}, aToB()...)...)
	want := `cluster    test
map epoch  2
from       a1, a2 in IDC-A
to         b1, b2 in IDC-B
moving     512 of 1024 slots (50.0% of users) and 1 whitelisted key
stages     6

STAGE      ADDS       SLOTS MOVED  USERS  TARGETS             KEYS
whitelist  1 key      0            -      b2 (1 key)          u42
1/256      2 slots    2            0.20%  b1 (1), b2 (1)      -
1/8        62 slots   64           6.2%   b1 (31), b2 (31)    -
1/4        64 slots   128          12.5%  b1 (32), b2 (32)    -
1/2        128 slots  256          25.0%  b1 (64), b2 (64)    -
1          256 slots  512          50.0%  b1 (128), b2 (128)  -
`
	if r.stdout != want {
		t.Errorf("cutover plan:\n%s\nwant:\n%s", r.stdout, want)
	}

	p := decodeJSON[failover.Plan](t, c.must(append([]string{"cutover", "plan", "-o", "json", "--stages", "1/16,1"}, aToB()...)...).stdout)
	if p.Moving != 512 || p.Epoch != 2 || len(p.Stages) != 2 || p.Stages[0].Cumulative != 32 || p.Stages[1].Cumulative != 512 ||
		strings.Join(p.From, ",") != "a1,a2" || strings.Join(p.To, ",") != "b1,b2" {
		t.Errorf("plan -o json = %+v", p)
	}
	if r := c.must("cutover", "plan", "-o", "yaml", "--from-cell", "a2", "--to-cell", "b1"); !strings.Contains(r.stdout, "movingSlots: 256") {
		t.Errorf("plan -o yaml:\n%s", r.stdout)
	}
	// Planning changes nothing.
	if e := c.table().Epoch(); e != 2 {
		t.Errorf("epoch %d after plan, want 2", e)
	}
}

// TestCutoverAuto: --dry-run changes nothing; --auto moves all of IDC-A to
// IDC-B; a second start is refused while one is in progress.
func TestCutoverAuto(t *testing.T) {
	t.Parallel()
	c, ep := newCluster(t)

	r := c.must(startArgs("--reason", "drill", "--dry-run")...)
	if !strings.Contains(r.stdout, "dry run: nothing was changed") || !strings.Contains(r.stdout, "1/256") {
		t.Errorf("start --dry-run:\n%s", r.stdout)
	}
	if e := c.table().Epoch(); e != 1 {
		t.Errorf("epoch %d after --dry-run, want 1", e)
	}
	if r := c.must("cutover", "list"); !strings.Contains(r.stdout, "no cutovers") {
		t.Errorf("cutover list after --dry-run:\n%s", r.stdout)
	}

	r = c.must(startArgs("--reason", "drill 2026-11", "--auto", "--id", "drill-1")...)
	for _, want := range []string{"cutover drill-1: 512 slots from a1, a2 in IDC-A to b1, b2 in IDC-B in 6 stages", "stage 6/6 1  flip", "done: every stage moved", "status   done"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("start --auto output does not mention %q", want)
		}
	}
	if strings.Contains(r.stdout, "\x1b") || strings.Contains(r.stdout, "\r") {
		t.Errorf("progress in a pipe has escape codes:\n%q", r.stdout)
	}
	tbl := c.table()
	for s := 0; s < tbl.SlotCount(); s++ {
		if c, _ := tbl.Cell(tbl.SlotOwner(s)); c.IDC != "IDC-B" {
			t.Fatalf("slot %d owned by %s in %s after the cutover", s, c.ID, c.IDC)
		}
	}
	if len(tbl.FrozenRanges()) != 0 {
		t.Errorf("frozen slots left: %v", tbl.FrozenRanges())
	}
	st := c.record("drill-1")
	if st.Status != failover.StatusDone || st.Who != "tester" || st.Why != "drill 2026-11" || len(st.Stages) != 6 {
		t.Errorf("record = %+v", st)
	}
	for _, l := range st.Stages[1:] {
		if !l.Flipped || l.FlipEpoch <= l.FreezeEpoch || l.VerifiedAt.IsZero() {
			t.Errorf("stage %s log = %+v", l.Name, l)
		}
	}
	// Every map edit is in the audit log with the operator and the reason.
	recs := decodeJSON[[]etcdstore.AuditRecord](t, c.must("map", "history", "--limit", "1", "-o", "json").stdout)
	if len(recs) != 1 || recs[0].Who != "tester" || !strings.Contains(recs[0].Why, "drill-1") || !strings.Contains(recs[0].Why, "drill 2026-11") {
		t.Errorf("last audit record = %+v", recs)
	}
	rows := decodeJSON[[]cutoverRow](t, c.must("cutover", "list", "-o", "json").stdout)
	if len(rows) != 1 || rows[0].ID != "drill-1" || rows[0].Status != "done" || rows[0].Stage != 6 {
		t.Errorf("cutover list = %+v", rows)
	}
	c.fails(exitConflict, []string{"drill-1", "already done", "nothing to resume"}, "cutover", "resume", "drill-1")
	c.fails(exitConflict, []string{"drill-1 already exists", "--id"}, "cutover", "start", "--from-idc", "IDC-B", "--to-idc", "IDC-A", "--reason", "again", "--id", "drill-1")
	c.fails(exitUsage, []string{"own no slots and no whitelisted keys", "nothing to move"}, startArgs("--reason", "again")...)
	c.fails(exitConflict, []string{"already done"}, "cutover", "abort", "drill-1", "--reason", "x")

	// Back to IDC-A without --auto: waiting after the first stage, and a
	// second cutover is refused meanwhile.
	r = c.must(append([]string{"cutover", "start", "--from-idc", "IDC-B", "--to-idc", "IDC-A", "--reason", "back", "--id", "back-1"}, quick...)...)
	if !strings.Contains(r.stdout, "status   waiting") || !strings.Contains(r.stdout, "cellctl cutover resume back-1") {
		t.Errorf("start without --auto:\n%s", r.stdout)
	}
	c.fails(exitConflict, []string{"cutover back-1 is waiting", "one cutover at a time", "cutover abort back-1"}, startArgs("--reason", "again")...)

	// With the lock held by another runner, the refusal names its cutover.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	held, err := etcdcutover.TryAcquire(ctx, rawClient(t, ep), etcdcutover.Config{Cluster: c.cluster, Actor: "other"})
	if err != nil {
		t.Fatal(err)
	}
	c.fails(exitConflict, []string{"cutover back-1 is being run by another cellctl", "status --watch back-1"}, startArgs("--reason", "again")...)
	c.fails(exitConflict, []string{"still held after 300ms", "back-1"}, "cutover", "resume", "back-1", "--lock-wait", "300ms")
	held.Close()
}

// TestCutoverManual walks a cutover without --auto: resume, pause, resume,
// rollback; then abort of another one.
func TestCutoverManual(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	before := owners(c.table())

	r := c.must(startArgs("--reason", "drill", "--id", "m-1")...)
	if st := c.record("m-1"); st.Status != failover.StatusWaiting || st.Stage != 2 || !st.Stages[1].Flipped {
		t.Fatalf("after start: %s stage %d", st.Status, st.Stage)
	}
	if !strings.Contains(r.stdout, "next     cellctl cutover resume m-1") {
		t.Errorf("start does not print the next command:\n%s", r.stdout)
	}
	c.must("cutover", "resume", "m-1")
	if st := c.record("m-1"); st.Status != failover.StatusWaiting || st.Stage != 3 || !st.Stages[2].Flipped {
		t.Fatalf("after resume: %s stage %d", st.Status, st.Stage)
	}
	// Nobody runs a waiting cutover: pause takes effect here, at once.
	r = c.must("cutover", "pause", "m-1", "--reason", "lunch")
	if st := c.record("m-1"); st.Status != failover.StatusPaused || !strings.Contains(st.Reason, "tester: lunch") {
		t.Fatalf("after pause: %s (%s)", st.Status, st.Reason)
	}
	if !strings.Contains(r.stdout, "doing the pause here") {
		t.Errorf("pause output:\n%s", r.stdout)
	}
	c.must("cutover", "resume", "m-1", "--reason", "after lunch")
	if st := c.record("m-1"); st.Status != failover.StatusWaiting || st.Stage != 4 {
		t.Fatalf("after the second resume: %s stage %d", st.Status, st.Stage)
	}
	if moved := owners(c.table()); sameOwners(moved, before) {
		t.Fatal("three stages moved nothing")
	}

	r = c.must("cutover", "rollback", "m-1", "--reason", "error rate up")
	st := c.record("m-1")
	if st.Status != failover.StatusRolledBack || !st.Stages[1].RolledBack || !st.Stages[3].RolledBack {
		t.Fatalf("after rollback: %+v", st)
	}
	if !strings.Contains(r.stdout, "status   rolled-back") {
		t.Errorf("rollback output:\n%s", r.stdout)
	}
	tbl := c.table()
	if after := owners(tbl); !sameOwners(after, before) {
		t.Errorf("owners after rollback:\n%v\nwant:\n%v", after, before)
	}
	if len(tbl.FrozenRanges()) != 0 {
		t.Errorf("frozen after rollback: %v", tbl.FrozenRanges())
	}

	// Abort keeps what flipped; a watch follows it to the end.
	c.must(startArgs("--reason", "drill 2", "--id", "m-2", "--stages", "1/4,1")...)
	watch := c.background("cutover", "status", "m-2", "--watch")
	eventually(t, "the watch to print the record", func() bool { return strings.Contains(watch.out.String(), "m-2  waiting") })
	c.must("cutover", "abort", "m-2", "--reason", "called off")
	if code := watch.wait(t); code != 0 || !strings.Contains(watch.out.String(), "m-2  aborted") {
		t.Errorf("status --watch: exit %d\n%s", code, watch.out.String())
	}
	if st := c.record("m-2"); st.Status != failover.StatusAborted || !strings.Contains(st.Reason, "called off") {
		t.Fatalf("after abort: %s (%s)", st.Status, st.Reason)
	}
	if n := len(c.table().SlotsOf("b1")) + len(c.table().SlotsOf("b2")); n != 512+128 {
		t.Errorf("IDC-B owns %d slots after aborting at 1/4, want %d", n, 512+128)
	}
	// status without ID: none in progress, so the newest.
	if r := c.must("cutover", "status"); !strings.Contains(r.stdout, "cutover  m-2") || !strings.Contains(r.stdout, "aborted") {
		t.Errorf("cutover status:\n%s", r.stdout)
	}
	if r := c.must("cutover", "list"); strings.Index(r.stdout, "m-2") > strings.Index(r.stdout, "m-1") {
		t.Errorf("cutover list is not newest first:\n%s", r.stdout)
	}
}

// startBackground runs cellctl in a goroutine; cancel is Ctrl-C.
type background struct {
	out, errb syncBuffer
	code      chan int
	cancel    context.CancelFunc
}

func (c *ctl) background(args ...string) *background {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	b := &background{code: make(chan int, 1), cancel: cancel}
	full := append([]string{"--etcd", c.etcd, "--cluster", c.cluster, "--actor", "tester"}, args...)
	go func() { b.code <- runContext(ctx, full, c.lookup, strings.NewReader(""), &b.out, &b.errb) }()
	c.t.Cleanup(cancel)
	return b
}

func (b *background) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-b.code:
		t.Logf("background cellctl -> %d\n%s%s", code, b.out.String(), b.errb.String())
		return code
	case <-time.After(testTimeout):
		t.Fatal("background cellctl did not end")
	}
	return -1
}

// waitStep polls the record until it is at step in stage (0-based).
func (c *ctl) waitStep(id string, stage int, step failover.StepName) {
	c.t.Helper()
	eventually(c.t, fmt.Sprintf("cutover %s at stage %d step %s", id, stage, step), func() bool {
		r := c.run("cutover", "status", id, "-o", "json")
		if r.code != 0 {
			return false
		}
		var st failover.State
		return json.Unmarshal([]byte(r.stdout), &st) == nil && st.Stage == stage && st.Step == step
	})
}

// TestCutoverLivePause: a pause sent to a runner that holds the lock stops
// the cutover after the stage.
func TestCutoverLivePause(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	bg := c.background("cutover", "start", "--from-idc", "IDC-A", "--to-idc", "IDC-B", "--auto", "--bake", "2s", "--gate-interval", "50ms", "--reason", "live", "--id", "live-1")
	c.waitStep("live-1", 1, failover.StepVerify)
	r := c.must("cutover", "pause", "live-1", "--reason", "hold on", "--wait", "10s")
	if !strings.Contains(r.stdout, "sent pause to the runner of cutover live-1") || !strings.Contains(r.stdout, "pause requested") {
		t.Errorf("pause output:\n%s", r.stdout)
	}
	if code := bg.wait(t); code != 0 {
		t.Fatalf("start ended %d after a pause, want 0", code)
	}
	if st := c.record("live-1"); st.Status != failover.StatusPaused || st.Stage != 2 {
		t.Fatalf("after pause: %s stage %d", st.Status, st.Stage)
	}
}

// TestCutoverLiveRunner: an abort sent to a runner that holds the lock;
// Ctrl-C leaves a resumable record, and abort then works without a runner.
func TestCutoverLiveRunner(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)

	// Ctrl-C in the middle of a bake: exit 7, resumable.
	c.must(append([]string{"cutover", "start"}, aToB("--bake", "3s", "--gate-interval", "50ms", "--stages", "1/4,1/2,1", "--reason", "live", "--id", "live-1")...)...)
	bg := c.background("cutover", "resume", "live-1", "--auto", "--gate-interval", "50ms")
	c.waitStep("live-1", 1, failover.StepVerify)
	bg.cancel()
	if code := bg.wait(t); code != exitNotFinished {
		t.Fatalf("interrupted start: exit %d, want %d", code, exitNotFinished)
	}
	for _, want := range []string{"cutover live-1 stopped at stage 2/3 1/2, step verify: interrupted", "cellctl cutover resume live-1"} {
		if !strings.Contains(bg.errb.String(), want) {
			t.Errorf("interrupted run does not say %q:\n%s", want, bg.errb.String())
		}
	}
	if st := c.record("live-1"); st.Status != failover.StatusRunning || st.Step != failover.StepVerify {
		t.Fatalf("after the interrupt: %s at %s", st.Status, st.Step)
	}

	// The runner is gone and the lock free: abort is done here, at once.
	c.must("cutover", "abort", "live-1", "--reason", "enough")
	if st := c.record("live-1"); st.Status != failover.StatusAborted {
		t.Fatalf("after abort: %s", st.Status)
	}

	// An abort sent to a live runner during a bake.
	bg = c.background("cutover", "start", "--from-idc", "IDC-A", "--to-idc", "IDC-B", "--auto", "--bake", "5s", "--gate-interval", "50ms", "--reason", "live 2", "--id", "live-2")
	c.waitStep("live-2", 1, failover.StepVerify)
	c.must("cutover", "abort", "live-2", "--reason", "stop now", "--wait", "10s")
	if code := bg.wait(t); code != exitNotFinished {
		t.Fatalf("start ended %d after an abort, want %d", code, exitNotFinished)
	}
	if !strings.Contains(bg.errb.String(), "cutover live-2 is aborted") {
		t.Errorf("aborted start says:\n%s", bg.errb.String())
	}
	if st := c.record("live-2"); st.Status != failover.StatusAborted {
		t.Fatalf("after abort: %s", st.Status)
	}
}

// TestCutoverProbeGate: a probe that fails rolls the stage back.
func TestCutoverProbeGate(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	before := owners(c.table())
	var probes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if !strings.HasPrefix(r.URL.Path, "/probe/probe-") {
			t.Errorf("probe path %q", r.URL.Path)
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	r := c.fails(exitNotFinished, []string{"probe FAIL", "HTTP 503"},
		startArgs("--reason", "gated", "--auto", "--stages", "1/8,1", "--probe-url", srv.URL+"/probe/{key}", "--probe-keys", "2")...)
	if !strings.Contains(r.stdout, "probe FAIL") {
		t.Errorf("progress does not show the failed gate:\n%s", r.stdout)
	}
	if probes.Load() == 0 {
		t.Error("no probe reached the server")
	}
	tbl := c.table()
	if !sameOwners(owners(tbl), before) || len(tbl.FrozenRanges()) != 0 {
		t.Errorf("after a failed gate the map is not back: %v frozen %v", owners(tbl), tbl.FrozenRanges())
	}
}

// TestDrain: a drained cell ends offline, owning nothing.
func TestDrain(t *testing.T) {
	t.Parallel()
	c, _ := newCluster(t)
	c.must("whitelist", "add", "u42", "--cell", "a2", "--reason", "canary")

	// Without a whitelist stage the key moves with the last stage.
	r := c.must(append([]string{"drain", "a2", "--reason", "maintenance", "--auto", "--id", "d-1", "--stages", "1/2,1"}, quick...)...)
	for _, want := range []string{"cell a2 active -> draining", "cell a2 owns nothing and is offline"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("drain output does not mention %q:\n%s", want, r.stdout)
		}
	}
	tbl := c.table()
	a2, _ := tbl.Cell("a2")
	if a2.State != router.StateOffline || len(tbl.SlotsOf("a2")) != 0 {
		t.Errorf("a2 after the drain: %s, %d slots", a2.State, len(tbl.SlotsOf("a2")))
	}
	for _, e := range tbl.Whitelist() {
		if e.Cell == "a2" {
			t.Errorf("key %s still pinned to a2", e.Key)
		}
	}
	// The other active cells took the slots, balanced by count.
	for _, id := range []string{"a1", "b1", "b2"} {
		if n := len(tbl.SlotsOf(id)); n < 256+80 || n > 256+90 {
			t.Errorf("%s owns %d slots after the drain", id, n)
		}
	}
	if st := c.record("d-1"); st.Status != failover.StatusDone || !st.Options.Drain {
		t.Errorf("drain record: %s %+v", st.Status, st.Options)
	}
	c.fails(exitUsage, []string{"already offline"}, "drain", "a2", "--reason", "again")
	c.fails(exitUsage, []string{`cell "zz" is not in the map`}, "drain", "zz", "--reason", "x")
}

// putDeadGuard registers a guard instance of cell that then dies: its ack
// stays, under a lease nobody renews.
func putDeadGuard(t *testing.T, cli *clientv3.Client, cluster, cell, inst string, epoch uint64, ttl int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	lease, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	val := fmt.Sprintf(`{"epoch":%d,"at":%q,"instance":%q}`, epoch, time.Now().UTC().Format(time.RFC3339Nano), inst)
	if _, err := cli.Put(ctx, etcdstore.KeysFor(cluster).Ack(cell, inst), val, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
}

// TestFailover: the emergency failover of IDC-A, with dead guards whose
// leases run out during the barrier.
func TestFailover(t *testing.T) {
	t.Parallel()
	c, ep := newCluster(t)
	cli := rawClient(t, ep)
	c.must("whitelist", "add", "u42", "--cell", "a1", "--reason", "canary")
	putDeadGuard(t, cli, c.cluster, "a1", "a1-0", 2, 3)
	putDeadGuard(t, cli, c.cluster, "a2", "a2-0", 2, 3)

	r := c.must("failover", "--from-idc", "IDC-A", "--to-idc", "IDC-B", "--reason", "IDC-A lost", "--liveness-window", "1s", "--bake", "100ms", "--id", "f-1")
	for _, want := range []string{
		"watching the guards of IDC-A (a1, a2)",
		"pending a1/a1-0@2, a2/a2-0@2 · their leases expire in ≤", // the countdown
		"512 slots and 1 whitelisted key from a1, a2 in IDC-A to b1, b2 in IDC-B in 1 stage",
		"flipped", "write-unavailable window (freeze→flip)", "IDC-A is fenced",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("failover output does not mention %q", want)
		}
	}
	tbl := c.table()
	for _, id := range []string{"a1", "a2"} {
		cell, _ := tbl.Cell(id)
		if cell.State != router.StateFenced || len(tbl.SlotsOf(id)) != 0 {
			t.Errorf("%s after the failover: %s, %d slots", id, cell.State, len(tbl.SlotsOf(id)))
		}
	}
	if rt := tbl.Lookup("u42"); rt.Cell.IDC != "IDC-B" {
		t.Errorf("u42 routes to %s after the failover", rt.Cell.ID)
	}
	st := c.record("f-1")
	if st.Status != failover.StatusDone || !st.Options.Emergency || len(st.Stages) != 1 || st.Stages[0].Window <= 0 {
		t.Errorf("failover record: %+v", st)
	}
	// The key pinned to a lost cell moved with the slots.
	if keys := st.Plan.Stages[0].Keys; len(keys) != 1 || keys[0].Key != "u42" {
		t.Errorf("keys moved by the failover: %+v", keys)
	}
	c.fails(exitRefused, []string{"emergency failover", "fenced"}, "cutover", "rollback", "f-1", "--reason", "undo")

	// The way back (docs/runbooks/failover.md): cells active, then a planned
	// cutover of half of IDC-B's slots.
	c.must("cell", "set-state", "a1", "active", "--reason", "IDC-A back")
	c.must("cell", "set-state", "a2", "active", "--reason", "IDC-A back")
	c.must(append([]string{"cutover", "start", "--from-idc", "IDC-B", "--to-idc", "IDC-A", "--stages", "1/256,1/8,1/4,1/2", "--auto", "--reason", "return"}, quick...)...)
	tbl = c.table()
	if n := len(tbl.SlotsOf("a1")) + len(tbl.SlotsOf("a2")); n != 512 {
		t.Errorf("IDC-A owns %d slots after the return, want 512", n)
	}
}

// TestFailoverRefusals: live guards and a cluster without self-fencing.
func TestFailoverRefusals(t *testing.T) {
	t.Parallel()
	c, ep := newCluster(t)
	cli := rawClient(t, ep)
	args := []string{"failover", "--from-idc", "IDC-A", "--to-idc", "IDC-B", "--reason", "IDC-A lost", "--liveness-window", "1s", "--bake", "100ms"}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c.fails(exitUsage, []string{"--self-fencing", "true or false"}, "settings", "set", "--self-fencing", "maybe", "--reason", "x")
	c.fails(exitUsage, []string{"--reason"}, "settings", "set", "--self-fencing=false")
	c.must("settings", "set", "--self-fencing=false", "--reason", "two sites only")
	if r := c.must("settings", "show"); !strings.Contains(r.stdout, "self-fencing  no") || !strings.Contains(r.stdout, "two sites only") {
		t.Errorf("settings show:\n%s", r.stdout)
	}
	c.fails(exitRefused, []string{"without self-fencing", "--confirm-idc-down"}, args...)
	if e := c.table().Epoch(); e != 1 {
		t.Errorf("refused failover changed the map: epoch %d", e)
	}
	// A corrupt settings document is an error, never the defaults; set repairs it.
	if _, err := cli.Put(ctx, "/cellkit/"+c.cluster+"/settings", "{nope"); err != nil {
		t.Fatal(err)
	}
	c.fails(exitInvalid, []string{"corrupt"}, "settings", "show")
	c.fails(exitInvalid, []string{"corrupt"}, args...)
	c.must("settings", "set", "--self-fencing=true", "--reason", "DC3 is live")
	if st, err := etcdcutover.LoadSettings(ctx, cli, c.cluster); err != nil || !st.SelfFencing {
		t.Fatalf("settings after set: %+v, %v", st, err)
	}

	// A live guard in IDC-A.
	cfg := etcdcell.Local("a1", "a1-live")
	cfg.Cluster = c.cluster
	inst, err := etcdcell.Register(ctx, cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	c.fails(exitRefused, []string{"live guard instance(s) in IDC-A", "a1/a1-live", "planned cutover"}, append(args, "--liveness-window", "2500ms")...)
	if n := len(c.table().SlotsOf("a1")); n != 256 {
		t.Errorf("refused failover moved slots: a1 owns %d", n)
	}
	if r := c.must("cutover", "list"); !strings.Contains(r.stdout, "no cutovers") {
		t.Errorf("refused failover left a record:\n%s", r.stdout)
	}

	// --force goes ahead (the live guard acks the freeze) and says so.
	r := c.run(append(args, "--liveness-window", "2500ms", "--force", "--id", "f-forced")...)
	if r.code != 0 {
		t.Fatalf("failover --force: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "WARNING: --force") {
		t.Errorf("--force does not warn:\n%s", r.stderr)
	}
	if st := c.record("f-forced"); !strings.Contains(st.Why, "forced by tester") || st.Status != failover.StatusDone {
		t.Errorf("forced failover record: %s, why %q", st.Status, st.Why)
	}
}

// TestCutoverArgs: bad arguments are usage errors (exit 2) found before
// etcd is dialed (the endpoint is closed), or, for names only the map
// knows, found without writing anything.
func TestCutoverArgs(t *testing.T) {
	t.Parallel()
	closed := "http://" + closedPort(t)
	start := func(extra ...string) []string {
		return append([]string{"cutover", "start", "--reason", "x"}, extra...)
	}
	tests := []struct {
		name  string
		wants []string
		args  []string
	}{
		{"missing reason", []string{"--reason is required"}, []string{"cutover", "start", "--from-idc", "A", "--to-idc", "B"}},
		{"no source", []string{"--from-idc IDC or --from-cell"}, start("--to-idc", "B")},
		{"no target", []string{"--to-idc IDC or --to-cell"}, start("--from-idc", "A")},
		{"both sources", []string{"--from-idc and --from-cell do not go together"}, start("--from-idc", "A", "--from-cell", "a1", "--to-idc", "B")},
		{"both targets", []string{"--to-idc and --to-cell"}, start("--from-idc", "A", "--to-idc", "B", "--to-cell", "b1")},
		{"bad cell name", []string{`--from-cell "a_"`}, start("--from-cell", "a_", "--to-idc", "B")},
		{"bad stages", []string{`--stages "1/2,1/4"`, "increase"}, start(aToB("--stages", "1/2,1/4")...)},
		{"bad fraction", []string{`"3/2"`}, start(aToB("--stages", "3/2")...)},
		{"whitelist not first", []string{"whitelist stage must come first"}, start(aToB("--stages", "1/2,whitelist")...)},
		{"canary without whitelist", []string{"--canary needs the whitelist stage"}, start(aToB("--stages", "1/2,1", "--canary", "u1")...)},
		{"canary ID", []string{"slot-bearing ID"}, start(aToB("--canary", mustID(t))...)},
		{"bad bake", []string{"--bake"}, start(aToB("--bake", "-1s")...)},
		{"bad barrier timeout", []string{"--barrier-timeout"}, start(aToB("--barrier-timeout", "0s")...)},
		{"bad mover", []string{`--mover "rsync"`, `"copy"`}, start(aToB("--mover", "rsync")...)},
		{"mover without db", []string{"--db CELL=DSN"}, start(aToB("--mover", "copy")...)},
		{"db without mover", []string{"--db is for the SQL movers"}, start(aToB("--db", "a1=sqlite:/tmp/a1.db")...)},
		{"bad db", []string{`--db "a1"`, "CELL=DSN"}, start(aToB("--mover", "copy", "--db", "a1")...)},
		{"bad dsn", []string{"--db a1", "sqlite:PATH"}, start(aToB("--mover", "copy", "--db", "a1=postgres://x/y")...)},
		{"db twice", []string{"cell a1 given twice"}, start(aToB("--mover", "copy", "--db", "a1=sqlite:/a", "--db", "a1=sqlite:/b")...)},
		{"gtid needs mysql", []string{"mysql-gtid needs a mysql:// DSN"}, start(aToB("--mover", "mysql-gtid", "--db", "a1=sqlite:/a")...)},
		{"semi-sync needs gtid", []string{"--require-semi-sync is for --mover mysql-gtid"}, start(aToB("--mover", "copy", "--db", "a1=sqlite:/a", "--require-semi-sync")...)},
		{"probe without key", []string{"{key}"}, start(aToB("--probe-url", "http://x/probe")...)},
		{"probe not http", []string{"http:// or https://"}, start(aToB("--probe-url", "ftp://x/{key}")...)},
		{"gate without prom", []string{"--gate needs --prom-url"}, start(aToB("--gate", "up < 1")...)},
		{"prom without gate", []string{"--prom-url without --gate"}, start(aToB("--prom-url", "http://p:9090")...)},
		{"bad gate", []string{"--gate", "no comparison operator"}, start(aToB("--prom-url", "http://p:9090", "--gate", "up")...)},
		{"bad prom url", []string{"--prom-url"}, start(aToB("--prom-url", "p:9090", "--gate", "up < 1")...)},
		{"bad id", []string{`--id "a b"`}, start(aToB("--id", "a b")...)},
		{"plan no target", []string{"--to-idc"}, []string{"cutover", "plan", "--from-idc", "A"}},
		{"pause no reason", []string{"--reason is required"}, []string{"cutover", "pause", "cut-1"}},
		{"rollback bad wait", []string{"--wait"}, []string{"cutover", "rollback", "cut-1", "--reason", "x", "--wait", "0s"}},
		{"resume no id", []string{"want the cutover ID"}, []string{"cutover", "resume"}},
		{"resume bad lock wait", []string{"--lock-wait"}, []string{"cutover", "resume", "cut-1", "--lock-wait", "-1s"}},
		{"status bad id", []string{`cutover ID "a/b"`}, []string{"cutover", "status", "a/b"}},
		{"drain no reason", []string{"--reason is required"}, []string{"drain", "a1"}},
		{"drain bad cell", []string{`cell "a_"`}, []string{"drain", "a_", "--reason", "x"}},
		{"drain bad target", []string{"--to-cell"}, []string{"drain", "a1", "--reason", "x", "--to-cell", "b_"}},
		{"drain partial", []string{"last stage must be 1"}, []string{"drain", "a1", "--reason", "x", "--stages", "1/8,1/2"}},
		{"failover no target", []string{"--to-idc"}, []string{"failover", "--from-idc", "A", "--reason", "x"}},
		{"failover same idc", []string{"both A"}, []string{"failover", "--from-idc", "A", "--to-idc", "A", "--reason", "x"}},
		{"failover short window", []string{"--liveness-window"}, []string{"failover", "--from-idc", "A", "--to-idc", "B", "--reason", "x", "--liveness-window", "100ms"}},
		{"failover no reason", []string{"--reason is required"}, []string{"failover", "--from-idc", "A", "--to-idc", "B"}},
		{"unknown subcommand", []string{`unknown command "strat"`, `did you mean "start"`}, []string{"cutover", "strat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCtl(t, closed)
			c.fails(exitUsage, tt.wants, tt.args...)
		})
	}

	// Names only the map knows: refused with exit 2, nothing written.
	c, _ := newCluster(t)
	keyOnB := "u0"
	for i := 0; router.Slot(keyOnB, 1024) < 512; i++ {
		keyOnB = fmt.Sprintf("u%d", i)
	}
	for _, tt := range []struct {
		wants []string
		args  []string
	}{
		{[]string{`source cell "zz"`, "unknown cell"}, start("--from-cell", "zz", "--to-idc", "IDC-B")},
		{[]string{`target IDC "IDC-Z" has no cells`}, start("--from-idc", "IDC-A", "--to-idc", "IDC-Z")},
		{[]string{"both a source and a target"}, start("--from-idc", "IDC-A", "--to-cell", "a1")},
		{[]string{fmt.Sprintf("canary key %q is served by b", keyOnB), "not by a source cell"}, start(aToB("--canary", keyOnB)...)},
		{[]string{"no cell of the map", "IDC-Z"}, []string{"failover", "--from-idc", "IDC-Z", "--to-idc", "IDC-B", "--reason", "x"}},
	} {
		c.fails(exitUsage, tt.wants, tt.args...)
	}
	c.must("cell", "set-state", "b1", "draining", "--reason", "not a target now")
	c.fails(exitUsage, []string{"target cell b1 is draining, not active"}, start(aToB()...)...)
	if e := c.table().Epoch(); e != 2 {
		t.Errorf("refused starts changed the map: epoch %d, want 2", e)
	}
	if r := c.must("cutover", "list"); !strings.Contains(r.stdout, "no cutovers") {
		t.Errorf("refused starts left records:\n%s", r.stdout)
	}
	c.fails(exitNotFound, []string{`no cutover "nope"`}, "cutover", "status", "nope")
	c.fails(exitNotFound, []string{`no cutover "nope"`}, "cutover", "abort", "nope", "--reason", "x")
}

// TestCutoverCorruptRecord: a record nobody can read blocks new cutovers
// and is named.
func TestCutoverCorruptRecord(t *testing.T) {
	t.Parallel()
	c, ep := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := rawClient(t, ep).Put(ctx, etcdstore.KeysFor(c.cluster).Prefix+"cutovers/bad-1", "{not json"); err != nil {
		t.Fatal(err)
	}
	c.fails(exitInvalid, []string{"cutovers/bad-1", "corrupt"}, startArgs("--reason", "x")...)
	c.fails(exitInvalid, []string{"cutovers/bad-1"}, "cutover", "list")
	c.fails(exitInvalid, []string{"cutovers/bad-1"}, "cutover", "status", "bad-1")
}

// TestCutoverExitCodes maps the cutover errors to exit codes.
func TestCutoverExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"locked", fmt.Errorf("x: %w", etcdcutover.ErrLocked), exitConflict},
		{"busy", fmt.Errorf("x: %w", etcdcutover.ErrBusy), exitConflict},
		{"exists", fmt.Errorf("x: %w", etcdcutover.ErrExists), exitConflict},
		{"bad event", fmt.Errorf("x: %w", failover.ErrBadEvent), exitConflict},
		{"no such cutover", fmt.Errorf("x: %w", etcdcutover.ErrNotFound), exitNotFound},
		{"corrupt record", fmt.Errorf("x: %w", etcdcutover.ErrCorruptRecord), exitInvalid},
		{"corrupt settings", fmt.Errorf("x: %w", errCorruptSettings), exitInvalid},
		{"bad plan", fmt.Errorf("x: %w", failover.ErrBadPlan), exitUsage},
		{"not finished", notFinishedErr(&failover.State{ID: "c", Status: failover.StatusFailed, Plan: &failover.Plan{}}), exitNotFinished},
		{"stopped, etcd down", stoppedErr(&failover.State{ID: "c", Status: failover.StatusRunning, Plan: &failover.Plan{Stages: []failover.Stage{{Name: "1"}}}},
			&etcdstore.UnreachableError{Endpoints: []string{"http://x:1"}, Err: context.DeadlineExceeded}), exitNotFinished},
		{"alive", fmt.Errorf("x: %w", etcdcutover.ErrAlive), exitRefused},
		{"refused", fmt.Errorf("x: %w", errRefused), exitRefused},
		{"interrupted wait", &hintError{fmt.Errorf("x: %w", errInterrupted), "h"}, exitError},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
	// A stopped runner is not reported as a bare "interrupted".
	err := stoppedErr(&failover.State{ID: "c", Status: failover.StatusRunning, Step: failover.StepBarrier, Plan: &failover.Plan{Stages: []failover.Stage{{Name: "1/8"}}}}, context.Canceled)
	if msg := message(err); !strings.Contains(msg, "cutover c stopped at stage 1/1 1/8, step barrier: interrupted") {
		t.Errorf("message = %q", msg)
	}
	if h := hint(err); !strings.Contains(h, "cellctl cutover resume c") || !strings.Contains(h, "may stay frozen") {
		t.Errorf("hint = %q", h)
	}
}
