package etcdcutover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdstore"
)

// Settings are cluster-wide settings, stored at /cellkit/<cluster>/settings.
type Settings struct {
	// SelfFencing says every guard of the cluster fences itself when it
	// cannot renew its lease (etcdcell's default). With it off, an expired
	// lease does not prove a lost IDC stopped writing, so an emergency
	// failover needs the operator to confirm the IDC is down.
	SelfFencing bool `json:"selfFencing"`
	// Who changed the settings last, when and why (kept with them).
	Who  string    `json:"who,omitempty"`
	When time.Time `json:"when,omitzero"`
	Why  string    `json:"why,omitempty"`
}

// DefaultSettings are the settings of a cluster that stored none.
func DefaultSettings() Settings { return Settings{SelfFencing: true} }

func settingsKey(k etcdstore.Keys) string { return k.Prefix + "settings" }

// LoadSettings reads the cluster's settings (DefaultSettings when none are
// stored). A corrupt document is an error, never the defaults.
func LoadSettings(ctx context.Context, cli *clientv3.Client, cluster string) (Settings, error) {
	if err := etcdstore.CheckCluster(cluster); err != nil {
		return Settings{}, err
	}
	key := settingsKey(etcdstore.KeysFor(cluster))
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return Settings{}, fmt.Errorf("etcdcutover: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return DefaultSettings(), nil
	}
	var s Settings
	dec := json.NewDecoder(bytesReader(resp.Kvs[0].Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Settings{}, fmt.Errorf("etcdcutover: %s is corrupt: %v: %w", key, err, ErrCorruptSettings)
	}
	return s, nil
}

// SaveSettings stores the cluster's settings.
func SaveSettings(ctx context.Context, cli *clientv3.Client, cluster string, s Settings) error {
	if err := etcdstore.CheckCluster(cluster); err != nil {
		return err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	key := settingsKey(etcdstore.KeysFor(cluster))
	if _, err := cli.Put(ctx, key, string(data)); err != nil {
		return fmt.Errorf("etcdcutover: put %s: %w", key, err)
	}
	return nil
}

// Alive returns the guard instances of cells that show signs of life over
// window: an ack that moves to a newer epoch, a lease whose time-to-live
// goes up (a renewal), or a lease that outlives its granted TTL counted
// from the first look. A lost IDC's leases only count down and expire.
// etcd reports time-to-live in whole seconds, so a window of at least the
// lease TTL plus a second is a definitive answer; a shorter one catches
// the renewals of leases of 3s or more. Instances whose lease is gone are
// not listed.
func Alive(ctx context.Context, cli *clientv3.Client, cluster string, cells []string, window time.Duration) ([]etcdcell.Ack, error) {
	acks, err := etcdcell.NewAcks(cli, cluster)
	if err != nil {
		return nil, err
	}
	type seen struct {
		ack     etcdcell.Ack
		granted time.Duration
		ttl     int64 // lowest time-to-live seen, whole seconds
	}
	sample := func() (map[string]seen, error) {
		list, _, err := acks.List(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]seen{}
		for _, a := range list {
			if !slices.Contains(cells, a.Cell) {
				continue
			}
			s := seen{ack: a}
			if a.Lease != 0 {
				r, err := cli.TimeToLive(ctx, a.Lease)
				if err != nil {
					return nil, fmt.Errorf("etcdcutover: lease of %s/%s: %w", a.Cell, a.Instance, err)
				}
				if r.TTL <= 0 {
					continue // expired meanwhile
				}
				s.granted, s.ttl = time.Duration(r.GrantedTTL)*time.Second, r.TTL
			}
			out[a.Cell+"/"+a.Instance] = s
		}
		return out, nil
	}
	start := time.Now()
	first, err := sample()
	if err != nil {
		return nil, err
	}
	alive := map[string]etcdcell.Ack{}
	for {
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		now, err := sample()
		if err != nil {
			return nil, err
		}
		elapsed := time.Since(start)
		for name, s := range now {
			f, ok := first[name]
			switch {
			case !ok: // registered since the first look
				alive[name] = s.ack
			case s.ack.Epoch > f.ack.Epoch:
				alive[name] = s.ack
			case f.granted > 0 && (elapsed > f.granted || s.ttl > f.ttl):
				// Outlived its TTL, or its TTL went up: renewed.
				alive[name] = s.ack
			}
			if ok && s.ttl < f.ttl {
				f.ttl = s.ttl
				first[name] = f
			}
		}
		if elapsed >= window {
			break
		}
	}
	out := make([]etcdcell.Ack, 0, len(alive))
	for _, a := range alive {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y etcdcell.Ack) int {
		return strings.Compare(x.Cell+"/"+x.Instance, y.Cell+"/"+y.Instance)
	})
	return out, nil
}

// ErrCorruptSettings: the stored cluster settings do not decode.
var ErrCorruptSettings = errors.New("cluster settings are corrupt")

// ErrAlive is returned by an emergency failover whose source cells still
// show live guards: they are alive, so a planned cutover is the tool.
var ErrAlive = errors.New("the source cells' guards are alive")

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
