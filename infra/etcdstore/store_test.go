package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCreateLoadUpdateHistory(t *testing.T) {
	st := etcdtest.Store(t, etcdtest.Client(t, etcdtest.Start(t)), "test")
	ctx := ctxT(t)

	if _, _, err := st.Load(ctx); !errors.Is(err, etcdstore.ErrNoMap) {
		t.Fatalf("Load on empty cluster: %v, want ErrNoMap", err)
	}
	if _, err := st.Create(ctx, "", etcdtest.TwoCellMap(t, 1024)); !errors.Is(err, etcdstore.ErrNoReason) {
		t.Fatalf("Create without reason: %v", err)
	}
	created, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 1024))
	must(t, err)
	if created.Epoch() != 1 || !created.Sealed() {
		t.Fatalf("created epoch %d sealed %v", created.Epoch(), created.Sealed())
	}
	if _, err := st.Create(ctx, "again", etcdtest.TwoCellMap(t, 1024)); !errors.Is(err, etcdstore.ErrMapExists) {
		t.Fatalf("second Create: %v, want ErrMapExists", err)
	}

	next, err := st.Update(ctx, "canary u42", func(tb *router.Table) error { return tb.SetWhitelist("u42", "b1") })
	must(t, err)
	if next.Epoch() != 2 || next.Owner("u42").ID != "b1" {
		t.Fatalf("after update: epoch %d owner %v", next.Epoch(), next.Owner("u42"))
	}
	if _, err := st.Update(ctx, "same again", func(tb *router.Table) error { return tb.SetWhitelist("u42", "b1") }); !errors.Is(err, etcdstore.ErrNoChange) {
		t.Fatalf("no-op update: %v, want ErrNoChange", err)
	}
	// An update that would leave the map invalid is refused and changes nothing.
	_, err = st.Update(ctx, "take a1 offline", func(tb *router.Table) error { return tb.SetCellState("a1", router.StateOffline) })
	if !errors.Is(err, router.ErrInvalidTable) || !strings.Contains(err.Error(), "offline cell \"a1\"") {
		t.Fatalf("invalid update: %v", err)
	}
	// fn's own error is returned as is.
	_, err = st.Update(ctx, "unknown", func(tb *router.Table) error { return tb.SetWhitelist("u1", "zz") })
	if !errors.Is(err, router.ErrUnknownCell) {
		t.Fatalf("fn error: %v", err)
	}

	loaded, _, err := st.Load(ctx)
	must(t, err)
	if loaded.Epoch() != 2 {
		t.Fatalf("loaded epoch %d, want 2", loaded.Epoch())
	}

	hist, err := st.History(ctx, 0)
	must(t, err)
	if len(hist) != 2 {
		t.Fatalf("history has %d records, want 2: %+v", len(hist), hist)
	}
	h := hist[0]
	if h.Epoch != 2 || h.PrevEpoch != 1 || h.Who != "tester" || h.Why != "canary u42" || h.Op != "update" || h.Revision == 0 {
		t.Fatalf("newest audit record: %+v", h)
	}
	if len(h.Diff.WhitelistAdded) != 1 || h.Diff.WhitelistAdded[0] != (router.WhitelistEntry{Key: "u42", Cell: "b1"}) {
		t.Fatalf("audit diff: %+v", h.Diff)
	}
	if hist[1].Op != "create" || hist[1].Epoch != 1 || len(hist[1].Diff.CellsAdded) != 2 {
		t.Fatalf("create record: %+v", hist[1])
	}
	if one, _ := st.History(ctx, 1); len(one) != 1 || one[0].Epoch != 2 {
		t.Fatalf("History(1) = %+v", one)
	}
}

