package etcdcell

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdstore"
)

// Ack is one guard instance's acknowledgement, as stored in etcd.
type Ack struct {
	Cell     string
	Instance string
	Epoch    uint64 // highest map epoch the instance acknowledged; 0 if its record is unreadable
	At       time.Time
	Lease    clientv3.LeaseID
	Revision int64 // etcd mod revision of the record
}

// Acks reads the acks of one cluster, for the cutover runner's barrier.
type Acks struct {
	cli  *clientv3.Client
	keys etcdstore.Keys
}

// NewAcks returns a reader of cluster's acks over a client the caller owns.
func NewAcks(cli *clientv3.Client, cluster string) (*Acks, error) {
	if cli == nil {
		return nil, fmt.Errorf("etcdcell: nil etcd client: %w", ErrBadConfig)
	}
	if cluster == "" {
		cluster = etcdstore.DefaultCluster
	}
	if err := etcdstore.CheckCluster(cluster); err != nil {
		return nil, fmt.Errorf("etcdcell: %v: %w", err, ErrBadConfig)
	}
	return &Acks{cli: cli, keys: etcdstore.KeysFor(cluster)}, nil
}

// List returns every live instance's ack, sorted by cell then instance, and
// the etcd revision of the read. An instance whose lease expired is gone.
func (a *Acks) List(ctx context.Context) ([]Ack, int64, error) {
	resp, err := a.cli.Get(ctx, a.keys.AcksPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("etcdcell: list acks: %w", err)
	}
	out := make([]Ack, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if ack, ok := a.decode(kv); ok {
			out = append(out, ack)
		}
	}
	sortAcks(out)
	return out, resp.Header.Revision, nil
}

func sortAcks(acks []Ack) {
	slices.SortFunc(acks, func(x, y Ack) int {
		if c := strings.Compare(x.Cell, y.Cell); c != 0 {
			return c
		}
		return strings.Compare(x.Instance, y.Instance)
	})
}

// decode reads one ack record. A record that does not parse counts as epoch
// 0: it is waited for, never skipped.
func (a *Acks) decode(kv *mvccpb.KeyValue) (Ack, bool) {
	cellID, inst, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), a.keys.AcksPrefix()), "/")
	if !ok {
		return Ack{}, false
	}
	ack := Ack{Cell: cellID, Instance: inst, Lease: clientv3.LeaseID(kv.Lease), Revision: kv.ModRevision}
	var v ackValue
	if json.Unmarshal(kv.Value, &v) == nil {
		ack.Epoch, ack.At = v.Epoch, v.At
	}
	return ack, true
}

// PendingError says which instances had not acked an epoch when the wait
// ended. It wraps the context's error.
type PendingError struct {
	Epoch   uint64
	Pending []Ack
	Err     error
}

func (e *PendingError) Error() string {
	names := make([]string, len(e.Pending))
	for i, p := range e.Pending {
		names[i] = fmt.Sprintf("%s/%s@%d", p.Cell, p.Instance, p.Epoch)
	}
	return fmt.Sprintf("etcdcell: %d instance(s) have not acked epoch %d: %s: %v", len(e.Pending), e.Epoch, strings.Join(names, ", "), e.Err)
}

func (e *PendingError) Unwrap() error { return e.Err }

// WaitAcks returns when every registered instance has acked at least epoch
// — the barrier of a cutover stage. Instances whose lease expires drop out
// of the listing and are no longer waited for: they have fenced themselves.
// It returns the acks that satisfied the barrier, or a *PendingError when
// ctx ends first.
func (a *Acks) WaitAcks(ctx context.Context, epoch uint64) ([]Ack, error) {
	var cur map[string]Ack
	for {
		list, rev, err := a.List(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, a.pending(epoch, cur, context.Cause(ctx))
			}
			if err := pauseCtx(ctx, 50*time.Millisecond); err != nil {
				return nil, a.pending(epoch, cur, err)
			}
			continue
		}
		cur = make(map[string]Ack, len(list))
		for _, ack := range list {
			cur[ack.Cell+"/"+ack.Instance] = ack
		}
		if done(cur, epoch) {
			return sorted(cur), nil
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range a.cli.Watch(wctx, a.keys.AcksPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil || resp.Canceled {
				break
			}
			for _, ev := range resp.Events {
				name := strings.TrimPrefix(string(ev.Kv.Key), a.keys.AcksPrefix())
				if ev.Type == mvccpb.DELETE {
					delete(cur, name)
					continue
				}
				if ack, ok := a.decode(ev.Kv); ok {
					cur[name] = ack
				}
			}
			if done(cur, epoch) {
				cancel()
				return sorted(cur), nil
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil, a.pending(epoch, cur, context.Cause(ctx))
		}
		// The watch broke (etcd unreachable, compaction): list again.
	}
}

func done(cur map[string]Ack, epoch uint64) bool {
	for _, ack := range cur {
		if ack.Epoch < epoch {
			return false
		}
	}
	return true
}

func sorted(cur map[string]Ack) []Ack {
	out := slices.Collect(maps.Values(cur))
	sortAcks(out)
	return out
}

func (a *Acks) pending(epoch uint64, cur map[string]Ack, err error) error {
	var p []Ack
	for _, ack := range cur {
		if ack.Epoch < epoch {
			p = append(p, ack)
		}
	}
	sortAcks(p)
	return &PendingError{Epoch: epoch, Pending: p, Err: err}
}

func pauseCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
