package etcdcell

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdstore"
	"github.com/cellkit/cellkit/router"
)

// Discovery is router.Discovery over the endpoints/ records that registered
// instances keep under their leases: an instance appears when it registers
// and disappears when it closes or its lease expires.
type Discovery struct {
	cli  *clientv3.Client
	keys etcdstore.Keys
	log  *slog.Logger
	list router.StaticDiscovery

	cancel context.CancelFunc
	done   chan struct{}
}

var _ router.Discovery = (*Discovery)(nil)

// NewDiscovery reads cluster's endpoints (so Instances is complete on
// return) and follows them until Close. logger may be nil (slog.Default()).
func NewDiscovery(ctx context.Context, cli *clientv3.Client, cluster string, logger *slog.Logger) (*Discovery, error) {
	if cli == nil {
		return nil, fmt.Errorf("etcdcell: nil etcd client: %w", ErrBadConfig)
	}
	if cluster == "" {
		cluster = etcdstore.DefaultCluster
	}
	if err := etcdstore.CheckCluster(cluster); err != nil {
		return nil, fmt.Errorf("etcdcell: %v: %w", err, ErrBadConfig)
	}
	if logger == nil {
		logger = slog.Default()
	}
	d := &Discovery{cli: cli, keys: etcdstore.KeysFor(cluster), log: logger.With("cluster", cluster), done: make(chan struct{})}
	cur, rev, err := d.load(ctx)
	if err != nil {
		return nil, err
	}
	d.publish(cur)
	wctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go d.run(wctx, cur, rev)
	return d, nil
}

// Instances implements router.Discovery.
func (d *Discovery) Instances() ([]router.Instance, <-chan struct{}) { return d.list.Instances() }

// Close stops following.
func (d *Discovery) Close() {
	d.cancel()
	<-d.done
}

func (d *Discovery) load(ctx context.Context) (map[string]router.Instance, int64, error) {
	resp, err := d.cli.Get(ctx, d.keys.EndpointsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("etcdcell: list endpoints: %w", err)
	}
	cur := make(map[string]router.Instance, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		d.put(cur, kv)
	}
	return cur, resp.Header.Revision, nil
}

func (d *Discovery) put(cur map[string]router.Instance, kv *mvccpb.KeyValue) {
	name := strings.TrimPrefix(string(kv.Key), d.keys.EndpointsPrefix())
	var in router.Instance
	if err := json.Unmarshal(kv.Value, &in); err != nil || in.Cell == "" || in.ID == "" {
		d.log.Warn("ignoring unreadable endpoint record", "key", string(kv.Key), "err", err)
		delete(cur, name)
		return
	}
	cur[name] = in
}

func (d *Discovery) publish(cur map[string]router.Instance) {
	list := slices.Collect(maps.Values(cur))
	router.SortInstances(list)
	if old, _ := d.list.Instances(); slices.Equal(old, list) {
		return
	}
	d.list.Set(list)
}

func (d *Discovery) run(ctx context.Context, cur map[string]router.Instance, rev int64) {
	defer close(d.done)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range d.cli.Watch(wctx, d.keys.EndpointsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil || resp.Canceled {
				break
			}
			attempt = 0
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE {
					delete(cur, strings.TrimPrefix(string(ev.Kv.Key), d.keys.EndpointsPrefix()))
				} else {
					d.put(cur, ev.Kv)
				}
			}
			rev = resp.Header.Revision
			d.publish(cur)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		// The watch broke (etcd unreachable, compaction): read everything again.
		if pauseCtx(ctx, min(50*time.Millisecond<<min(attempt, 5), 2*time.Second)) != nil {
			return
		}
		fresh, frev, err := d.load(ctx)
		if err != nil {
			continue
		}
		cur, rev = fresh, frev
		d.publish(cur)
	}
}
