package guardmetrics_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/guardmetrics"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/router"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := guardmetrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := guardmetrics.New(reg); err == nil {
		t.Fatal("registering twice with one registry succeeded")
	}
	if _, err := guardmetrics.New(nil); err == nil {
		t.Fatal("nil registerer accepted")
	}

	tb, _ := router.NewTable(256)
	_ = tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"})
	_ = tb.Assign(router.SlotRange{First: 0, Last: 255}, "a1")
	tb.SetEpoch(3)
	f := cell.NewFence(clock.Real(), 0, "a1", "a1-0")
	g, err := cell.NewGuard(cell.Config{Cell: "a1", Instance: "a1-0"}, tb.Seal(), f)
	if err != nil {
		t.Fatal(err)
	}
	untrack := m.Track(g)

	m.Decided(admission.Decision{Cell: "a1"})
	m.Decided(admission.Decision{Cell: "a1"})
	m.Decided(admission.Decision{Cell: "a1", Code: cell.CodeWrongCell, Err: cell.ErrWrongCell})
	m.Decided(admission.Decision{Cell: "a1", Err: errors.New("bad epoch")})
	m.LeaseRenewed("a1", "a1-0", nil)
	m.LeaseRenewed("a1", "a1-0", errors.New("unreachable"))
	m.Acked("a1", "a1-0", 3)

	// A new fence starts fenced.
	expect(t, reg, map[string]float64{
		`cellkit_guard_decisions_total{cell="a1",outcome="WRONG_CELL"}`:         1,
		`cellkit_guard_decisions_total{cell="a1",outcome="admitted"}`:           2,
		`cellkit_guard_decisions_total{cell="a1",outcome="error"}`:              1,
		`cellkit_guard_fenced{cell="a1",instance="a1-0"}`:                       1,
		`cellkit_guard_applied_epoch{cell="a1",instance="a1-0"}`:                3,
		`cellkit_guard_acked_epoch{cell="a1",instance="a1-0"}`:                  3,
		`cellkit_guard_inflight_writes{cell="a1",instance="a1-0"}`:              0,
		`cellkit_guard_lease_renewals_total{cell="a1",instance="a1-0"}`:         1,
		`cellkit_guard_lease_renewal_failures_total{cell="a1",instance="a1-0"}`: 1,
	})

	// Open the fence and admit a write: in flight 1, fenced 0.
	if err := f.Resume(time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	a, err := g.Admit(t.Context(), "k", cell.Write, 0)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, reg, map[string]float64{
		`cellkit_guard_fenced{cell="a1",instance="a1-0"}`:          0,
		`cellkit_guard_inflight_writes{cell="a1",instance="a1-0"}`: 1,
	})
	a.Release()
	untrack()
	if got := gather(t, reg); hasPrefix(got, "cellkit_guard_inflight_writes") {
		t.Fatalf("after untrack: %v", got)
	}
}

// gather returns every sample as `name{label="v",...}` -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func expect(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	got := gather(t, reg)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func hasPrefix(m map[string]float64, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}
