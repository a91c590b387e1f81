package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/user"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// Cluster selects the key prefix /cellkit/<cluster>/. Default "default".
	Cluster string
	// Actor is who the audit log says made each change. Default "<os user>@<host>".
	Actor string
	// MaxAttempts bounds compare-and-swap attempts of one Update before it
	// gives up with ErrConflict. Default 32.
	MaxAttempts int
	// Clock stamps audit records and paces retries. Default the real clock.
	Clock clock.Clock
	// RetryBackoff is the base pause between watch reconnects and CAS
	// retries; it grows to 16x with jitter. Default 50ms.
	RetryBackoff time.Duration
	// MaxRequestBytes bounds one write (map document plus audit record), to
	// stay inside etcd's --max-request-bytes. Default 1.5 MiB minus 4 KiB
	// (etcd's default limit is 1.5 MiB).
	MaxRequestBytes int
}

// DefaultActor is "<os user>@<host>".
func DefaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return name + "@" + host
}

func (c *Config) setDefaults() error {
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	if err := CheckCluster(c.Cluster); err != nil {
		return err
	}
	if c.Actor == "" {
		c.Actor = DefaultActor()
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 32
	}
	if c.MaxAttempts < 0 {
		return fmt.Errorf("etcdstore: MaxAttempts %d: %w", c.MaxAttempts, ErrBadConfig)
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 3<<19 - 4<<10
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 50 * time.Millisecond
	}
	return nil
}

// Store is the shard map of one cluster in etcd.
type Store struct {
	cli  *clientv3.Client
	cfg  Config
	keys Keys

	conflicts atomic.Int64
}

var _ router.Source = (*Store)(nil)

