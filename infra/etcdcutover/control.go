package etcdcutover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// Errors.
var (
	// ErrLocked: another runner holds the cutover lock.
	ErrLocked = errors.New("another cutover runner holds the lock")
	// ErrNotFound: no cutover with that ID.
	ErrNotFound = errors.New("no such cutover")
	// ErrBusy: another cutover is in progress (not done, aborted or rolled back).
	ErrBusy = errors.New("another cutover is in progress")
	// ErrExists: a cutover with that ID already exists.
	ErrExists = errors.New("a cutover with that ID already exists")
	// ErrCorruptRecord: a stored record does not decode.
	ErrCorruptRecord = errors.New("cutover record is corrupt")
	// ErrBadConfig: the configuration is invalid.
	ErrBadConfig = errors.New("bad etcdcutover configuration")
)

// Config configures a Control.
type Config struct {
	// Cluster selects the key prefix /cellkit/<cluster>/. Default "default".
	Cluster string
	// Actor is who the audit log says made each map edit. Default
	// "<os user>@<host>".
	Actor string
	// LockTTL is the TTL of the runner's lease, which holds the lock: a
	// runner that dies releases the lock this long after its last renewal.
	// Whole seconds, at least 2s. Default 10s.
	LockTTL time.Duration
	// Logger receives lifecycle events. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Cluster == "" {
		c.Cluster = etcdstore.DefaultCluster
	}
	if err := etcdstore.CheckCluster(c.Cluster); err != nil {
		return fmt.Errorf("etcdcutover: %v: %w", err, ErrBadConfig)
	}
	if c.LockTTL == 0 {
		c.LockTTL = 10 * time.Second
	}
	if c.LockTTL < 2*time.Second {
		return fmt.Errorf("etcdcutover: LockTTL %v: want at least 2s: %w", c.LockTTL, ErrBadConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Keys of the workflow records.
func recordPrefix(k etcdstore.Keys) string          { return k.Prefix + "cutovers/" }
func recordKey(k etcdstore.Keys, id string) string  { return recordPrefix(k) + id }
func commandKey(k etcdstore.Keys, id string) string { return k.Prefix + "commands/" + id }
func lockKey(k etcdstore.Keys) string               { return k.Prefix + "locks/cutover" }

// Control is a runner's hold on the cutover lock, and the failover.Control
// it acts through.
type Control struct {
	cli     *clientv3.Client
	cfg     Config
	keys    etcdstore.Keys
	store   *etcdstore.Store
	acks    *etcdcell.Acks
	session *concurrency.Session
	mu      *concurrency.Mutex
}

var _ failover.Control = (*Control)(nil)

// Acquire takes the cutover lock, waiting while another runner holds it
// until ctx ends. TryAcquire does not wait.
func Acquire(ctx context.Context, cli *clientv3.Client, cfg Config) (*Control, error) {
	return acquire(ctx, cli, cfg, true)
}

// TryAcquire takes the cutover lock if it is free, else fails with ErrLocked.
func TryAcquire(ctx context.Context, cli *clientv3.Client, cfg Config) (*Control, error) {
	return acquire(ctx, cli, cfg, false)
}

func acquire(ctx context.Context, cli *clientv3.Client, cfg Config, wait bool) (*Control, error) {
	if cli == nil {
		return nil, fmt.Errorf("etcdcutover: nil etcd client: %w", ErrBadConfig)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	store, err := etcdstore.New(cli, etcdstore.Config{Cluster: cfg.Cluster, Actor: cfg.Actor})
	if err != nil {
		return nil, err
	}
	acks, err := etcdcell.NewAcks(cli, cfg.Cluster)
	if err != nil {
		return nil, err
	}
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(int((cfg.LockTTL+time.Second-1)/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("etcdcutover: open the runner's lease: %w", err)
	}
	keys := etcdstore.KeysFor(cfg.Cluster)
	mu := concurrency.NewMutex(session, lockKey(keys))
	if wait {
		err = mu.Lock(ctx)
	} else {
		err = mu.TryLock(ctx)
	}
	if err != nil {
		session.Close()
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, fmt.Errorf("etcdcutover: %s: %w", lockKey(keys), ErrLocked)
		}
		return nil, fmt.Errorf("etcdcutover: take %s: %w", lockKey(keys), err)
	}
	return &Control{cli: cli, cfg: cfg, keys: keys, store: store, acks: acks, session: session, mu: mu}, nil
}

// Lost is closed when the runner's lease is gone: the lock may be someone
// else's and no write of this Control can succeed any more.
func (c *Control) Lost() <-chan struct{} { return c.session.Done() }

// Close releases the lock and revokes the lease.
func (c *Control) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.mu.Unlock(ctx)
	return errors.Join(err, c.session.Close())
}

// Abandon stops renewing the lease without releasing the lock, as a runner
// that died would: the lock frees itself when the lease expires. For tests
// and drills.
func (c *Control) Abandon() { c.session.Orphan() }

// Store is the map store the Control edits through.
func (c *Control) Store() *etcdstore.Store { return c.store }

func (c *Control) lockErr(err error) error {
	if errors.Is(err, etcdstore.ErrGuardFailed) {
		return fmt.Errorf("etcdcutover: %v: %w", err, failover.ErrLockLost)
	}
	return transient(err)
}

// transient marks err with failover.ErrUnavailable when etcd could not
// take the request for now: unavailable (no connection, no leader, leader
// changed, server stopped, request timed out) or too many requests. The
// runner repeats such writes; every other error is returned as it is.
func transient(err error) error {
	if err == nil || errors.Is(err, failover.ErrUnavailable) {
		return err
	}
	// The etcd client turns the server's errors into rpctypes.EtcdError
	// (etcdserver: server stopped, leader changed, no leader, request
	// timed out: all codes.Unavailable); connection failures stay gRPC
	// status errors.
	var code codes.Code
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	}
	if code == codes.Unavailable || errors.Is(err, rpctypes.ErrTooManyRequests) {
		return &unavailableError{err}
	}
	return err
}

// unavailableError is an etcd error the runner may retry.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return e.err.Error() }
func (e *unavailableError) Unwrap() error        { return e.err }
func (e *unavailableError) Is(target error) bool { return target == failover.ErrUnavailable }

// Create stores the record of a new cutover, refusing when another
// cutover is in progress or the ID is taken.
func (c *Control) Create(ctx context.Context, s *failover.State) error {
	r := c.Records()
	if active, err := r.Active(ctx); err != nil {
		return err
	} else if active != nil && active.ID != s.ID {
		return fmt.Errorf("etcdcutover: cutover %s is %s (started by %s: %s); finish, abort or roll it back first: %w",
			active.ID, active.Status, active.Who, active.Why, ErrBusy)
	}
	data, err := encode(s)
	if err != nil {
		return err
	}
	key := recordKey(c.keys, s.ID)
	resp, err := c.cli.Txn(ctx).
		If(c.mu.IsOwner(), clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data))).
		Commit()
	if err != nil {
		return fmt.Errorf("etcdcutover: create %s: %w", key, transient(err))
	}
	if !resp.Succeeded {
		if own, err := c.owner(ctx); err != nil {
			return fmt.Errorf("etcdcutover: create %s: check the lock: %w", key, err)
		} else if !own {
			return fmt.Errorf("etcdcutover: create %s: %w", key, failover.ErrLockLost)
		}
		return fmt.Errorf("etcdcutover: %s: %w", s.ID, ErrExists)
	}
	return nil
}

