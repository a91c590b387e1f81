package guardmetrics

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
)

// Namespace prefixes every metric name.
const Namespace = "cellkit_guard"

// Metrics are the guard's Prometheus metrics. Feed decisions with Decided
// (the adapters' OnDecision hook), lease and ack events with LeaseRenewed
// and Acked (infra/etcdcell's Observer), and Track each guard for the
// gauges read at scrape time. Safe for concurrent use.
type Metrics struct {
	decisions *prometheus.CounterVec
	renewals  *prometheus.CounterVec
	failures  *prometheus.CounterVec
	acked     *prometheus.GaugeVec

	inflightDesc, appliedDesc, fencedDesc *prometheus.Desc

	mu     sync.Mutex
	guards map[[2]string]*cell.Guard // by cell, instance
}

// New creates the metrics and registers them with reg (required: library
// code registers nothing globally; pass prometheus.DefaultRegisterer to
// choose the global registry).
func New(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("guardmetrics: nil prometheus.Registerer")
	}
	inst := []string{"cell", "instance"}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "decisions_total",
			Help: "Guard decisions by cell and outcome (admitted, WRONG_CELL, FROZEN, FENCED, STALE_MAP, NO_KEY, error).",
		}, []string{"cell", "outcome"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lease_renewals_total",
			Help: "Successful renewals of the guard instance's etcd lease.",
		}, inst),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lease_renewal_failures_total",
			Help: "Failed attempts to renew the guard instance's etcd lease.",
		}, inst),
		acked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "acked_epoch",
			Help: "Map epoch the guard instance last acknowledged in etcd.",
		}, inst),
		inflightDesc: prometheus.NewDesc(Namespace+"_inflight_writes", "Writes admitted by the guard instance and still running.", inst, nil),
		appliedDesc:  prometheus.NewDesc(Namespace+"_applied_epoch", "Highest map epoch the guard instance may acknowledge (applied, with no write in flight that it took away).", inst, nil),
		fencedDesc:   prometheus.NewDesc(Namespace+"_fenced", "1 while the guard instance is fenced (admits nothing), else 0.", inst, nil),
		guards:       map[[2]string]*cell.Guard{},
	}
	for _, c := range []prometheus.Collector{m.decisions, m.renewals, m.failures, m.acked, (*guardCollector)(m)} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("guardmetrics: register: %w", err)
		}
	}
	return m, nil
}

// Decided counts one decision; use it as the adapters' OnDecision hook.
func (m *Metrics) Decided(d admission.Decision) {
	m.decisions.WithLabelValues(d.Cell, d.Outcome()).Inc()
}

// LeaseRenewed counts a renewal attempt of an instance's lease (err nil:
// renewed).
func (m *Metrics) LeaseRenewed(cellID, instance string, err error) {
	if err != nil {
		m.failures.WithLabelValues(cellID, instance).Inc()
		return
	}
	m.renewals.WithLabelValues(cellID, instance).Inc()
}

// Acked sets the epoch an instance acknowledged in etcd.
func (m *Metrics) Acked(cellID, instance string, epoch uint64) {
	m.acked.WithLabelValues(cellID, instance).Set(float64(epoch))
}

// Track exports g's in-flight writes, applied epoch and fenced state until
// the returned func is called. Tracking another guard with the same cell
// and instance replaces g.
func (m *Metrics) Track(g *cell.Guard) (untrack func()) {
	k := [2]string{g.Cell(), g.Instance()}
	m.mu.Lock()
	m.guards[k] = g
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.guards[k] == g {
			delete(m.guards, k)
		}
	}
}

// guardCollector reads tracked guards at scrape time.
type guardCollector Metrics

func (c *guardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inflightDesc
	ch <- c.appliedDesc
	ch <- c.fencedDesc
}

func (c *guardCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	guards := make([]*cell.Guard, 0, len(c.guards))
	for _, g := range c.guards {
		guards = append(guards, g)
	}
	c.mu.Unlock()
	for _, g := range guards {
		fenced := 0.0
		if f := g.Fence(); f != nil && f.Check() != nil {
			fenced = 1
		}
		ch <- prometheus.MustNewConstMetric(c.inflightDesc, prometheus.GaugeValue, float64(g.InFlight()), g.Cell(), g.Instance())
		ch <- prometheus.MustNewConstMetric(c.appliedDesc, prometheus.GaugeValue, float64(g.Applied()), g.Cell(), g.Instance())
		ch <- prometheus.MustNewConstMetric(c.fencedDesc, prometheus.GaugeValue, fenced, g.Cell(), g.Instance())
	}
}