// New returns a store over an etcd client the caller owns and closes.
func New(cli *clientv3.Client, cfg Config) (*Store, error) {
	if cli == nil {
		return nil, fmt.Errorf("etcdstore: nil etcd client: %w", ErrBadConfig)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Store{cli: cli, cfg: cfg, keys: KeysFor(cfg.Cluster)}, nil
}

// Keys returns the store's key layout.
func (s *Store) Keys() Keys { return s.keys }

// Cluster is the cluster name.
func (s *Store) Cluster() string { return s.cfg.Cluster }

// Conflicts counts compare-and-swap attempts that lost to a concurrent writer.
func (s *Store) Conflicts() int64 { return s.conflicts.Load() }

// LoadRaw returns the stored map document as is, with its mod revision.
func (s *Store) LoadRaw(ctx context.Context) ([]byte, int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.Map())
	if err != nil {
		return nil, 0, fmt.Errorf("etcdstore: get %s: %w", s.keys.Map(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, ErrNoMap
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// Load reads the current table with a linearizable read. It returns the
// store revision of the read (use it to start a Watch). A stored map that does
// not decode or validate is a *CorruptMapError.
func (s *Store) Load(ctx context.Context) (*router.Table, int64, error) {
	t, _, rev, err := s.load(ctx)
	return t, rev, err
}

// load also returns the map key's mod revision, for compare-and-swap.
func (s *Store) load(ctx context.Context) (t *router.Table, modRev, rev int64, err error) {
	resp, err := s.cli.Get(ctx, s.keys.Map())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("etcdstore: get %s: %w", s.keys.Map(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, resp.Header.Revision, ErrNoMap
	}
	kv := resp.Kvs[0]
	t, err = router.Decode(kv.Value)
	if err != nil {
		return nil, kv.ModRevision, resp.Header.Revision, &CorruptMapError{Key: s.keys.Map(), Revision: kv.ModRevision, Err: err}
	}
	return t, kv.ModRevision, resp.Header.Revision, nil
}

// AuditRecord is the audit log entry of one change to the map.
type AuditRecord struct {
	Epoch     uint64      `json:"epoch"`
	PrevEpoch uint64      `json:"prevEpoch"`
	Revision  int64       `json:"revision,omitempty"` // etcd revision of the change (from the key, not stored)
	Who       string      `json:"who"`
	When      time.Time   `json:"when"`
	Why       string      `json:"why"`
	Op        string      `json:"op"` // "update", "create" or "replace"
	Diff      router.Diff `json:"diff"`
}

// Update applies fn to a private copy of the current table and writes the
// result with compare-and-swap on the map key's mod revision, with the epoch
// one higher and the audit record in the same transaction. When another
// writer wins the race it reloads and calls fn again (fn must be a pure
// function of the table it is given). The result is validated before it is
// written. If fn changes nothing, Update returns the current table and
// ErrNoChange.
func (s *Store) Update(ctx context.Context, reason string, fn func(*router.Table) error) (*router.Table, error) {
	return s.UpdateGuarded(ctx, reason, fn, Guard{})
}

// Guard adds conditions and writes to the transaction of an update: how a
// cutover runner makes its map edits conditional on still holding the
// cutover lock and stores its workflow record atomically with them.
type Guard struct {
	// If are extra conditions of the transaction. When one fails the update
	// fails with ErrGuardFailed (it is not retried).
	If []clientv3.Cmp
	// Then returns extra writes for the transaction, given the table about
	// to be written.
	Then func(next *router.Table) ([]clientv3.Op, error)
}

// UpdateGuarded is Update with g's conditions and writes in the same
// transaction as the map.
func (s *Store) UpdateGuarded(ctx context.Context, reason string, fn func(*router.Table) error, g Guard) (*router.Table, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, ErrNoReason
	}
	return s.retry(ctx, "update", func() (*router.Table, bool, error) {
		cur, modRev, _, err := s.load(ctx)
		if err != nil {
			return nil, false, err
		}
		next := cur.Clone()
		if err := fn(next); err != nil {
			return nil, false, err
		}
		next.SetEpoch(cur.Epoch() + 1)
		if err := next.Validate(); err != nil {
			return nil, false, fmt.Errorf("etcdstore: change refused, the map would be invalid: %w", err)
		}
		diff := router.Compare(cur, next)
		if diff.Empty() {
			return cur, false, ErrNoChange
		}
		var extra []clientv3.Op
		if g.Then != nil {
			if extra, err = g.Then(next); err != nil {
				return nil, false, err
			}
		}
		conds := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.Map()), "=", modRev)}, g.If...)
		ok, err := s.write(ctx, "update", reason, next, diff, conds, extra)
		if err != nil {
			return nil, false, err
		}
		if !ok && len(g.If) > 0 {
			if held, err := s.cli.Txn(ctx).If(g.If...).Commit(); err == nil && !held.Succeeded {
				return nil, false, fmt.Errorf("etcdstore: update to epoch %d: %w", next.Epoch(), ErrGuardFailed)
			}
		}
		return next, ok, nil
	})
}

// retry runs try until it applies (ok), fails (err, returned with try's
// table), or loses MaxAttempts compare-and-swap races (ErrConflict).
func (s *Store) retry(ctx context.Context, op string, try func() (*router.Table, bool, error)) (*router.Table, error) {
	for attempt := 1; ; attempt++ {
		t, ok, err := try()
		if err != nil {
			return t, err
		}
		if ok {
			return t.Seal(), nil
		}
		s.conflicts.Add(1)
		if attempt >= s.cfg.MaxAttempts {
			return nil, fmt.Errorf("etcdstore: %s after %d attempts: %w", op, attempt, ErrConflict)
		}
		if err := s.pause(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

// Create writes t as the first map of the cluster. Its epoch is one more than
// the newest audit record (1 on a fresh cluster), so watchers that saw an
// older map never see the epoch go backwards. It fails with ErrMapExists if
// a map is already there.
func (s *Store) Create(ctx context.Context, reason string, t *router.Table) (*router.Table, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, ErrNoReason
	}
	last, err := s.lastAuditEpoch(ctx)
	if err != nil {
		return nil, err
	}
	next := t.Clone()
	next.SetEpoch(last + 1)
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("etcdstore: create refused: %w", err)
	}
	ok, err := s.write(ctx, "create", reason, next, router.Compare(nil, next), []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.keys.Map()), "=", 0)}, nil)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("etcdstore: create %s: %w", s.keys.Map(), ErrMapExists)
	}
	return next.Seal(), nil
}

