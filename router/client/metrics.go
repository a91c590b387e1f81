package client

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// outcome of one attempt, the "outcome" label of cellkit_client_requests_total.
type outcome uint8

const (
	outOK          outcome = iota // answered (by the service, success or its own error)
	outFailure                    // Unavailable / DeadlineExceeded / transport error: counts against the breaker
	outCanceled                   // the caller gave up
	outWrongCell                  // guard refusal WRONG_CELL
	outFrozen                     // guard refusal FROZEN
	outStaleMap                   // guard refusal STALE_MAP
	outFenced                     // guard refusal FENCED
	outRefused                    // another guard refusal (NO_KEY)
	outBreakerOpen                // not sent: the cell's breaker is open
	outRerouted                   // not sent: the map moved the key while the pick waited
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "failure", "canceled", "wrong_cell", "frozen", "stale_map", "fenced", "refused", "breaker_open", "rerouted"}

// metrics are the client's Prometheus collectors.
type metrics struct {
	cells        cellCollector          // requests_total{cell, outcome}, inflight{cell}
	redirects    *prometheus.CounterVec // reason: wrong_cell, wrong_cell_hint, stale_map
	frozenWaits  *prometheus.CounterVec // outcome: flipped, timeout
	frozenWait   prometheus.Histogram   // seconds
	frozenNow    prometheus.Gauge       // calls waiting for a flip right now
	breakerState *prometheus.GaugeVec   // cell
	funcs        []prometheus.Collector // epoch, stale, contact age
}

func newMetrics(c *Client) *metrics {
	m := &metrics{
		cells: cellCollector{
			c: c,
			requests: prometheus.NewDesc("cellkit_client_requests_total",
				"Attempts by the cell they were routed to and their outcome (ok, failure, canceled, wrong_cell, frozen, stale_map, fenced, refused, breaker_open, rerouted).",
				[]string{"cell", "outcome"}, nil),
			inflight: prometheus.NewDesc("cellkit_client_inflight",
				"Attempts in flight per cell (a stream counts until it is open).",
				[]string{"cell"}, nil),
		},
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "redirects_total",
			Help: "Retries after a guard refusal, by reason (wrong_cell: after the map caught up; wrong_cell_hint: to the owner the refusal named; stale_map).",
		}, []string{"reason"}),
		frozenWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "frozen_waits_total",
			Help: "Waits for a frozen key's flip, by outcome (flipped, timeout).",
		}, []string{"outcome"}),
		frozenWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "frozen_wait_seconds",
			Help:    "Time calls spent waiting for a frozen key's flip.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		frozenNow: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "frozen_waiting",
			Help: "Calls waiting for a frozen key's flip right now.",
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "breaker_state",
			Help: "Circuit breaker state per cell: 0 closed, 1 half-open, 2 open.",
		}, []string{"cell"}),
	}
	m.funcs = append(m.funcs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "map_epoch",
			Help: "Epoch of the shard map the client routes by.",
		}, func() float64 { return float64(c.w.Table().Epoch()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "map_stale",
			Help: "1 when the map source has not been heard from for longer than MaxStaleness (routing continues on the last good table), else 0.",
		}, func() float64 {
			if c.Stale() {
				return 1
			}
			return 0
		}),
	)
	if c.cfg.Contact != nil {
		m.funcs = append(m.funcs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cellkit", Subsystem: "client", Name: "map_contact_age_seconds",
			Help: "Seconds since the map source was last heard from.",
		}, func() float64 { return c.ContactAge().Seconds() }))
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{m.cells, m.redirects, m.frozenWaits, m.frozenWait, m.frozenNow, m.breakerState}, m.funcs...)
}

// cellCollector exports the per-cell counters each cellState keeps as
// atomics: cellkit_client_requests_total{cell, outcome} and
// cellkit_client_inflight{cell}, every outcome of every cell the client
// has routed to.
type cellCollector struct {
	c                  *Client
	requests, inflight *prometheus.Desc
}

func (cc cellCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.requests
	ch <- cc.inflight
}

func (cc cellCollector) Collect(ch chan<- prometheus.Metric) {
	for id, cs := range *cc.c.cells.Load() {
		for o := range numOutcomes {
			ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(cc.requests, prometheus.CounterValue, float64(cs.out[o].Load()), cs.created, id, outcomeNames[o])
		}
		ch <- prometheus.MustNewConstMetric(cc.inflight, prometheus.GaugeValue, float64(cs.inflight.Load()), id)
	}
}

// register adds every collector to reg; a nil reg registers nothing.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var done []prometheus.Collector
	for _, col := range m.collectors() {
		if err := reg.Register(col); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("cellkit client: metrics already registered (give each Client its own Registerer, e.g. prometheus.WrapRegistererWith): %w", err)
			}
			return fmt.Errorf("cellkit client: register metrics: %w", err)
		}
		done = append(done, col)
	}
	return nil
}

func breakerGauge(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}
