package etcdcell

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// ackValue is the JSON stored at acks/<cell>/<instance>.
type ackValue struct {
	Epoch    uint64    `json:"epoch"`
	At       time.Time `json:"at"`
	Instance string    `json:"instance"`
}

// Instance is one registered guard instance: its guard, fed by a map watch,
// kept unfenced by renewing its lease, with its ack and endpoint in etcd.
type Instance struct {
	cli   *clientv3.Client
	cfg   Config
	keys  etcdstore.Keys
	store *etcdstore.Store
	log   *slog.Logger
	fence *cell.Fence
	guard *cell.Guard
	watch *router.Watcher

	// ackMu serializes every write of the ack, so that acks only move
	// forward and always go on the current lease.
	ackMu sync.Mutex
	lease clientv3.LeaseID
	acked uint64

	registrations atomic.Int64

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Register starts a guard instance and returns once it is ready to serve:
// it grants a lease (noting when the request was sent), reads the map with
// a linearizable read, creates the guard and starts watching the map, puts
// its ack and endpoint under the lease — in a transaction that fails if the
// map changed since the read, so that a cutover's barrier cannot miss an
// instance that read an older map — and only then opens the fence.
//
// ctx bounds the registration only; the instance then renews its lease,
// publishes acks and re-registers after losing the lease until Close. The
// etcd client stays the caller's.
func Register(ctx context.Context, cli *clientv3.Client, cfg Config) (*Instance, error) {
	if cli == nil {
		return nil, fmt.Errorf("etcdcell: nil etcd client: %w", ErrBadConfig)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	store, err := etcdstore.New(cli, etcdstore.Config{Cluster: cfg.Cluster, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("etcdcell: %w", err)
	}
	in := &Instance{
		cli:   cli,
		cfg:   cfg,
		keys:  store.Keys(),
		store: store,
		log:   cfg.Logger.With("cluster", cfg.Cluster, "cell", cfg.Cell, "instance", cfg.Instance),
		fence: cell.NewFence(cfg.Clock, cfg.FenceMargin, cfg.Cell, cfg.Instance),
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	if err := in.register(ctx); err != nil {
		in.cancel()
		if in.watch != nil {
			in.watch.Close()
		}
		return nil, err
	}
	in.wg.Add(2)
	go in.keepAlive()
	go in.publishAcks()
	return in, nil
}

// Guard is the instance's guard, for grpcguard and httpguard.
func (in *Instance) Guard() *cell.Guard { return in.guard }

// Ready reports whether the instance admits requests: registered, lease
// renewed in time, not closed.
func (in *Instance) Ready() bool { return in.fence.Check() == nil }

// Lease is the instance's current lease.
func (in *Instance) Lease() clientv3.LeaseID {
	in.ackMu.Lock()
	defer in.ackMu.Unlock()
	return in.lease
}

// Acked is the epoch last acknowledged in etcd.
func (in *Instance) Acked() uint64 {
	in.ackMu.Lock()
	defer in.ackMu.Unlock()
	return in.acked
}

// Registrations counts successful registrations (1 after Register, +1 per
// re-registration after the lease was lost).
func (in *Instance) Registrations() int64 { return in.registrations.Load() }

// preloaded hands the watcher the table register already read, so the
// watch starts exactly at that read.
type preloaded struct {
	*etcdstore.Store
	t    *router.Table
	rev  int64
	used atomic.Bool
}

func (p *preloaded) Load(ctx context.Context) (*router.Table, int64, error) {
	if !p.used.Swap(true) {
		return p.t, p.rev, nil
	}
	return p.Store.Load(ctx)
}

// register does one registration: new lease, linearizable map read,
// conditional put of ack and endpoint, fence opened.
func (in *Instance) register(ctx context.Context) (err error) {
	// A registration slower than this could not open the fence anyway.
	rctx, cancel := context.WithTimeout(ctx, in.cfg.LeaseTTL-in.cfg.FenceMargin)
	defer cancel()
	sent := in.cfg.Clock.Now()
	grant, err := in.cli.Grant(rctx, in.cfg.ttlSeconds())
	if err != nil {
		return fmt.Errorf("etcdcell: %s/%s: grant lease: %w", in.cfg.Cell, in.cfg.Instance, err)
	}
	ttl := time.Duration(grant.TTL) * time.Second
	defer func() {
		if err != nil {
			// Nothing relies on this lease: drop it rather than let it linger.
			in.revoke(grant.ID)
		}
	}()
	endpoint, err := json.Marshal(router.Instance{Cell: in.cfg.Cell, ID: in.cfg.Instance, GRPCAddr: in.cfg.GRPCAddr, HTTPAddr: in.cfg.HTTPAddr})
	if err != nil {
		return fmt.Errorf("etcdcell: encode endpoint: %w", err)
	}
	for {
		t, rev, err := in.store.Load(rctx)
		if err != nil {
			return fmt.Errorf("etcdcell: %s/%s: read map: %w", in.cfg.Cell, in.cfg.Instance, err)
		}
		if in.guard == nil {
			if in.guard, err = cell.NewGuard(in.cfg.guardConfig(), t, in.fence); err != nil {
				return fmt.Errorf("etcdcell: %w", err)
			}
			in.watch = router.NewWatcher(&preloaded{Store: in.store, t: t, rev: rev}, router.WatcherConfig{
				OnUpdate: func(_, t *router.Table) { in.guard.Apply(t) },
				OnError:  func(err error) { in.log.Error("map refused, keeping the last good one", "err", err) },
			})
			if err := in.watch.Start(in.ctx); err != nil {
				return fmt.Errorf("etcdcell: %w", err)
			}
		} else if have := in.guard.Table().SlotCount(); have != t.SlotCount() {
			return fmt.Errorf("etcdcell: %s/%s: the map now has %d slots, the guard %d; restart the instance: %w", in.cfg.Cell, in.cfg.Instance, t.SlotCount(), have, ErrSlotCountChanged)
		}
		in.guard.Apply(t)

		ok, epoch, err := in.putRegistration(rctx, grant.ID, rev, endpoint)
		if err != nil {
			return fmt.Errorf("etcdcell: %s/%s: register ack and endpoint: %w", in.cfg.Cell, in.cfg.Instance, err)
		}
		if !ok {
			in.log.Debug("map changed during registration; reading it again", "read_revision", rev)
			continue
		}
		if err := in.fence.Resume(sent, ttl); err != nil {
			return fmt.Errorf("etcdcell: %s/%s: %w", in.cfg.Cell, in.cfg.Instance, err)
		}
		in.registrations.Add(1)
		in.log.Info("registered", "lease", fmt.Sprintf("%x", grant.ID), "ttl", ttl, "epoch", epoch, "map_epoch", t.Epoch())
		return nil
	}
}

// putRegistration puts the ack (at the guard's Applied epoch) and the
// endpoint under lease, if the map has not changed since revision rev.
func (in *Instance) putRegistration(ctx context.Context, lease clientv3.LeaseID, rev int64, endpoint []byte) (bool, uint64, error) {
	in.ackMu.Lock()
	defer in.ackMu.Unlock()
	epoch := in.guard.Applied()
	ack, err := in.ackJSON(epoch)
	if err != nil {
		return false, 0, err
	}
	resp, err := in.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(in.keys.Map()), "<", rev+1)).
		Then(
			clientv3.OpPut(in.keys.Ack(in.cfg.Cell, in.cfg.Instance), string(ack), clientv3.WithLease(lease)),
			clientv3.OpPut(in.keys.Endpoint(in.cfg.Cell, in.cfg.Instance), string(endpoint), clientv3.WithLease(lease)),
		).Commit()
	if err != nil || !resp.Succeeded {
		return false, 0, err
	}
	in.lease, in.acked = lease, epoch
	if in.cfg.Observer != nil {
		in.cfg.Observer.Acked(in.cfg.Cell, in.cfg.Instance, epoch)
	}
	return true, epoch, nil
}

func (in *Instance) ackJSON(epoch uint64) ([]byte, error) {
	b, err := json.Marshal(ackValue{Epoch: epoch, At: in.cfg.Clock.Now().UTC(), Instance: in.cfg.Instance})
	if err != nil {
		return nil, fmt.Errorf("etcdcell: encode ack: %w", err)
	}
	return b, nil
}

func (in *Instance) revoke(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.LeaseTTL)
	defer cancel()
	if _, err := in.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		in.log.Warn("revoke lease", "lease", fmt.Sprintf("%x", lease), "err", err)
	}
}