// Replace overwrites whatever map is stored (even a corrupt one) with t. The
// new epoch is one more than the highest epoch known from the stored map,
// any epoch field a corrupt document still carries, and the audit log. It
// is how an operator repairs a map someone broke by hand.
func (s *Store) Replace(ctx context.Context, reason string, t *router.Table) (*router.Table, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, ErrNoReason
	}
	return s.retry(ctx, "replace", func() (*router.Table, bool, error) {
		resp, err := s.cli.Get(ctx, s.keys.Map())
		if err != nil {
			return nil, false, fmt.Errorf("etcdstore: get %s: %w", s.keys.Map(), err)
		}
		high, err := s.lastAuditEpoch(ctx)
		if err != nil {
			return nil, false, err
		}
		var prev *router.Table
		cmp := clientv3.Compare(clientv3.CreateRevision(s.keys.Map()), "=", 0)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			cmp = clientv3.Compare(clientv3.ModRevision(s.keys.Map()), "=", kv.ModRevision)
			if p, err := router.Decode(kv.Value); err == nil {
				prev = p
			}
			var probe struct {
				Epoch uint64 `json:"epoch"`
			}
			if json.Unmarshal(kv.Value, &probe) == nil {
				high = max(high, probe.Epoch)
			}
		}
		next := t.Clone()
		next.SetEpoch(high + 1)
		if err := next.Validate(); err != nil {
			return nil, false, fmt.Errorf("etcdstore: replace refused: %w", err)
		}
		ok, err := s.write(ctx, "replace", reason, next, router.Compare(prev, next), []clientv3.Cmp{cmp}, nil)
		if err != nil {
			return nil, false, err
		}
		return next, ok, nil
	})
}

// write puts the map and its audit record (and any extra writes) in one
// transaction guarded by conds and by the audit key being new. It reports
// whether the transaction applied.
func (s *Store) write(ctx context.Context, op, reason string, next *router.Table, diff router.Diff, conds []clientv3.Cmp, extra []clientv3.Op) (bool, error) {
	data, err := router.Encode(next)
	if err != nil {
		return false, err
	}
	rec := AuditRecord{
		Epoch:     next.Epoch(),
		PrevEpoch: diff.FromEpoch,
		Who:       s.cfg.Actor,
		When:      s.cfg.Clock.Now().UTC(),
		Why:       reason,
		Op:        op,
		Diff:      diff,
	}
	recData, err := json.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("etcdstore: encode audit record: %w", err)
	}
	if n := len(data) + len(recData); n > s.cfg.MaxRequestBytes {
		return false, fmt.Errorf("etcdstore: write epoch %d: map document (%d bytes) and audit record (%d bytes) exceed %d bytes; the slot ownership is too fragmented (%d owner ranges): %w",
			next.Epoch(), len(data), len(recData), s.cfg.MaxRequestBytes, len(next.OwnerRanges()), ErrTooLarge)
	}
	auditKey := s.keys.Audit(next.Epoch())
	resp, err := s.cli.Txn(ctx).
		If(append(slices.Clone(conds), clientv3.Compare(clientv3.CreateRevision(auditKey), "=", 0))...).
		Then(append([]clientv3.Op{clientv3.OpPut(s.keys.Map(), string(data)), clientv3.OpPut(auditKey, string(recData))}, extra...)...).
		Else(clientv3.OpGet(auditKey, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return false, fmt.Errorf("etcdstore: write epoch %d: %w", next.Epoch(), err)
	}
	if resp.Succeeded {
		return true, nil
	}
	if r := resp.Responses[0].GetResponseRange(); r != nil && r.Count > 0 {
		// The map may have lost the race too; only a stable map revision
		// proves the audit key itself is the obstacle.
		if still, _ := s.cli.Txn(ctx).If(conds...).Commit(); still != nil && still.Succeeded {
			return false, fmt.Errorf("etcdstore: write epoch %d (%s): %w", next.Epoch(), auditKey, ErrAuditExists)
		}
	}
	return false, nil
}

