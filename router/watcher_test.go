package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeSource is a Source driven by the test. Watch hands the watcher the
// unbuffered channel ch itself, so a send on ch returns only once the watcher
// has taken the event, which means it has finished applying the one before.
type fakeSource struct {
	load    *Table
	loadRev int64
	loadErr error

	ch       chan Event
	mu       sync.Mutex
	watchRev []int64
}

func newFakeSource(tb *Table, rev int64) *fakeSource {
	return &fakeSource{load: tb, loadRev: rev, ch: make(chan Event)}
}

func (s *fakeSource) Load(ctx context.Context) (*Table, int64, error) {
	return s.load, s.loadRev, s.loadErr
}

func (s *fakeSource) Watch(ctx context.Context, rev int64) <-chan Event {
	s.mu.Lock()
	s.watchRev = append(s.watchRev, rev)
	s.mu.Unlock()
	return s.ch
}

var _ Source = (*fakeSource)(nil)

// recorder collects callbacks.
type recorder struct {
	updates chan [2]*Table
	errs    chan error
}

func newRecorder() *recorder {
	return &recorder{updates: make(chan [2]*Table, 100), errs: make(chan error, 100)}
}

func (r *recorder) config() WatcherConfig {
	return WatcherConfig{
		OnUpdate: func(old, new *Table) { r.updates <- [2]*Table{old, new} },
		OnError:  func(err error) { r.errs <- err },
	}
}

const waitLimit = 10 * time.Second

func (r *recorder) nextUpdate(t *testing.T) (old, new *Table) {
	t.Helper()
	select {
	case u := <-r.updates:
		return u[0], u[1]
	case <-time.After(waitLimit):
		t.Fatal("no OnUpdate")
		return nil, nil
	}
}

func (r *recorder) nextErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.errs:
		return err
	case <-time.After(waitLimit):
		t.Fatal("no OnError")
		return nil
	}
}

func (r *recorder) quiet(t *testing.T) {
	t.Helper()
	select {
	case u := <-r.updates:
		t.Fatalf("unexpected OnUpdate to epoch %d", u[1].Epoch())
	case err := <-r.errs:
		t.Fatalf("unexpected OnError: %v", err)
	default:
	}
}

// tableAt returns a sealed copy of the test table at epoch e, with slot 0
// owned by owner.
func tableAt(t *testing.T, e uint64, owner string) *Table {
	t.Helper()
	tb := newTestTable(t)
	tb.SetEpoch(e)
	must(t, tb.Assign(SlotRange{0, 0}, owner))
	return tb.Seal()
}