// keepAlive renews the lease every TTL/3 with single KeepAliveOnce calls,
// whose send time bounds the lease's life from below. A lost lease trips
// the fence; a fence that tripped (lost lease, or renewals late past its
// deadline: it reads its own clock) sends the loop to re-register.
func (in *Instance) keepAlive() {
	defer in.wg.Done()
	period := in.cfg.LeaseTTL / 3
	wait, failures := period, 0
	for in.pause(wait) {
		if in.fence.Check() != nil {
			if err := in.register(in.ctx); err != nil {
				if in.ctx.Err() != nil {
					return
				}
				failures++
				wait = in.backoff(failures)
				in.log.Warn("fenced; re-registration failed, will retry", "err", err, "retry_in", wait)
				continue
			}
			wait, failures = period, 0
			continue
		}
		lease := in.Lease()
		sent := in.cfg.Clock.Now()
		cctx, cancel := context.WithTimeout(in.ctx, period)
		resp, err := in.cli.KeepAliveOnce(cctx, lease)
		cancel()
		if in.ctx.Err() != nil {
			return
		}
		if in.cfg.Observer != nil {
			in.cfg.Observer.LeaseRenewed(in.cfg.Cell, in.cfg.Instance, err)
		}
		switch {
		case err == nil:
			in.fence.Renewed(sent, time.Duration(resp.TTL)*time.Second)
			wait, failures = period, 0
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			in.fence.Trip(fmt.Sprintf("lease %x not found in etcd", lease))
			in.log.Warn("lease lost; fenced, re-registering", "lease", fmt.Sprintf("%x", lease))
			wait, failures = 0, 0
		default:
			failures++
			wait = min(in.backoff(failures), period)
			deadline, live := in.fence.Deadline()
			in.log.Warn("lease renewal failed", "lease", fmt.Sprintf("%x", lease), "err", err, "fences_at", deadline, "live", live, "retry_in", wait)
		}
	}
}