func (s *Store) lastAuditEpoch(ctx context.Context) (uint64, error) {
	resp, err := s.cli.Get(ctx, s.keys.AuditPrefix(), clientv3.WithLastKey()...)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: read audit log: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return parseAuditKey(s.keys, string(resp.Kvs[0].Key))
}

func parseAuditKey(k Keys, key string) (uint64, error) {
	var e uint64
	if _, err := fmt.Sscanf(strings.TrimPrefix(key, k.AuditPrefix()), "%d", &e); err != nil {
		return 0, fmt.Errorf("etcdstore: audit key %q: %w", key, ErrAuditCorrupt)
	}
	return e, nil
}

// History returns up to limit audit records, newest first (limit 0: all).
func (s *Store) History(ctx context.Context, limit int) ([]AuditRecord, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(ctx, s.keys.AuditPrefix(), opts...)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read audit log: %w", err)
	}
	out := make([]AuditRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r AuditRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("etcdstore: audit record %s: %v: %w", kv.Key, err, ErrAuditCorrupt)
		}
		r.Revision = kv.CreateRevision
		out = append(out, r)
	}
	return out, nil
}

// Watch implements router.Source: every change of the map key after rev, in
// order. It re-establishes the etcd watch after errors (and across an etcd
// restart) from the last revision it delivered; if that history was
// compacted it reloads and sends the current table. A value that does not
// decode or validate, or a deleted map key, is sent as an Event with Err.
func (s *Store) Watch(ctx context.Context, rev int64) <-chan router.Event {
	out := make(chan router.Event)
	go s.watch(ctx, rev, out)
	return out
}

func (s *Store) watch(ctx context.Context, rev int64, out chan<- router.Event) {
	defer close(out)
	send := func(ev router.Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	next := rev + 1
	for attempt := 0; ctx.Err() == nil; attempt++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.keys.Map(), clientv3.WithRev(next))
		compacted := false
		for resp := range wch {
			if resp.CompactRevision != 0 {
				compacted = true
				break
			}
			if resp.Err() != nil {
				break
			}
			attempt = 0
			for _, ev := range resp.Events {
				r := ev.Kv.ModRevision
				var e router.Event
				switch {
				case ev.Type == mvccpb.DELETE:
					e = router.Event{Revision: r, Err: fmt.Errorf("etcdstore: %s at revision %d: %w", s.keys.Map(), r, ErrMapDeleted)}
				default:
					t, err := router.Decode(ev.Kv.Value)
					if err != nil {
						e = router.Event{Revision: r, Err: &CorruptMapError{Key: s.keys.Map(), Revision: r, Err: err}}
					} else {
						e = router.Event{Table: t, Revision: r}
					}
				}
				if !send(e) {
					cancel()
					return
				}
				next = r + 1
			}
		}
		cancel()
		if compacted {
			t, _, hdr, err := s.load(ctx)
			switch {
			case err == nil:
				if !send(router.Event{Table: t, Revision: hdr}) {
					return
				}
				next = hdr + 1
				continue
			case errors.Is(err, ErrCorruptMap) || errors.Is(err, ErrNoMap):
				if !send(router.Event{Revision: hdr, Err: err}) {
					return
				}
				next = hdr + 1
				continue
			}
			// etcd unavailable: retry the reload after a pause.
		}
		if s.pause(ctx, attempt) != nil {
			return
		}
	}
}

// pause waits a jittered, growing backoff, or until ctx ends.
func (s *Store) pause(ctx context.Context, attempt int) error {
	d := s.cfg.RetryBackoff << min(attempt, 4)
	d = d/2 + rand.N(d/2+1)
	return clock.Sleep(ctx, s.cfg.Clock, d)
}
