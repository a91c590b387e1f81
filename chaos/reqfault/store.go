package reqfault

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdstore"
)

// revokeTimeout bounds the best-effort revocation of a lease nobody needs
// any more (it would run out on its own anyway).
const revokeTimeout = 5 * time.Second

// Prefix returns the etcd prefix under which cluster's experiments live:
// "/cellkit/<cluster>/chaos/".
func Prefix(cluster string) string { return etcdstore.KeysFor(cluster).Prefix + "chaos/" }

// Key returns the etcd key of one experiment: "/cellkit/<cluster>/chaos/<name>".
func Key(cluster, name string) string { return Prefix(cluster) + name }

func checkStore(cli *clientv3.Client, cluster string) error {
	if cli == nil {
		return fmt.Errorf("reqfault: nil etcd client: %w", ErrBadConfig)
	}
	if err := etcdstore.CheckCluster(cluster); err != nil {
		return fmt.Errorf("reqfault: %w: %w", err, ErrBadConfig)
	}
	return nil
}

// Put stores e under a new etcd lease whose TTL is ExpiresAt - now rounded
// up to a second, so that etcd deletes the key when the experiment expires.
// It validates e against the local clock first (an *ExperimentError) and
// fills in Created when it is zero. Putting a name again replaces the
// experiment, and its old lease is revoked.
func Put(ctx context.Context, cli *clientv3.Client, cluster string, e Experiment) error {
	if err := checkStore(cli, cluster); err != nil {
		return err
	}
	now := time.Now()
	if e.Created.IsZero() {
		e.Created = now.UTC().Round(0)
	}
	if err := e.Validate(now); err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return &ExperimentError{Name: e.Name, Reason: "cannot encode", Err: err}
	}
	if len(data) > MaxDocSize {
		return &ExperimentError{Name: e.Name, Reason: fmt.Sprintf("document of %d bytes (at most %d)", len(data), MaxDocSize)}
	}
	key := Key(cluster, e.Name)
	ttl := int64(math.Ceil(e.ExpiresAt.Sub(now).Seconds()))
	lease, err := cli.Grant(ctx, max(ttl, 1))
	if err != nil {
		return fmt.Errorf("reqfault: put %s: grant a lease of %ds: %w", key, ttl, err)
	}
	resp, err := cli.Put(ctx, key, string(data), clientv3.WithLease(lease.ID), clientv3.WithPrevKV())
	if err != nil {
		// If the put did land after all, revoking deletes it again: the
		// caller was told it failed.
		revoke(ctx, cli, lease.ID)
		return fmt.Errorf("reqfault: put %s: %w", key, err)
	}
	if prev := resp.PrevKv; prev != nil && prev.Lease != 0 && clientv3.LeaseID(prev.Lease) != lease.ID {
		revoke(ctx, cli, clientv3.LeaseID(prev.Lease))
	}
	return nil
}

// Delete removes an experiment and revokes its lease. It reports whether
// there was one to remove.
func Delete(ctx context.Context, cli *clientv3.Client, cluster, name string) (bool, error) {
	if err := checkStore(cli, cluster); err != nil {
		return false, err
	}
	if err := CheckName(name); err != nil {
		return false, err
	}
	key := Key(cluster, name)
	resp, err := cli.Delete(ctx, key, clientv3.WithPrevKV())
	if err != nil {
		return false, fmt.Errorf("reqfault: delete %s: %w", key, err)
	}
	if resp.Deleted == 0 {
		return false, nil
	}
	for _, kv := range resp.PrevKvs {
		if kv.Lease != 0 {
			revoke(ctx, cli, clientv3.LeaseID(kv.Lease))
		}
	}
	return true, nil
}

// List returns cluster's stored experiments by name, including any past
// ExpiresAt whose lease has not run out yet. Values that injectors would
// not use (bad JSON, broken rules, a name that is not the key's, no lease,
// an expiry further ahead than Put allows) are returned as *CorruptError
// in the second result; the third is for etcd failures only.
func List(ctx context.Context, cli *clientv3.Client, cluster string) ([]Experiment, []error, error) {
	if err := checkStore(cli, cluster); err != nil {
		return nil, nil, err
	}
	prefix := Prefix(cluster)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, nil, fmt.Errorf("reqfault: list %s: %w", prefix, err)
	}
	var exps []Experiment
	var bad []error
	now := time.Now()
	for _, kv := range resp.Kvs {
		e, err := decodeKV(prefix, kv, now)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		exps = append(exps, e)
	}
	return exps, bad, nil
}

// decodeKV turns a stored value into an experiment, or a *CorruptError. now
// is the reader's clock: an expiry further ahead than Put allows (MaxTTL,
// plus clockSkew for the writer's clock) was not written by Put.
func decodeKV(prefix string, kv *mvccpb.KeyValue, now time.Time) (Experiment, error) {
	key := string(kv.Key)
	corrupt := func(err error) error { return &CorruptError{Key: key, Revision: kv.ModRevision, Err: err} }
	e, err := Parse(kv.Value)
	if err != nil {
		return Experiment{}, corrupt(err)
	}
	if name := strings.TrimPrefix(key, prefix); e.Name != name {
		return Experiment{}, corrupt(e.bad("name", fmt.Sprintf("does not match the key's last segment %q", name)))
	}
	if kv.Lease == 0 {
		return Experiment{}, corrupt(ErrNoLease)
	}
	if ahead := e.ExpiresAt.Sub(now); ahead > MaxTTL+clockSkew {
		return Experiment{}, corrupt(e.bad("expiresAt", fmt.Sprintf("%s is %s ahead (Put allows at most %s)", e.ExpiresAt.Format(time.RFC3339), ahead.Round(time.Second), MaxTTL)))
	}
	return e, nil
}

// revoke revokes a lease, best effort: an unrevoked lease runs out anyway.
func revoke(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	_, _ = cli.Revoke(rctx, id) // not found (already run out) or unreachable: nothing to do
}