// publishAcks puts the ack each time the guard's Applied epoch moves.
func (in *Instance) publishAcks() {
	defer in.wg.Done()
	last := in.Acked()
	for {
		e, err := in.guard.NextApplied(in.ctx, last)
		if err != nil {
			return
		}
		for failures := 0; ; {
			err := in.putAck(e)
			if err == nil {
				break
			}
			failures++
			in.log.Debug("ack not published, will retry", "epoch", e, "err", err)
			if !in.pause(in.backoff(failures)) {
				return
			}
		}
		last = e
	}
}

func (in *Instance) putAck(epoch uint64) error {
	in.ackMu.Lock()
	defer in.ackMu.Unlock()
	if in.acked >= epoch {
		return nil // a registration put it already
	}
	ack, err := in.ackJSON(epoch)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(in.ctx, in.cfg.LeaseTTL/3)
	defer cancel()
	// With the lease gone the put fails: an ack never outlives its lease.
	if _, err := in.cli.Put(ctx, in.keys.Ack(in.cfg.Cell, in.cfg.Instance), string(ack), clientv3.WithLease(in.lease)); err != nil {
		return err
	}
	in.acked = epoch
	if in.cfg.Observer != nil {
		in.cfg.Observer.Acked(in.cfg.Cell, in.cfg.Instance, epoch)
	}
	in.log.Debug("acked", "epoch", epoch)
	return nil
}

// pause waits d (at once if d <= 0) and reports whether the instance is
// still open.
func (in *Instance) pause(d time.Duration) bool {
	return clock.Sleep(in.ctx, in.cfg.Clock, d) == nil
}

func (in *Instance) backoff(failures int) time.Duration {
	d := in.cfg.RetryBackoff << min(max(failures-1, 0), 3)
	return d/2 + rand.N(d/2+1)
}

// Close fences the instance, stops its loops and its map watch, waits (at
// most until the lease would run out anyway) for writes it admitted to
// finish, then revokes the lease, which drops its ack and endpoint at once.
// If writes are still running it leaves the lease to expire, as a crashed
// instance's would. Stop serving (e.g. grpc.Server.GracefulStop) first:
// Close cancels the contexts of requests still running.
func (in *Instance) Close() error {
	in.closeOnce.Do(func() {
		deadline, live := in.fence.Deadline()
		in.fence.Trip("instance closed")
		in.cancel()
		in.wg.Wait()
		in.watch.Close()
		if !live {
			deadline = in.cfg.Clock.Now()
		}
		if !in.drain(deadline) {
			in.log.Warn("writes still running at close; leaving the lease to expire", "in_flight", in.guard.InFlight())
			return
		}
		lease := in.Lease()
		ctx, cancel := context.WithTimeout(context.Background(), in.cfg.LeaseTTL)
		defer cancel()
		if _, err := in.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			in.closeErr = fmt.Errorf("etcdcell: %s/%s: revoke lease %x (it expires by itself): %w", in.cfg.Cell, in.cfg.Instance, lease, err)
			return
		}
		in.log.Info("closed", "lease", fmt.Sprintf("%x", lease))
	})
	return in.closeErr
}

// Crash stops the instance the way a killed process stops: the fence
// trips (the contexts of requests still running are cancelled), the loops
// and the map watch stop, and nothing more is written to etcd — the lease
// is not revoked, so the ack and endpoint stay until it expires by itself.
// For fault drills (chaos); Close after Crash does nothing.
func (in *Instance) Crash() {
	in.closeOnce.Do(func() {
		in.fence.Trip("instance crashed")
		in.cancel()
		in.wg.Wait()
		in.watch.Close()
		in.log.Warn("crashed: lease left to expire", "lease", fmt.Sprintf("%x", in.Lease()))
	})
}

// drain waits until no admitted write is running or deadline passes.
func (in *Instance) drain(deadline time.Time) bool {
	for in.guard.InFlight() > 0 {
		left := deadline.Sub(in.cfg.Clock.Now())
		if left <= 0 {
			return false
		}
		t := in.cfg.Clock.NewTimer(min(left, 10*time.Millisecond))
		<-t.C()
	}
	return true
}

// ErrSlotCountChanged says the map's slot count differs from the guard's,
// which cannot be reconciled while running.
var ErrSlotCountChanged = errors.New("map slot count changed")
