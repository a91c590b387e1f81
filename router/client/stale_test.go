package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cellkit/cellkit/clock/clocktest"
	"github.com/cellkit/cellkit/router"
	"github.com/cellkit/cellkit/router/client"
)

// The client tells when its map source has been silent for longer than
// MaxStaleness, keeps routing on the last good table meanwhile, and
// recovers when the source answers again.
func TestStaleMapReportedAndRoutingContinues(t *testing.T) {
	tb := baseMap(t, "a1", "b1")
	cl := startCluster(t, tb, 1, "a1", "b1")
	clk := clocktest.New(time.Unix(1_000_000, 0))
	src := newMemSource(tb)
	t.Cleanup(src.wg.Wait)
	cs := client.NewContactSource(src, client.ContactConfig{ProbeInterval: time.Second, Clock: clk})
	t.Cleanup(cs.Wait)
	w := startWatcher(t, cs)
	cfg := client.LocalConfig(w, cl.disc)
	cfg.IsWrite, cfg.Contact, cfg.Clock, cfg.MaxStaleness = isCredit, cs, clk, 5*time.Second
	c, reg := mustClient(t, cfg)
	s := &sdk{c: c, src: src, w: w, reg: reg}
	ledger := s.dial(t)
	stale := func() float64 { return metricValue(reg, "cellkit_client_map_stale", nil) }

	if c.Stale() || stale() != 0 || !cs.LastContact().Equal(clk.Now()) {
		t.Fatalf("fresh client: stale %v (gauge %v), last contact %v", c.Stale(), stale(), cs.LastContact())
	}
	// A quiet map is not a lost source: the probe reads it.
	waitFor(t, "the probe timer", func() bool { return clk.Pending() == 1 })
	clk.Advance(time.Second)
	waitFor(t, "a successful probe", func() bool { return cs.LastContact().Equal(clk.Now()) })

	// etcd unreachable: probes fail; past MaxStaleness the client says so.
	src.FailLoads(errors.New("etcd unreachable"))
	waitFor(t, "the probe timer", func() bool { return clk.Pending() == 1 })
	clk.Advance(6 * time.Second)
	if !c.Stale() || stale() != 1 || c.ContactAge() != 6*time.Second {
		t.Fatalf("after 6s of silence: stale %v (gauge %v), contact age %v", c.Stale(), stale(), c.ContactAge())
	}
	if got := metricValue(reg, "cellkit_client_map_contact_age_seconds", nil); got != 6 {
		t.Fatalf("map_contact_age_seconds = %v", got)
	}
	// Routing goes on with the last good table.
	k := keysOf(t, tb, "b1", 1)[0]
	if e, err := ledger.Credit(client.WithKey(ctxT(t), k), k, 1, "r1"); err != nil || e.Cell != "b1" {
		t.Fatalf("credit while stale: %q %v", e.Cell, err)
	}

	// A watch event is a contact too.
	src.Set(next(t, tb, func(n *router.Table) error { return n.SetWhitelist("vip", "a1") }))
	waitFor(t, "the watch event", func() bool { return !c.Stale() })

	// And so is a probe once etcd answers again.
	clk.Advance(6 * time.Second)
	if !c.Stale() {
		t.Fatal("not stale after 6 more silent seconds")
	}
	src.FailLoads(nil)
	waitFor(t, "the probe timer", func() bool { return clk.Pending() == 1 })
	clk.Advance(time.Second)
	waitFor(t, "a successful probe", func() bool { return !c.Stale() && stale() == 0 })
}
