package reqfault

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/etcdstore"
)

// clockSkew is how far this process's clock may trail the writer's before
// an experiment's ExpiresAt looks more than MaxTTL ahead. An experiment
// further ahead than MaxTTL+clockSkew was not written by Put and is ignored.
const clockSkew = 5 * time.Minute

// Config says who an injector serves and where its experiments live.
type Config struct {
	// Cluster names the etcd key space, /cellkit/<Cluster>/. Required.
	Cluster string
	// Client reads and watches etcd. Required. The injector does not close
	// it; close it after Close.
	Client *clientv3.Client
	// Cell is the ID of the cell this process serves, "" in a router.
	// Experiments that list Cells never match a router.
	Cell string
	// IDC is the IDC this process runs in, "" if it has none. Experiments
	// that list IDCs match only a process in one of them.
	IDC string
	// Clock reads the time for expiry and times the injected latency.
	// Default clock.Real().
	Clock clock.Clock
	// Rand returns uniform numbers in [0, 1) for Fraction and Jitter; it
	// must be safe for concurrent use. Default math/rand/v2's Float64.
	Rand func() float64
	// Logger receives experiments armed and removed, unusable documents and
	// watch errors. Default slog.Default().
	Logger *slog.Logger
	// RetryBackoff is the base pause before re-establishing a failed watch,
	// doubled per failure up to 16x and jittered. It is real time, whatever
	// Clock is. Default 100ms.
	RetryBackoff time.Duration
}

