package gateway

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a request, the "outcome" label of cellrouter_requests_total.
const (
	outcomeOK         = "ok"              // the cell answered (any status that is not a guard refusal)
	outcomeRefused    = "refused"         // a guard refusal passed on to the client (after the one retry, or not replayable)
	outcomeError      = "upstream_error"  // the cell could not be reached or broke the exchange
	outcomeNoKey      = "no_key"          // no routing key in the request
	outcomeNoRoute    = "no_route"        // no HTTP route matches the path
	outcomeOverflow   = "buffer_overflow" // frozen slot, buffer full
	outcomeTimeout    = "buffer_timeout"  // frozen slot, not flipped in time
	outcomeNoInstance = "no_instance"     // the owner cell has no known instance
	outcomeNoOwner    = "no_owner"        // the map names no owner for the key
	outcomeCanceled   = "canceled"        // the client went away
)

type metrics struct {
	requests     *prometheus.CounterVec
	redirects    *prometheus.CounterVec
	frozenWaits  *prometheus.HistogramVec
	overflows    *prometheus.CounterVec
	buffered     prometheus.Gauge
	epoch        prometheus.Gauge
	revisionLag  prometheus.Gauge
	addedLatency *prometheus.HistogramVec

	httpOK               sync.Map // cell -> prometheus.Counter
	addedHTTP, addedGRPC prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, sinceUpdate func() float64) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cellrouter", Name: "requests_total",
			Help: "Requests by protocol, the cell that served them (empty when none did) and outcome.",
		}, []string{"proto", "cell", "outcome"}),
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cellrouter", Name: "redirects_total",
			Help: "Requests a cell refused (WRONG_CELL, FROZEN, STALE_MAP) that the router retried once after catching up with the refusing guard's epoch.",
		}, []string{"proto", "code"}),
		frozenWaits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cellrouter", Name: "frozen_wait_seconds",
			Help:    "Time requests for frozen keys were held before release (released), giving up (timeout) or the client leaving (canceled).",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10},
		}, []string{"proto", "outcome"}),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cellrouter", Name: "buffer_overflows_total",
			Help: "Requests for frozen keys refused because the per-slot or the total buffer bound was reached.",
		}, []string{"proto", "bound"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "cellrouter", Name: "buffered_requests",
			Help: "Requests held right now, waiting for their frozen slot to flip.",
		}),
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "cellrouter", Name: "map_epoch",
			Help: "Epoch of the shard map the router routes with.",
		}),
		revisionLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "cellrouter", Name: "map_revision_lag",
			Help: "Store revisions of the map key the router's watcher has not seen yet (0 when current; only when a revision probe is configured).",
		}),
		addedLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cellrouter", Name: "added_latency_seconds",
			Help:    "Time the router added to a request before the cell's answer reached the client, excluding time held for a frozen slot and time waiting for the cell.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05},
		}, []string{"proto"}),
	}
	cs := []prometheus.Collector{m.requests, m.redirects, m.frozenWaits, m.overflows, m.buffered, m.epoch, m.revisionLag, m.addedLatency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cellrouter", Name: "map_update_age_seconds",
			Help: "Seconds since the router's watcher last installed a new map (or loaded the first one).",
		}, sinceUpdate),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.addedHTTP, m.addedGRPC = m.addedLatency.WithLabelValues("http"), m.addedLatency.WithLabelValues("grpc")
	return m, nil
}

func (m *metrics) request(proto, cell, outcome string) {
	if outcome == outcomeOK && proto == "http" {
		// The hot path: one child per cell, looked up without hashing labels.
		if c, ok := m.httpOK.Load(cell); ok {
			c.(prometheus.Counter).Inc()
			return
		}
		c := m.requests.WithLabelValues(proto, cell, outcome)
		m.httpOK.Store(cell, c)
		c.Inc()
		return
	}
	m.requests.WithLabelValues(proto, cell, outcome).Inc()
}

func (m *metrics) added(proto string, d time.Duration) {
	o := m.addedGRPC
	if proto == "http" {
		o = m.addedHTTP
	}
	o.Observe(max(d, 0).Seconds())
}