// Two concurrent updates read the same revision; one compare-and-swap loses,
// reloads and applies its change on top of the winner's.
func TestConcurrentUpdatesRetry(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	st := etcdtest.Store(t, cli, "test")
	ctx := ctxT(t)
	_, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 1024))
	must(t, err)

	var arrived sync.WaitGroup
	arrived.Add(2)
	var calls atomic.Int32
	update := func(key, cell string) func(*router.Table) error {
		first := true
		return func(tb *router.Table) error {
			calls.Add(1)
			if first {
				// Both updates hold the same base epoch before either writes.
				first = false
				arrived.Done()
				arrived.Wait()
			}
			return tb.SetWhitelist(key, cell)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, kv := range [][2]string{{"u1", "a1"}, {"u2", "b1"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Update(ctx, "whitelist "+kv[0], update(kv[0], kv[1]))
		}()
	}
	wg.Wait()
	must(t, errors.Join(errs...))

	if got := calls.Load(); got != 3 {
		t.Fatalf("fn called %d times, want 3 (one CAS lost and retried)", got)
	}
	if st.Conflicts() != 1 {
		t.Fatalf("conflicts = %d, want 1", st.Conflicts())
	}
	final, _, err := st.Load(ctx)
	must(t, err)
	if final.Epoch() != 3 {
		t.Fatalf("final epoch %d, want 3", final.Epoch())
	}
	if final.Owner("u1").ID != "a1" || final.Owner("u2").ID != "b1" || len(final.Whitelist()) != 2 {
		t.Fatalf("both changes must be present: %+v", final.Whitelist())
	}
	hist, err := st.History(ctx, 0)
	must(t, err)
	var epochs []uint64
	for _, h := range hist {
		epochs = append(epochs, h.Epoch)
		if h.Epoch > 1 && h.PrevEpoch != h.Epoch-1 {
			t.Fatalf("record %d has prevEpoch %d", h.Epoch, h.PrevEpoch)
		}
	}
	if !slices.Equal(epochs, []uint64{3, 2, 1}) {
		t.Fatalf("audit epochs %v, want [3 2 1]", epochs)
	}
}

// recorder collects what a watcher installs and refuses.
type recorder struct {
	mu     sync.Mutex
	epochs []uint64
	errs   []error
}

func (r *recorder) config() router.WatcherConfig {
	return router.WatcherConfig{
		OnUpdate: func(_, t *router.Table) { r.mu.Lock(); r.epochs = append(r.epochs, t.Epoch()); r.mu.Unlock() },
		OnError:  func(err error) { r.mu.Lock(); r.errs = append(r.errs, err); r.mu.Unlock() },
	}
}

func (r *recorder) snapshot() ([]uint64, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.epochs), slices.Clone(r.errs)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// updateRetrying retries while etcd is coming back from a restart.
func updateRetrying(t *testing.T, st *etcdstore.Store, key string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := st.Update(ctx, "add "+key, func(tb *router.Table) error { return tb.SetWhitelist(key, "a1") })
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("update %s: %v", key, err)
		}
	}
}

func TestWatcherSeesEveryEpochAcrossRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	st := etcdtest.Store(t, etcdtest.Client(t, srv), "test")
	writer := etcdtest.Store(t, etcdtest.Client(t, srv), "test")
	ctx := ctxT(t)
	_, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 1024))
	must(t, err)

	var rec recorder
	w := router.NewWatcher(st, rec.config())
	must(t, w.Start(context.Background()))
	t.Cleanup(w.Close)

	for i := range 5 {
		updateRetrying(t, writer, fmt.Sprintf("before-%d", i))
	}
	if _, err := w.WaitEpoch(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
	for i := range 5 {
		updateRetrying(t, writer, fmt.Sprintf("after-%d", i))
	}
	got, err := w.WaitEpoch(ctx, 11)
	must(t, err)
	if got.Epoch() != 11 || len(got.Whitelist()) != 10 {
		t.Fatalf("watcher table epoch %d whitelist %d", got.Epoch(), len(got.Whitelist()))
	}
	epochs, errs := rec.snapshot()
	want := []uint64{2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	if !slices.Equal(epochs, want) {
		t.Fatalf("watcher installed epochs %v, want %v", epochs, want)
	}
	if len(errs) != 0 {
		t.Fatalf("watcher errors: %v", errs)
	}
}

func TestCorruptMapNeverReplacesLastGood(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := etcdtest.Client(t, srv)
	st := etcdtest.Store(t, cli, "test")
	ctx := ctxT(t)
	_, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 1024))
	must(t, err)
	good, err := st.Update(ctx, "canary", func(tb *router.Table) error { return tb.SetWhitelist("u42", "b1") })
	must(t, err)

	var rec recorder
	w := router.NewWatcher(st, rec.config())
	must(t, w.Start(context.Background()))
	t.Cleanup(w.Close)

	mapKey := st.Keys().Map()
	older, err := router.Encode(etcdtest.TwoCellMap(t, 1024)) // epoch 0: valid but older
	must(t, err)
	unowned := strings.Replace(string(mustEncode(t, good)), `{"first":512,"last":1023,"cell":"b1"}`, `{"first":512,"last":1000,"cell":"b1"}`, 1)
	bad := []struct{ name, value, want string }{
		{"not json", "{garbage", "not a JSON object"},
		{"unknown schema", `{"schema":9,"epoch":99}`, "schema 9"},
		{"unowned slots", strings.Replace(unowned, `"epoch":2`, `"epoch":50`, 1), "slots 1001-1023 have no owner"},
		{"epoch regressed", string(older), "not newer than installed epoch 2"},
	}
	for i, b := range bad {
		_, err := cli.Put(ctx, mapKey, b.value)
		must(t, err)
		waitFor(t, b.name+" reported", func() bool { _, errs := rec.snapshot(); return len(errs) == i+1 })
		if w.Table().Epoch() != good.Epoch() {
			t.Fatalf("%s: watcher replaced the last good table with epoch %d", b.name, w.Table().Epoch())
		}
		if w.Table().Owner("u42").ID != "b1" {
			t.Fatalf("%s: watcher lost the last good table", b.name)
		}
		if err := w.Err(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Fatalf("%s: watcher Err() = %v, want mention of %q", b.name, err, b.want)
		}
	}
	_, errs := rec.snapshot()
	var cme *etcdstore.CorruptMapError
	if !errors.As(errs[0], &cme) || cme.Revision == 0 {
		t.Fatalf("first error %v is not a CorruptMapError with a revision", errs[0])
	}

	// Loads and updates refuse to build on a corrupt map (the last put was a
	// valid-but-older map, so corrupt it again)...
	_, err = cli.Put(ctx, mapKey, `{"schema":1,"epoch":77,"slotCount":1000}`)
	must(t, err)
	if _, _, err := st.Load(ctx); !errors.Is(err, etcdstore.ErrCorruptMap) || !strings.Contains(err.Error(), "slotCount 1000") {
		t.Fatalf("Load of corrupt map: %v", err)
	}
	if _, err := st.Update(ctx, "x", func(*router.Table) error { return nil }); !errors.Is(err, etcdstore.ErrCorruptMap) {
		t.Fatalf("Update on corrupt map: %v", err)
	}
	// ...and Replace repairs it with an epoch above anything seen (77 here).
	fixed, err := st.Replace(ctx, "repair after manual edit", good.Clone())
	must(t, err)
	if fixed.Epoch() != 78 {
		t.Fatalf("repaired epoch %d, want 78", fixed.Epoch())
	}
	if _, err := w.WaitEpoch(ctx, 78); err != nil {
		t.Fatal(err)
	}
	if w.Err() != nil {
		t.Fatalf("Err() after a good table: %v", w.Err())
	}
	hist, err := st.History(ctx, 1)
	must(t, err)
	if hist[0].Op != "replace" || hist[0].Epoch != 78 || hist[0].Why != "repair after manual edit" {
		t.Fatalf("replace audit: %+v", hist[0])
	}
}

func mustEncode(t *testing.T, tb *router.Table) []byte {
	t.Helper()
	b, err := router.Encode(tb)
	must(t, err)
	return b
}