// Validate checks the fields.
func (c Config) Validate() error {
	if c.Client == nil {
		return fmt.Errorf("reqfault: nil etcd client: %w", ErrBadConfig)
	}
	if err := etcdstore.CheckCluster(c.Cluster); err != nil {
		return fmt.Errorf("reqfault: %w: %w", err, ErrBadConfig)
	}
	if c.RetryBackoff < 0 {
		return fmt.Errorf("reqfault: negative retry backoff %s: %w", c.RetryBackoff, ErrBadConfig)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	return c
}

// Injector applies the cluster's experiments to the requests of one process
// (a cell or a router) through HTTP middleware and gRPC interceptors. A nil
// *Injector is valid: its middleware and interceptors pass requests through.
// Its methods are safe for concurrent use.
type Injector struct {
	cfg    Config
	prefix string
	exps   atomic.Pointer[[]Experiment] // by name; the slice is never modified
	hits   sync.Map                     // name -> *atomic.Int64

	known map[string]stored // by key; owned by the watch goroutine after New

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// stored is the last usable version of a key.
type stored struct {
	e   Experiment
	rev int64
}

// New loads the cluster's experiments and keeps them current from an etcd
// watch until Close: the watch resumes after errors from the last revision
// it saw, and reloads everything if that history was compacted. ctx bounds
// the first load only. Unusable documents are logged and ignored; one that
// replaces a usable version leaves that version in force until it expires
// or the key is deleted, and the log says so.
func New(ctx context.Context, cfg Config) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	i := newUnstarted(cfg)
	rev, err := i.load(ctx)
	if err != nil {
		return nil, err
	}
	i.start(ctx, rev)
	return i, nil
}

// newUnstarted returns an injector that has loaded nothing and does not
// watch yet.
func newUnstarted(cfg Config) *Injector {
	i := &Injector{cfg: cfg.withDefaults(), prefix: Prefix(cfg.Cluster), known: map[string]stored{}}
	i.publish()
	return i
}

// start watches from after rev until Close.
func (i *Injector) start(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	i.cancel, i.done = cancel, make(chan struct{})
	go i.watch(wctx, rev)
}

// Close stops the watch and waits for it to end. The middleware keeps
// applying the experiments last seen (each until it expires). Closing again
// is a no-op.
func (i *Injector) Close() {
	if i == nil {
		return
	}
	i.closeOnce.Do(func() {
		i.cancel()
		<-i.done
	})
}

// Active returns the experiments in force now, by name.
func (i *Injector) Active() []Experiment {
	if i == nil {
		return nil
	}
	now := i.cfg.Clock.Now()
	var out []Experiment
	for _, e := range *i.exps.Load() {
		if now.Before(e.ExpiresAt) {
			out = append(out, e.clone())
		}
	}
	return out
}

// Injected returns, per experiment name, how many requests it has done
// something to since New (delayed, failed or aborted).
func (i *Injector) Injected() map[string]int64 {
	if i == nil {
		return nil
	}
	out := map[string]int64{}
	i.hits.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

func (i *Injector) count(name string) {
	c, ok := i.hits.Load(name)
	if !ok {
		c, _ = i.hits.LoadOrStore(name, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(1)
}

// load reads every experiment and makes the set in force match it. It
// returns the store revision of the read.
func (i *Injector) load(ctx context.Context) (int64, error) {
	resp, err := i.cfg.Client.Get(ctx, i.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("reqfault: load %s: %w", i.prefix, err)
	}
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		seen[string(kv.Key)] = true
		i.put(kv)
	}
	for key := range i.known {
		if !seen[key] {
			i.remove(key, resp.Header.Revision)
		}
	}
	i.publish()
	return resp.Header.Revision, nil
}

// put takes in a new version of a key, if it is usable.
func (i *Injector) put(kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	prev, had := i.known[key]
	if had && prev.rev >= kv.ModRevision {
		return // a reload read what the watch already delivered
	}
	e, err := decodeKV(i.prefix, kv, i.cfg.Clock.Now())
	if err != nil {
		if had {
			i.cfg.Logger.Error("reqfault: ignoring an unusable experiment; the previous version stays in force until it expires or is deleted",
				"key", key, "revision", kv.ModRevision, "err", err, "kept_revision", prev.rev, "expires", prev.e.ExpiresAt)
		} else {
			i.cfg.Logger.Error("reqfault: ignoring an unusable experiment", "key", key, "revision", kv.ModRevision, "err", err)
		}
		return
	}
	i.known[key] = stored{e: e, rev: kv.ModRevision}
	i.cfg.Logger.Info("reqfault: experiment armed", "name", e.Name, "revision", kv.ModRevision,
		"effect", e.effect(), "fraction", e.Fraction, "cells", e.Cells, "idcs", e.IDCs, "methods", e.Methods,
		"shadow_only", e.ShadowOnly, "expires", e.ExpiresAt, "who", e.Who, "why", e.Why)
}

func (i *Injector) remove(key string, rev int64) {
	if s, ok := i.known[key]; ok {
		delete(i.known, key)
		i.cfg.Logger.Info("reqfault: experiment removed", "name", s.e.Name, "revision", rev)
	}
}

// publish makes the known experiments the ones the middleware applies.
func (i *Injector) publish() {
	exps := make([]Experiment, 0, len(i.known))
	for _, s := range i.known {
		exps = append(exps, s.e)
	}
	slices.SortFunc(exps, func(a, b Experiment) int { return cmp.Compare(a.Name, b.Name) })
	i.exps.Store(&exps)
}

func (i *Injector) watch(ctx context.Context, rev int64) {
	defer close(i.done)
	next := rev + 1
	for attempt := 0; ctx.Err() == nil; attempt++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := i.cfg.Client.Watch(wctx, i.prefix, clientv3.WithPrefix(), clientv3.WithRev(next))
		compacted := false
		for resp := range wch {
			if resp.CompactRevision != 0 {
				compacted = true
				i.cfg.Logger.Warn("reqfault: watch history compacted; reloading", "from_revision", next, "compacted_to", resp.CompactRevision)
				break
			}
			if err := resp.Err(); err != nil {
				i.cfg.Logger.Warn("reqfault: watch failed; resuming", "from_revision", next, "err", err)
				break
			}
			attempt = 0
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE {
					i.remove(string(ev.Kv.Key), ev.Kv.ModRevision)
				} else {
					i.put(ev.Kv)
				}
				next = ev.Kv.ModRevision + 1
			}
			if len(resp.Events) > 0 {
				i.publish()
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if compacted {
			rev, err := i.load(ctx)
			if err == nil {
				next = rev + 1
				attempt = -1 // resume at once
				continue
			}
			i.cfg.Logger.Warn("reqfault: reload failed; retrying", "err", err)
		}
		if !i.pause(ctx, attempt) {
			return
		}
	}
}

// pause waits a jittered, growing backoff; false if ctx ended first.
func (i *Injector) pause(ctx context.Context, attempt int) bool {
	d := i.cfg.RetryBackoff << min(attempt, 4)
	d = d/2 + rand.N(d/2+1)
	return clock.Sleep(ctx, clock.Real(), d) == nil
}