// owner reports whether the lock is still held; an error means etcd did
// not say.
func (c *Control) owner(ctx context.Context) (bool, error) {
	resp, err := c.cli.Txn(ctx).If(c.mu.IsOwner()).Commit()
	if err != nil {
		return false, transient(err)
	}
	return resp.Succeeded, nil
}

// Save stores s, only while the lock is held.
func (c *Control) Save(ctx context.Context, s *failover.State) error {
	data, err := encode(s)
	if err != nil {
		return err
	}
	key := recordKey(c.keys, s.ID)
	resp, err := c.cli.Txn(ctx).If(c.mu.IsOwner()).Then(clientv3.OpPut(key, string(data))).Commit()
	if err != nil {
		return fmt.Errorf("etcdcutover: save %s: %w", key, transient(err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcdcutover: save %s: %w", key, failover.ErrLockLost)
	}
	return nil
}

// ApplyChange implements failover.Control.
func (c *Control) ApplyChange(ctx context.Context, reason string, ch failover.Change, save func(epoch uint64) (*failover.State, error)) (uint64, error) {
	t, err := c.store.UpdateGuarded(ctx, reason, ch.Apply, etcdstore.Guard{
		If: []clientv3.Cmp{c.mu.IsOwner()},
		Then: func(next *router.Table) ([]clientv3.Op, error) {
			s, err := save(next.Epoch())
			if err != nil {
				return nil, err
			}
			data, err := encode(s)
			if err != nil {
				return nil, err
			}
			return []clientv3.Op{clientv3.OpPut(recordKey(c.keys, s.ID), string(data))}, nil
		},
	})
	switch {
	case err == nil:
		return t.Epoch(), nil
	case errors.Is(err, etcdstore.ErrNoChange):
		// Already applied (a runner died after this edit): record it
		// at the current epoch, which is at or above the edit's.
		s, err := save(t.Epoch())
		if err != nil {
			return 0, err
		}
		if err := c.Save(ctx, s); err != nil {
			return 0, err
		}
		return t.Epoch(), nil
	case errors.Is(err, failover.ErrMapChanged):
		return 0, err
	}
	return 0, c.lockErr(err)
}

// WaitAcks implements failover.Control: it waits on the guards' acks,
// reporting who is pending and how long their leases have left.
func (c *Control) WaitAcks(ctx context.Context, epoch uint64, progress func(failover.Barrier)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.acks.WaitAcks(wctx, epoch)
		done <- err
	}()
	// Say at once who is pending and how long their leases have left
	// (an emergency's countdown can be shorter than one tick).
	if progress != nil {
		if b, err := c.barrier(wctx, epoch); err == nil {
			progress(b)
		}
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if progress != nil {
				if b, e := c.barrier(ctx, epoch); e == nil {
					progress(b)
				}
			}
			return err
		case <-tick.C:
			if progress != nil {
				if b, err := c.barrier(wctx, epoch); err == nil {
					progress(b)
				}
			}
		}
	}
}

