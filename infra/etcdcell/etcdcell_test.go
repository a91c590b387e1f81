package etcdcell_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/guardmetrics"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/infra/etcdcell"
	"github.com/cellkit/cellkit/infra/etcdembed/etcdtest"
	"github.com/cellkit/cellkit/router"
)

var _ etcdcell.Observer = (*guardmetrics.Metrics)(nil)

func TestRegisterAckAdvanceAndClose(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := dial(t, srv.Endpoints()...)
	st := createMap(t, cli)
	acks, err := etcdcell.NewAcks(cli, cluster)
	must(t, err)

	in := register(t, cli, "a1", "a1-0", func(c *etcdcell.Config) { c.GRPCAddr, c.HTTPAddr = "127.0.0.1:7001", "127.0.0.1:7002" })
	if !in.Ready() || in.Guard().Table().Epoch() != 1 {
		t.Fatalf("ready %v, guard epoch %d", in.Ready(), in.Guard().Table().Epoch())
	}
	list, _, err := acks.List(ctxT(t))
	must(t, err)
	if len(list) != 1 || list[0].Cell != "a1" || list[0].Instance != "a1-0" || list[0].Epoch != 1 || list[0].Lease != in.Lease() || list[0].At.IsZero() {
		t.Fatalf("acks %+v", list)
	}
	resp, err := cli.Get(ctxT(t), endpointKey("a1", "a1-0"))
	must(t, err)
	var ep router.Instance
	if len(resp.Kvs) != 1 || json.Unmarshal(resp.Kvs[0].Value, &ep) != nil || resp.Kvs[0].Lease != int64(in.Lease()) {
		t.Fatalf("endpoint record %v", resp.Kvs)
	}
	if ep != (router.Instance{Cell: "a1", ID: "a1-0", GRPCAddr: "127.0.0.1:7001", HTTPAddr: "127.0.0.1:7002"}) {
		t.Fatalf("endpoint %+v", ep)
	}

	// A map change reaches the guard through the watch, and the ack follows.
	tb := update(t, st, "whitelist", func(tb *router.Table) error { return tb.SetWhitelist("vip", "b1") })
	got, err := acks.WaitAcks(ctxT(t), tb.Epoch())
	must(t, err)
	if len(got) != 1 || got[0].Epoch != 2 || in.Acked() != 2 || in.Guard().Table().Epoch() != 2 {
		t.Fatalf("after epoch 2: acks %+v, acked %d", got, in.Acked())
	}

	// Close drops ack and endpoint at once (it revokes the lease).
	must(t, in.Close())
	if exists(t, cli, ackKey("a1", "a1-0")) || exists(t, cli, endpointKey("a1", "a1-0")) {
		t.Fatal("ack or endpoint left after Close")
	}
	if in.Ready() {
		t.Fatal("closed instance still ready")
	}
	if _, err := in.Guard().Admit(ctxT(t), keyIn(5), cell.Write, 0); !errors.Is(err, cell.ErrFenced) {
		t.Fatalf("admit after close: %v, want FENCED", err)
	}
}

// TestBarrierHoldsAckForInFlightWrite is the barrier property end to end: a
// write admitted before a freeze holds back the instance's ack of the
// freeze's epoch in etcd until it ends.
func TestBarrierHoldsAckForInFlightWrite(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := dial(t, srv.Endpoints()...)
	st := createMap(t, cli)
	acks, err := etcdcell.NewAcks(cli, cluster)
	must(t, err)
	var log admission.Log
	a1 := serveCell(t, register(t, cli, "a1", "a1-0", nil), &log)
	b1 := register(t, cli, "b1", "b1-0", nil)
	key := keyIn(5)

	done := make(chan error, 1)
	ctx := ctxT(t)
	go func() {
		_, err := a1.credit(ctx, key, "hold")
		done <- err
	}()
	<-a1.held
	if a1.inst.Guard().InFlight() != 1 {
		t.Fatalf("in flight %d, want the held write", a1.inst.Guard().InFlight())
	}

	frozen := update(t, st, "freeze slot 5", func(tb *router.Table) error {
		return tb.Freeze(router.SlotRange{First: 5, Last: 5}, "c1")
	})
	eventually(t, "a1 to apply the freeze", func() bool { return a1.inst.Guard().Table().Epoch() == frozen.Epoch() })
	if _, err := a1.credit(ctxT(t), key, "r2"); !errors.Is(wire.FromGRPC(err), cell.ErrFrozen) {
		t.Fatalf("write after the freeze: %v, want FROZEN", err)
	}
	// b1 has nothing in flight: it acks the freeze. a1 must not.
	short, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	_, err = acks.WaitAcks(short, frozen.Epoch())
	var pe *etcdcell.PendingError
	if !errors.As(err, &pe) || len(pe.Pending) != 1 || pe.Pending[0].Cell != "a1" || pe.Pending[0].Epoch != 1 {
		t.Fatalf("barrier with a write in flight: %v, want a1-0 pending at epoch 1", err)
	}
	if b1.Acked() != frozen.Epoch() {
		t.Fatalf("b1 acked %d, want %d", b1.Acked(), frozen.Epoch())
	}
	if a1.inst.Guard().Applied() != 1 || a1.inst.Acked() != 1 {
		t.Fatalf("a1 applied %d acked %d while the write runs, want 1", a1.inst.Guard().Applied(), a1.inst.Acked())
	}

	a1.Release()
	must(t, <-done)
	got, err := acks.WaitAcks(ctxT(t), frozen.Epoch())
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("acks %+v, want a1-0 and b1-0", got)
	}
	rs := log.Records()
	if len(rs) != 1 || rs[0].Epoch != 1 || rs[0].End.IsZero() {
		t.Fatalf("records %v", rs)
	}
}