func startWatcher(t *testing.T, src *fakeSource, cfg WatcherConfig) *Watcher {
	t.Helper()
	w := NewWatcher(src, cfg)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// send delivers ev and then a no-op event (the table installed after ev, at
// revision 0), so when send returns ev has been applied completely.
func send(t *testing.T, src *fakeSource, w *Watcher, ev Event) {
	t.Helper()
	deliver := func(ev Event) {
		select {
		case src.ch <- ev:
		case <-time.After(waitLimit):
			t.Fatal("watcher does not take events")
		}
	}
	// Only this goroutine sends, so the installed table after ev is known.
	after := w.Table()
	if ev.Err == nil && ev.Table != nil && ev.Table.Epoch() > after.Epoch() {
		after = ev.Table
	}
	deliver(ev)
	deliver(Event{Table: after, Revision: 0})
}

func TestWatcherInstallsNewerEpochs(t *testing.T) {
	t1 := tableAt(t, 1, "a1")
	src := newFakeSource(t1, 10)
	rec := newRecorder()
	w := startWatcher(t, src, rec.config())
	if w.Table() != t1 || w.Revision() != 10 || w.Err() != nil {
		t.Fatalf("after Start: epoch %d rev %d err %v", w.Table().Epoch(), w.Revision(), w.Err())
	}
	src.mu.Lock()
	if len(src.watchRev) != 1 || src.watchRev[0] != 10 {
		t.Fatalf("Watch called with %v, want [10]", src.watchRev)
	}
	src.mu.Unlock()

	prev := t1
	for e := uint64(2); e <= 6; e++ {
		tn := tableAt(t, e, []string{"a1", "b1", "c1"}[e%3])
		send(t, src, w, Event{Table: tn, Revision: int64(10 + e)})
		old, new := rec.nextUpdate(t)
		if old != prev || new != tn || w.Table() != tn || w.Revision() != int64(10+e) {
			t.Fatalf("epoch %d: OnUpdate(%d, %d), installed %d at rev %d", e, old.Epoch(), new.Epoch(), w.Table().Epoch(), w.Revision())
		}
		prev = tn
	}
	// Epochs may skip.
	t9 := tableAt(t, 9, "b1")
	send(t, src, w, Event{Table: t9, Revision: 30})
	if _, new := rec.nextUpdate(t); new != t9 {
		t.Fatal("epoch 9 not installed")
	}
	rec.quiet(t)
}

func TestWatcherRefusesBadEvents(t *testing.T) {
	t5 := tableAt(t, 5, "a1")
	src := newFakeSource(t5, 50)
	rec := newRecorder()
	w := startWatcher(t, src, rec.config())

	corrupt := fmt.Errorf("decode: %w", ErrMalformedMap)
	cases := []struct {
		name   string
		ev     Event
		target error
		subs   []string
	}{
		{"error event", Event{Err: corrupt, Revision: 51}, ErrMalformedMap, []string{"revision 51", "keeping epoch 5"}},
		{"epoch regression", Event{Table: tableAt(t, 4, "a1"), Revision: 52}, ErrEpochRegressed, []string{"revision 52", "epoch 4", "installed epoch 5"}},
		{"same epoch, different content", Event{Table: tableAt(t, 5, "b1"), Revision: 53}, ErrEpochRegressed, []string{"epoch 5"}},
		{"no table and no error", Event{Revision: 54}, nil, []string{"revision 54", "neither"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			send(t, src, w, c.ev)
			err := rec.nextErr(t)
			wantErr(t, err, c.target, c.subs...)
			if w.Err() == nil || w.Err().Error() != err.Error() {
				t.Fatalf("Err() = %v, OnError got %v", w.Err(), err)
			}
			if w.Table() != t5 || w.Revision() != 50 {
				t.Fatalf("a refused event changed the table: epoch %d rev %d", w.Table().Epoch(), w.Revision())
			}
			rec.quiet(t)
		})
	}

	// An identical table at the same epoch (a reload) is not news: no callback,
	// the error stays until a good new table arrives.
	same := tableAt(t, 5, "a1")
	send(t, src, w, Event{Table: same, Revision: 60})
	rec.quiet(t)
	if w.Table() != t5 || w.Revision() != 60 || w.Err() == nil {
		t.Fatalf("same-epoch reload: table %p (want %p) rev %d err %v", w.Table(), t5, w.Revision(), w.Err())
	}

	t6 := tableAt(t, 6, "c1")
	send(t, src, w, Event{Table: t6, Revision: 61})
	if _, new := rec.nextUpdate(t); new != t6 {
		t.Fatal("epoch 6 not installed")
	}
	if w.Err() != nil {
		t.Fatalf("Err() = %v after a good table", w.Err())
	}
}

func TestWatcherSameEpochIdenticalIsSilent(t *testing.T) {
	t3 := tableAt(t, 3, "a1")
	src := newFakeSource(t3, 5)
	rec := newRecorder()
	w := startWatcher(t, src, rec.config())
	for i := 0; i < 3; i++ {
		send(t, src, w, Event{Table: tableAt(t, 3, "a1"), Revision: int64(6 + i)})
	}
	rec.quiet(t)
	if w.Table() != t3 || w.Err() != nil || w.Revision() != 8 {
		t.Fatalf("table %p (want %p) err %v rev %d", w.Table(), t3, w.Err(), w.Revision())
	}
	// An older revision does not move the revision back.
	send(t, src, w, Event{Table: tableAt(t, 3, "a1"), Revision: 2})
	if w.Revision() != 8 {
		t.Fatalf("revision %d, want 8", w.Revision())
	}
}

func TestWatcherWithoutCallbacks(t *testing.T) {
	src := newFakeSource(tableAt(t, 1, "a1"), 1)
	w := startWatcher(t, src, WatcherConfig{})
	send(t, src, w, Event{Err: errors.New("boom"), Revision: 2})
	if w.Err() == nil {
		t.Fatal("no Err")
	}
	send(t, src, w, Event{Table: tableAt(t, 2, "a1"), Revision: 3})
	if w.Table().Epoch() != 2 || w.Err() != nil {
		t.Fatalf("epoch %d err %v", w.Table().Epoch(), w.Err())
	}
}

func TestWatcherSealsUnsealedTables(t *testing.T) {
	loaded := newTestTable(t) // mutable
	src := newFakeSource(loaded, 1)
	w := startWatcher(t, src, WatcherConfig{})
	if !w.Table().Sealed() {
		t.Fatal("installed table is mutable")
	}
	loaded.SetEpoch(1000) // the source's copy is not the installed one
	if w.Table().Epoch() != 7 {
		t.Fatal("the watcher shares a mutable table with its source")
	}
}

func TestWatcherStartErrors(t *testing.T) {
	src := newFakeSource(nil, 0)
	src.loadErr = context.DeadlineExceeded
	w := NewWatcher(src, WatcherConfig{})
	err := w.Start(context.Background())
	wantErr(t, err, context.DeadlineExceeded, "initial load")
	if w.Table() != nil {
		t.Fatal("table after a failed Start")
	}
	w.Close() // harmless

	src.loadErr = nil
	err = NewWatcher(src, WatcherConfig{}).Start(context.Background())
	wantErr(t, err, nil, "no table")
}

func TestWatcherWaitEpoch(t *testing.T) {
	src := newFakeSource(tableAt(t, 2, "a1"), 1)
	w := startWatcher(t, src, WatcherConfig{})
	ctx := context.Background()

	// Already reached.
	if tb, err := w.WaitEpoch(ctx, 2); err != nil || tb.Epoch() != 2 {
		t.Fatalf("WaitEpoch(2) = %v, %v", tb, err)
	}
	if tb, err := w.WaitEpoch(ctx, 0); err != nil || tb.Epoch() != 2 {
		t.Fatalf("WaitEpoch(0) = %v, %v", tb, err)
	}

	type result struct {
		tb  *Table
		err error
	}
	done := make(chan result, 1)
	go func() {
		tb, err := w.WaitEpoch(ctx, 5)
		done <- result{tb, err}
	}()
	for e := uint64(3); e <= 4; e++ {
		send(t, src, w, Event{Table: tableAt(t, e, "a1"), Revision: int64(e)})
		select {
		case r := <-done:
			t.Fatalf("WaitEpoch(5) returned at epoch %d: %v, %v", e, r.tb, r.err)
		default:
		}
	}
	t6 := tableAt(t, 6, "b1") // overshooting satisfies the wait
	send(t, src, w, Event{Table: t6, Revision: 6})
	select {
	case r := <-done:
		if r.err != nil || r.tb != t6 {
			t.Fatalf("WaitEpoch(5) = epoch %v, %v", r.tb, r.err)
		}
	case <-time.After(waitLimit):
		t.Fatal("WaitEpoch(5) did not return after epoch 6")
	}

	// Cancelled: the error names both epochs and wraps the cause.
	cctx, cancel := context.WithCancelCause(ctx)
	go func() {
		_, err := w.WaitEpoch(cctx, 9)
		done <- result{nil, err}
	}()
	cause := errors.New("drill aborted")
	cancel(cause)
	select {
	case r := <-done:
		wantErr(t, r.err, cause, "wait for epoch 9", "have 6")
	case <-time.After(waitLimit):
		t.Fatal("WaitEpoch ignored cancellation")
	}

	// Deadline.
	tctx, cancel2 := context.WithTimeout(ctx, time.Millisecond)
	defer cancel2()
	_, err := w.WaitEpoch(tctx, 100)
	wantErr(t, err, context.DeadlineExceeded, "wait for epoch 100 (have 6)")

	// Before Start there is no table.
	w2 := NewWatcher(src, WatcherConfig{})
	c3, cancel3 := context.WithCancel(ctx)
	cancel3()
	_, err = w2.WaitEpoch(c3, 1)
	wantErr(t, err, context.Canceled, "have 0")
}

func TestWatcherStopsWhenChannelCloses(t *testing.T) {
	src := newFakeSource(tableAt(t, 1, "a1"), 1)
	w := NewWatcher(src, WatcherConfig{})
	must(t, w.Start(context.Background()))
	close(src.ch)
	select {
	case <-w.done:
	case <-time.After(waitLimit):
		t.Fatal("watcher goroutine still running after the channel closed")
	}
	w.Close()
	if w.Table().Epoch() != 1 {
		t.Fatal("table lost")
	}
}

func TestWatcherStopsWithContext(t *testing.T) {
	src := newFakeSource(tableAt(t, 1, "a1"), 1)
	w := NewWatcher(src, WatcherConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	must(t, w.Start(ctx))
	cancel()
	select {
	case <-w.done:
	case <-time.After(waitLimit):
		t.Fatal("watcher goroutine still running after its context ended")
	}
	w.Close()
}

// Readers look up keys while the watcher swaps tables; run with -race.
func TestWatcherConcurrentReaders(t *testing.T) {
	src := newFakeSource(tableAt(t, 1, "a1"), 1)
	w := startWatcher(t, src, WatcherConfig{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tb := w.Table()
				if tb.Epoch() < last {
					t.Errorf("epoch went back from %d to %d", last, tb.Epoch())
					return
				}
				last = tb.Epoch()
				if r := tb.Lookup(fmt.Sprintf("u%d", n%1000)); r.Cell == nil {
					t.Error("no owner")
					return
				}
			}
		}()
	}
	for e := uint64(2); e <= 200; e++ {
		send(t, src, w, Event{Table: tableAt(t, e, []string{"a1", "b1"}[e%2]), Revision: int64(e)})
	}
	close(stop)
	wg.Wait()
	if w.Table().Epoch() != 200 {
		t.Fatalf("epoch %d", w.Table().Epoch())
	}
}