func TestWatchAfterCompactionReloads(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	st := etcdtest.Store(t, cli, "test")
	ctx := ctxT(t)
	_, rev0, _ := st.Load(ctx) // ErrNoMap, but the revision is real
	_, err := st.Create(ctx, "bootstrap", etcdtest.TwoCellMap(t, 1024))
	must(t, err)
	for i := range 3 {
		_, err := st.Update(ctx, "step", func(tb *router.Table) error { return tb.SetWhitelist(fmt.Sprint("k", i), "a1") })
		must(t, err)
	}
	cur, rev, err := st.Load(ctx)
	must(t, err)
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := st.Watch(wctx, rev0)
	select {
	case ev := <-ch:
		if ev.Err != nil || ev.Table == nil || ev.Table.Epoch() != cur.Epoch() {
			t.Fatalf("after compaction got %+v, want the current table (epoch %d)", ev, cur.Epoch())
		}
	case <-ctx.Done():
		t.Fatal("no event after compaction")
	}
	// And it keeps following from there.
	_, err = st.Update(ctx, "after compaction", func(tb *router.Table) error { return tb.SetWhitelist("late", "b1") })
	must(t, err)
	ev := <-ch
	if ev.Table == nil || ev.Table.Epoch() != cur.Epoch()+1 {
		t.Fatalf("next event %+v", ev)
	}
}

func TestDialUnreachableNamesEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	ep := "http://" + addr
	_, err = etcdstore.Dial(context.Background(), etcdstore.DialConfig{Endpoints: []string{ep}, DialTimeout: 500 * time.Millisecond})
	var ue *etcdstore.UnreachableError
	if !errors.As(err, &ue) || !errors.Is(err, etcdstore.ErrUnreachable) || !strings.Contains(err.Error(), ep) {
		t.Fatalf("Dial closed port: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  etcdstore.DialConfig
		want string
	}{
		{"no endpoints", etcdstore.DialConfig{}, "no etcd endpoints"},
		{"not a url", etcdstore.DialConfig{Endpoints: []string{"127.0.0.1:2379"}}, "want a URL"},
		{"cert without key", etcdstore.DialConfig{Endpoints: []string{"http://x:1"}, Cert: "c.pem"}, "--cert and --key"},
		{"password without user", etcdstore.DialConfig{Endpoints: []string{"http://x:1"}, Password: "p"}, "password without a user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if !errors.Is(err, etcdstore.ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := etcdstore.New(&clientv3.Client{}, etcdstore.Config{Cluster: "Bad/Name"}); !errors.Is(err, etcdstore.ErrBadConfig) {
		t.Fatalf("bad cluster name: %v", err)
	}
}

// A map too fragmented to fit one etcd request is refused before it is sent,
// with a message that says why, and the stored map is untouched.
func TestTooLargeRefused(t *testing.T) {
	st := etcdtest.Store(t, etcdtest.Client(t, etcdtest.Start(t)), "test")
	ctx := ctxT(t)
	tb, err := router.NewTable(65536)
	must(t, err)
	must(t, tb.AddCell(router.Cell{ID: "a1", IDC: "A"}))
	must(t, tb.AddCell(router.Cell{ID: "b1", IDC: "B"}))
	for s := 0; s < 65536; s++ {
		must(t, tb.Assign(router.SlotRange{First: s, Last: s}, []string{"a1", "b1"}[s%2]))
	}
	_, err = st.Create(ctx, "fragmented", tb)
	if !errors.Is(err, etcdstore.ErrTooLarge) || !strings.Contains(err.Error(), "65536 owner ranges") {
		t.Fatalf("Create of a fragmented 65536-slot map: %v, want ErrTooLarge naming the ranges", err)
	}
	if _, _, err := st.Load(ctx); !errors.Is(err, etcdstore.ErrNoMap) {
		t.Fatalf("after refused create: %v", err)
	}
}