// barrier reads the acks and, for the pending instances, their leases.
func (c *Control) barrier(ctx context.Context, epoch uint64) (failover.Barrier, error) {
	list, _, err := c.acks.List(ctx)
	if err != nil {
		return failover.Barrier{}, err
	}
	b := failover.Barrier{Epoch: epoch, Expected: len(list)}
	for _, a := range list {
		if a.Epoch >= epoch {
			b.Acked++
			continue
		}
		b.Pending = append(b.Pending, fmt.Sprintf("%s/%s@%d", a.Cell, a.Instance, a.Epoch))
		if a.Lease != 0 {
			// etcd floors the time-to-live to whole seconds: report
			// the bound it expires within.
			if ttl, err := c.cli.TimeToLive(ctx, a.Lease); err == nil && ttl.TTL >= 0 {
				b.LeaseLeft = max(b.LeaseLeft, time.Duration(ttl.TTL+1)*time.Second)
			}
		}
	}
	return b, nil
}

// Table implements failover.Control.
func (c *Control) Table(ctx context.Context) (*router.Table, error) {
	t, _, err := c.store.Load(ctx)
	return t, err
}

// Commands implements failover.Control.
func (c *Control) Commands(ctx context.Context, id string) <-chan failover.CommandMsg {
	return c.Records().commands(ctx, id)
}

// Consumed implements failover.Control: it deletes the handled command
// (if it is still the stored one), only while the lock is held.
func (c *Control) Consumed(ctx context.Context, id string, m failover.CommandMsg) error {
	key := commandKey(c.keys, id)
	resp, err := c.cli.Txn(ctx).
		If(c.mu.IsOwner(), clientv3.Compare(clientv3.ModRevision(key), "=", m.Revision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("etcdcutover: consume %s: %w", key, transient(err))
	}
	if resp.Succeeded {
		return nil
	}
	// Gone already (a repeat of a delete that took effect) or replaced
	// by a newer command: fine while the lock is held.
	if own, err := c.owner(ctx); err != nil {
		return fmt.Errorf("etcdcutover: consume %s: check the lock: %w", key, err)
	} else if !own {
		return fmt.Errorf("etcdcutover: consume %s: %w", key, failover.ErrLockLost)
	}
	return nil
}

// Records returns a reader of this cluster's records.
func (c *Control) Records() *Records { return &Records{cli: c.cli, keys: c.keys} }

// Records reads cutover records and sends commands. It needs no lock.
type Records struct {
	cli  *clientv3.Client
	keys etcdstore.Keys
}

// NewRecords returns a reader of cluster's records.
func NewRecords(cli *clientv3.Client, cluster string) (*Records, error) {
	if cluster == "" {
		cluster = etcdstore.DefaultCluster
	}
	if err := etcdstore.CheckCluster(cluster); err != nil {
		return nil, fmt.Errorf("etcdcutover: %v: %w", err, ErrBadConfig)
	}
	return &Records{cli: cli, keys: etcdstore.KeysFor(cluster)}, nil
}

func encode(s *failover.State) ([]byte, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("etcdcutover: encode cutover %s: %w", s.ID, err)
	}
	return data, nil
}

func decode(key string, data []byte) (*failover.State, error) {
	var s failover.State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("etcdcutover: %s: %v: %w", key, err, ErrCorruptRecord)
	}
	if err := failover.CheckState(&s); err != nil {
		return nil, fmt.Errorf("etcdcutover: %s: %v: %w", key, err, ErrCorruptRecord)
	}
	return &s, nil
}