func TestReregistersAfterLeaseLoss(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := dial(t, srv.Endpoints()...)
	createMap(t, cli)
	in := register(t, cli, "a1", "a1-0", nil)
	old := in.Lease()

	// Someone revokes the lease: the ack and endpoint vanish, the next
	// renewal finds no lease, the instance fences and registers again.
	_, err := cli.Revoke(ctxT(t), old)
	must(t, err)
	eventually(t, "a new registration", func() bool { return in.Registrations() == 2 && in.Ready() })
	if in.Lease() == old {
		t.Fatal("re-registered on the revoked lease")
	}
	resp, err := cli.Get(ctxT(t), ackKey("a1", "a1-0"))
	must(t, err)
	if len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != in.Lease() {
		t.Fatalf("ack after re-registration: %v", resp.Kvs)
	}
	if !exists(t, cli, endpointKey("a1", "a1-0")) {
		t.Fatal("endpoint not re-registered")
	}
}

func TestDiscovery(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := dial(t, srv.Endpoints()...)
	createMap(t, cli)
	d, err := etcdcell.NewDiscovery(ctxT(t), cli, cluster, logger(t))
	must(t, err)
	defer d.Close()
	var _ router.Discovery = d

	waitList := func(want ...string) {
		t.Helper()
		deadline := time.After(testTimeout)
		for {
			list, changed := d.Instances()
			var ids []string
			for _, in := range list {
				ids = append(ids, in.Cell+"/"+in.ID)
			}
			if equal(ids, want) {
				return
			}
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("instances %v, want %v", ids, want)
			}
		}
	}
	waitList()
	b := register(t, cli, "b1", "b1-0", func(c *etcdcell.Config) { c.GRPCAddr = "127.0.0.1:9001" })
	a := register(t, cli, "a1", "a1-0", func(c *etcdcell.Config) { c.GRPCAddr = "127.0.0.1:9002" })
	waitList("a1/a1-0", "b1/b1-0")
	if list, _ := d.Instances(); list[0].GRPCAddr != "127.0.0.1:9002" || list[1].GRPCAddr != "127.0.0.1:9001" {
		t.Fatalf("addresses %+v", list)
	}
	must(t, a.Close())
	waitList("b1/b1-0")
	must(t, b.Close())
	waitList()
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConfig(t *testing.T) {
	for name, cfg := range map[string]etcdcell.Config{
		"no cell":         {Instance: "i"},
		"no instance":     {Cell: "a1"},
		"short lease":     {Cell: "a1", Instance: "i", LeaseTTL: 500 * time.Millisecond},
		"margin too wide": {Cell: "a1", Instance: "i", LeaseTTL: 2 * time.Second, FenceMargin: 2 * time.Second},
		"bad cluster":     {Cell: "a1", Instance: "i", Cluster: "Bad_Name"},
	} {
		if err := cfg.Validate(); !errors.Is(err, etcdcell.ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", name, err)
		}
	}
	if err := etcdcell.DefaultConfig("a1", "pod-0").Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	if err := etcdcell.Local("a1", "pod-0").Validate(); err != nil {
		t.Errorf("local config: %v", err)
	}
}
