package etcdcutover_test

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdcutover"
	"github.com/cellkit/cellkit/router"
)

// TestEmergencyFailover loses IDC-A: its guards are cut off from etcd (a
// proxy between them and etcd stops) while they keep serving whoever
// reaches them, and clients keep writing. The failover freezes IDC-A's
// slots, marks its cells fenced, waits until their leases expired, and
// flips to IDC-B. The flip must come after every IDC-A guard's fence time,
// no IDC-A guard may admit a write after its fence time (from the guards'
// own admission records), and the test reports the time from the failure
// to IDC-A's users being served by IDC-B.
func TestEmergencyFailover(t *testing.T) {
	proxies := map[string]*toxiproxy.Proxy{}
	var pmu sync.Mutex
	l := newLab(t, fourCells(t), labConfig{
		etcd: func(cellID, upstream string) string {
			if !strings.HasPrefix(cellID, "a") {
				return upstream
			}
			u, err := url.Parse(upstream)
			must(t, err)
			api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
			p := toxiproxy.NewProxy(api, "etcd-"+cellID, "127.0.0.1:0", u.Host)
			must(t, p.Start())
			t.Cleanup(p.Stop)
			pmu.Lock()
			proxies[cellID] = p
			pmu.Unlock()
			return "http://" + p.Listen
		},
	})
	// IDC-A's users, hammered by the SDK and, directly at every cell, by
	// rogue writers (clients that still reach IDC-A).
	var aUsers []string
	for _, u := range users(400) {
		if l.orig.Owner(u).IDC == "IDC-A" {
			aUsers = append(aUsers, u)
		}
	}
	ld := l.startLoad(8, aUsers)
	hot := aUsers[:8]
	ld.hot.Store(&hot)
	l.startRogues(ld, 4)
	waitPaid(t, ld, 100)

	// Healthy IDC-A: the liveness check sees its guards renew and refuses.
	alive, err := etcdcutover.Alive(ctxT(t), l.cli, cluster, []string{"a1", "a2"}, 3*time.Second)
	must(t, err)
	if len(alive) != 2 {
		t.Fatalf("live IDC-A guards seen: %v, want both", alive)
	}

	// IDC-A loses etcd. A check shorter than the lease TTL leaves the
	// barrier to wait out the leases, with its countdown.
	failed := time.Now()
	for _, p := range proxies {
		p.Stop()
	}
	alive, err = etcdcutover.Alive(ctxT(t), l.cli, cluster, []string{"a1", "a2"}, time.Second)
	must(t, err)
	if len(alive) != 0 {
		t.Fatalf("cut-off IDC-A guards still look alive: %v", alive)
	}
	detected := time.Now()

	tb, _, err := l.store.Load(ctxT(t))
	must(t, err)
	stages, err := failover.ParseStages("1")
	must(t, err)
	p, err := failover.NewPlan(tb, failover.Request{From: failover.Endpoints{IDCs: []string{"IDC-A"}}, To: failover.Endpoints{IDCs: []string{"IDC-B"}}, Stages: stages})
	must(t, err)
	ctl := l.acquire(5 * time.Second)
	defer ctl.Close()
	st := failover.NewState(failover.NewID("failover", time.Now()), "tester", "IDC-A lost", p,
		failover.Options{Emergency: true, Auto: true, Bake: 200 * time.Millisecond, BarrierTimeout: 20 * time.Second}, time.Now())
	must(t, ctl.Create(ctxT(t), st))
	var countdown []string
	var cmu sync.Mutex
	r := failover.Runner{Control: ctl, GateInterval: 50 * time.Millisecond, OnProgress: func(pr failover.Progress) {
		if pr.Barrier != nil && len(pr.Barrier.Pending) > 0 {
			cmu.Lock()
			countdown = append(countdown, pr.Barrier.LeaseLeft.String()+" "+strings.Join(pr.Barrier.Pending, ","))
			cmu.Unlock()
		}
	}}
	final, err := r.Run(ctxT(t), st, failover.Event{Kind: failover.EvStart, At: time.Now()})
	must(t, err)
	if final.Status != failover.StatusDone {
		t.Fatalf("failover ended %s: %s", final.Status, final.Reason)
	}
	flipped := final.Stages[0].FlippedAt

	// IDC-A's users are served by IDC-B.
	var servedAt time.Time
	for servedAt.IsZero() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		e, err := l.pay(ctx, aUsers[0], "after")
		cancel()
		if err == nil && strings.HasPrefix(e.Cell, "b") {
			servedAt = time.Now()
		}
		if time.Since(failed) > testTimeout {
			t.Fatalf("IDC-A's users never served by IDC-B: %v", err)
		}
	}
	// Let the rogues try IDC-A some more after the flip.
	sent := ld.rogue.Load()
	for deadline := time.Now().Add(testTimeout); ld.rogue.Load() < sent+40; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("rogue writers stalled")
		}
	}
	ld.Stop()

	after := l.checkNothingFrozen()
	for _, c := range []string{"a1", "a2"} {
		if cl, _ := after.Cell(c); cl.State != router.StateFenced {
			t.Errorf("cell %s is %s after the failover, want fenced", c, cl.State)
		}
		if n := len(after.SlotsOf(c)); n != 0 {
			t.Errorf("cell %s still owns %d slots", c, n)
		}
	}
	for _, id := range []string{"a1", "a2"} {
		fence := l.cells[id].inst.Guard().Fence()
		// After it fenced, Deadline still says when it did.
		deadline, live := fence.Deadline()
		if live || fence.Check() == nil {
			t.Fatalf("%s: still admitting after losing etcd", id)
		}
		if !flipped.After(deadline) {
			t.Errorf("%s: flipped at %v, before its fence time %v", id, flipped, deadline)
		}
		var last time.Time
		for _, rec := range l.log.Records() {
			if rec.Cell == id && rec.Start.After(last) {
				last = rec.Start
			}
			if rec.Cell == id && !rec.Start.Before(deadline) {
				t.Errorf("%s admitted %v at or after its fence time %v", id, rec, deadline)
			}
		}
		t.Logf("%s: fenced at +%v after the failure; last admission +%v", id, deadline.Sub(failed).Round(time.Millisecond), last.Sub(failed).Round(time.Millisecond))
	}
	l.checkSingleWriter()
	cmu.Lock()
	if len(countdown) == 0 {
		t.Error("the barrier reported no lease countdown of the lost guards")
	} else {
		t.Logf("barrier countdown: first %q, last %q (%d reports)", countdown[0], countdown[len(countdown)-1], len(countdown))
	}
	cmu.Unlock()
	t.Logf("failure → detected %v → flip %v → IDC-A's users served by IDC-B %v (frozen window %v; lease TTL 2s, liveness window 1s)",
		detected.Sub(failed).Round(time.Millisecond), flipped.Sub(failed).Round(time.Millisecond),
		servedAt.Sub(failed).Round(time.Millisecond), final.Stages[0].Window.Round(time.Millisecond))
}

// TestAliveSeesRenewals: the liveness check is what stands between an
// operator and fencing a live IDC: it names the live instances, and not
// one that is gone.
func TestAliveSeesRenewals(t *testing.T) {
	l := newLab(t, fourCells(t), labConfig{})
	alive, err := etcdcutover.Alive(ctxT(t), l.cli, cluster, []string{"a1", "b2"}, 3*time.Second)
	must(t, err)
	var names []string
	for _, a := range alive {
		names = append(names, a.Cell+"/"+a.Instance)
	}
	if !slices.Equal(names, []string{"a1/a1-0", "b2/b2-0"}) {
		t.Fatalf("alive: %v", names)
	}
	// A stopped (closed) instance is gone, not alive.
	l.cells["a1"].Stop()
	alive, err = etcdcutover.Alive(ctxT(t), l.cli, cluster, []string{"a1"}, time.Second)
	must(t, err)
	if len(alive) != 0 {
		t.Fatalf("closed instance alive: %v", alive)
	}
}