// Get returns one record and its mod revision.
func (r *Records) Get(ctx context.Context, id string) (*failover.State, int64, error) {
	key := recordKey(r.keys, id)
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("etcdcutover: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("etcdcutover: %s: %w", id, ErrNotFound)
	}
	s, err := decode(key, resp.Kvs[0].Value)
	return s, resp.Kvs[0].ModRevision, err
}

// List returns every record, newest first. Corrupt records are skipped and
// reported in the error (the others are still returned).
func (r *Records) List(ctx context.Context) ([]*failover.State, error) {
	resp, err := r.cli.Get(ctx, recordPrefix(r.keys), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcdcutover: list cutovers: %w", err)
	}
	var out []*failover.State
	var errs []error
	for _, kv := range resp.Kvs {
		s, err := decode(string(kv.Key), kv.Value)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID > out[j].ID
	})
	return out, errors.Join(errs...)
}

// Active returns the cutover in progress (not done, aborted or rolled
// back), or nil. A corrupt record counts as in progress: nobody can tell.
func (r *Records) Active(ctx context.Context) (*failover.State, error) {
	list, err := r.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w (a corrupt record blocks new cutovers; repair or delete it)", err)
	}
	for _, s := range list {
		if !s.Status.Terminal() {
			return s, nil
		}
	}
	return nil, nil
}

// Send stores an operator command for a running cutover; its runner acts on
// it. A command not yet consumed is replaced.
func (r *Records) Send(ctx context.Context, id string, m failover.CommandMsg) error {
	if _, _, err := r.Get(ctx, id); err != nil {
		return err
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := r.cli.Put(ctx, commandKey(r.keys, id), string(data)); err != nil {
		return fmt.Errorf("etcdcutover: send %s to %s: %w", m.Command, id, err)
	}
	return nil
}

// Pending returns the command stored for id and not yet consumed, if any.
func (r *Records) Pending(ctx context.Context, id string) (*failover.CommandMsg, error) {
	resp, err := r.cli.Get(ctx, commandKey(r.keys, id))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	m, ok := decodeCommand(resp.Kvs[0])
	if !ok {
		return &failover.CommandMsg{Command: "corrupt", Revision: resp.Kvs[0].ModRevision}, nil
	}
	return &m, nil
}

func decodeCommand(kv *mvccpb.KeyValue) (failover.CommandMsg, bool) {
	var m failover.CommandMsg
	err := json.Unmarshal(kv.Value, &m)
	m.Revision = kv.ModRevision
	return m, err == nil
}

// commands delivers the stored command, then each new one. After a broken
// watch the stored command is delivered again: a runner handles a command
// it already acted on as a stale one.
func (r *Records) commands(ctx context.Context, id string) <-chan failover.CommandMsg {
	out := make(chan failover.CommandMsg, 8)
	go func() {
		defer close(out)
		r.follow(ctx, commandKey(r.keys, id), func(kv *mvccpb.KeyValue) bool { return send(ctx, out, kv) })
	}()
	return out
}

// follow calls fn with key's value, then with each value put, until fn
// returns false or ctx ends. It reads the key afresh after a broken watch
// (etcd unreachable, compaction, leader loss).
func (r *Records) follow(ctx context.Context, key string, fn func(*mvccpb.KeyValue) bool) {
	for ctx.Err() == nil {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		for _, kv := range resp.Kvs {
			if !fn(kv) {
				return
			}
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range r.cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.PUT && !fn(ev.Kv) {
					cancel()
					return
				}
			}
		}
		cancel()
		pause(ctx, 200*time.Millisecond)
	}
}

func send(ctx context.Context, out chan<- failover.CommandMsg, kv *mvccpb.KeyValue) bool {
	m, ok := decodeCommand(kv)
	if !ok {
		m = failover.CommandMsg{Command: failover.Command("corrupt:" + strings.TrimSpace(string(kv.Value))), Revision: kv.ModRevision}
	}
	select {
	case out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

func pause(ctx context.Context, d time.Duration) {
	_ = clock.Sleep(ctx, clock.Real(), d)
}

// Follow delivers the record of id each time it changes (starting with the
// current one) until ctx ends or the cutover is terminal. Values that do
// not decode are skipped.
func (r *Records) Follow(ctx context.Context, id string) <-chan *failover.State {
	out := make(chan *failover.State, 16)
	key := recordKey(r.keys, id)
	go func() {
		defer close(out)
		r.follow(ctx, key, func(kv *mvccpb.KeyValue) bool {
			s, err := decode(key, kv.Value)
			if err != nil {
				return true
			}
			select {
			case out <- s:
			case <-ctx.Done():
				return false
			}
			return !s.Status.Terminal()
		})
	}()
	return out
}
