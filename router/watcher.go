package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Event is one observation of the stored map, delivered by a Source.
type Event struct {
	Table    *Table // decoded, validated and sealed; nil when Err is set
	Revision int64  // store revision at which the map was observed
	Err      error  // the stored map could not be used (corrupt, invalid); Table is nil
}

// Source is where a Watcher gets tables from; infra/etcdstore implements it.
type Source interface {
	// Load reads the current table with a linearizable read and returns the
	// store revision it was read at.
	Load(ctx context.Context) (*Table, int64, error)
	// Watch streams every change after revision rev, in order, until ctx
	// ends, then closes the channel. It reconnects by itself; when the
	// history it needs was compacted it reloads and sends the current table.
	// Problems that are not about the map itself (etcd unreachable) are
	// retried inside, not sent.
	Watch(ctx context.Context, rev int64) <-chan Event
}

// WatcherConfig tunes a Watcher. The zero value is usable.
type WatcherConfig struct {
	// OnUpdate, if set, is called from the watcher's goroutine, in epoch
	// order, after each new table is installed. It must not block for long.
	OnUpdate func(old, new *Table)
	// OnError, if set, is called from the watcher's goroutine when a stored
	// map is refused (the last good table stays installed).
	OnError func(err error)
}

// Watcher holds the current table in an atomic.Pointer, replaced from a
// Source. A table that fails to decode or validate, or whose epoch is not
// newer than the installed one, never replaces the last good table: the
// watcher keeps serving it and reports the problem through Err and OnError.
type Watcher struct {
	src Source
	cfg WatcherConfig

	cur atomic.Pointer[Table]
	rev atomic.Int64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every install
	lastErr error

	cancel context.CancelFunc
	done   chan struct{}
}

// NewWatcher returns a watcher over src; call Start to load and follow it.
func NewWatcher(src Source, cfg WatcherConfig) *Watcher {
	return &Watcher{src: src, cfg: cfg, changed: make(chan struct{})}
}

// Start loads the current table (so Table never returns nil afterwards) and
// follows changes in a goroutine until ctx ends or Close is called.
func (w *Watcher) Start(ctx context.Context) error {
	t, rev, err := w.src.Load(ctx)
	if err != nil {
		return fmt.Errorf("router: watcher: initial load: %w", err)
	}
	if t == nil {
		return errors.New("router: watcher: initial load returned no table")
	}
	w.install(t, rev)
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	ch := w.src.Watch(ctx, rev)
	go w.run(ctx, ch)
	return nil
}

// Close stops following and waits for the goroutine to end.
func (w *Watcher) Close() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

func (w *Watcher) run(ctx context.Context, ch <-chan Event) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			w.apply(ev)
		}
	}
}

func (w *Watcher) apply(ev Event) {
	if ev.Err == nil && ev.Table == nil {
		ev.Err = errors.New("event has neither a table nor an error")
	}
	if ev.Err != nil {
		w.refuse(fmt.Errorf("router: watcher: map at revision %d refused, keeping epoch %d: %w", ev.Revision, w.Table().Epoch(), ev.Err))
		return
	}
	cur := w.Table()
	switch t := ev.Table; {
	case t.Epoch() > cur.Epoch():
		w.install(t, ev.Revision)
		if w.cfg.OnUpdate != nil {
			w.cfg.OnUpdate(cur, t)
		}
	case t.Epoch() == cur.Epoch() && sameTable(t, cur):
		// A reload after compaction or reconnect: nothing new.
		w.rev.Store(max(w.rev.Load(), ev.Revision))
	default:
		w.refuse(fmt.Errorf("router: watcher: map at revision %d has epoch %d, not newer than installed epoch %d: %w",
			ev.Revision, t.Epoch(), cur.Epoch(), ErrEpochRegressed))
	}
}

func sameTable(a, b *Table) bool {
	ea, err1 := Encode(a)
	eb, err2 := Encode(b)
	return err1 == nil && err2 == nil && bytes.Equal(ea, eb)
}

func (w *Watcher) install(t *Table, rev int64) {
	if !t.Sealed() {
		t = t.Clone().Seal()
	}
	w.cur.Store(t)
	w.rev.Store(rev)
	w.mu.Lock()
	w.lastErr = nil
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

func (w *Watcher) refuse(err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if w.cfg.OnError != nil {
		w.cfg.OnError(err)
	}
}

// Table returns the current table; nil only before Start succeeded.
func (w *Watcher) Table() *Table { return w.cur.Load() }

// Revision is the store revision of the last observation.
func (w *Watcher) Revision() int64 { return w.rev.Load() }

// Err returns why the most recent stored map was refused, or nil if the
// installed table is the newest one seen.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// WaitEpoch blocks until the installed table's epoch is at least epoch and
// returns that table, or returns ctx's error.
func (w *Watcher) WaitEpoch(ctx context.Context, epoch uint64) (*Table, error) {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		if t := w.Table(); t != nil && t.Epoch() >= epoch {
			return t, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			have := uint64(0)
			if t := w.Table(); t != nil {
				have = t.Epoch()
			}
			return nil, fmt.Errorf("router: wait for epoch %d (have %d): %w", epoch, have, context.Cause(ctx))
		}
	}
}
