package netfault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Fault kinds.
const (
	KindLatency   = "latency"
	KindBlackhole = "blackhole"
	KindBandwidth = "bandwidth"
	KindReset     = "reset"
)

// ErrNoProxy is returned for a name no proxy has.
var ErrNoProxy = errors.New("netfault: no such proxy")

// Net owns a set of proxies.
type Net struct {
	api *toxiproxy.ApiServer
	log *slog.Logger

	mu      sync.Mutex
	proxies map[string]*Proxy
}

// New returns an empty Net. A nil logger discards.
func New(logger *slog.Logger) *Net {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	return &Net{api: api, log: logger, proxies: map[string]*Proxy{}}
}

// Proxy starts a proxy named name on a free loopback port forwarding to
// upstream (host:port).
func (n *Net) Proxy(name, upstream string) (*Proxy, error) {
	if name == "" || strings.ContainsAny(name, " \t\n") {
		return nil, fmt.Errorf("netfault: proxy name %q", name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.proxies[name]; ok {
		return nil, fmt.Errorf("netfault: proxy %s already exists", name)
	}
	tp := toxiproxy.NewProxy(n.api, name, "127.0.0.1:0", upstream)
	if err := tp.Start(); err != nil {
		return nil, fmt.Errorf("netfault: start proxy %s to %s: %w", name, upstream, err)
	}
	p := &Proxy{name: name, upstream: upstream, tp: tp, log: n.log.With("proxy", name)}
	n.proxies[name] = p
	return p, nil
}

// Get returns the proxy named name, or nil.
func (n *Net) Get(name string) *Proxy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proxies[name]
}

// Names returns the proxies' names, sorted.
func (n *Net) Names() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.proxies))
	for k := range n.proxies {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Select returns the proxies whose names match pred, sorted by name.
func (n *Net) Select(pred func(name string) bool) []*Proxy {
	var out []*Proxy
	for _, name := range n.Names() {
		if pred(name) {
			out = append(out, n.Get(name))
		}
	}
	return out
}

// HealAll removes every fault from every proxy.
func (n *Net) HealAll() error {
	var errs []error
	for _, name := range n.Names() {
		errs = append(errs, n.Get(name).Heal())
	}
	return errors.Join(errs...)
}

// Close stops every proxy.
func (n *Net) Close() {
	n.mu.Lock()
	ps := n.proxies
	n.proxies = map[string]*Proxy{}
	n.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
}

// Proxy is one TCP path with switchable faults.
type Proxy struct {
	name, upstream string
	tp             *toxiproxy.Proxy
	log            *slog.Logger

	mu     sync.Mutex
	faults []string // active fault kinds
	down   bool     // Reset: the listener is stopped
	closed bool
}

// Name is the proxy's name.
func (p *Proxy) Name() string { return p.name }

// Addr is the host:port to dial instead of the upstream.
func (p *Proxy) Addr() string { return p.tp.Listen }

// Upstream is the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Faults returns the active fault kinds.
func (p *Proxy) Faults() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.faults)
}

// Latency delays data by latency ± jitter in both directions.
func (p *Proxy) Latency(latency, jitter time.Duration) error {
	if latency <= 0 || jitter < 0 {
		return fmt.Errorf("netfault: %s: latency %v jitter %v", p.name, latency, jitter)
	}
	return p.add(KindLatency, "latency", map[string]any{"latency": latency.Milliseconds(), "jitter": jitter.Milliseconds()})
}

// Blackhole cuts the path: connections stay open and nothing passes.
func (p *Proxy) Blackhole() error {
	return p.add(KindBlackhole, "timeout", map[string]any{"timeout": 0})
}

// Bandwidth limits each direction to kbps kilobytes per second.
func (p *Proxy) Bandwidth(kbps int64) error {
	if kbps <= 0 {
		return fmt.Errorf("netfault: %s: bandwidth %d KB/s", p.name, kbps)
	}
	return p.add(KindBandwidth, "bandwidth", map[string]any{"rate": kbps})
}

// Reset resets every connection and refuses new ones until Heal.
func (p *Proxy) Reset() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("netfault: %s is closed", p.name)
	}
	if !p.down {
		p.tp.Stop() // closes the listener and every connection
		p.down = true
		p.faults = append(p.faults, KindReset)
	}
	p.log.Info("fault on", "kind", KindReset)
	return nil
}

func (p *Proxy) add(kind, toxic string, attrs map[string]any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("netfault: %s is closed", p.name)
	}
	for _, dir := range []string{"upstream", "downstream"} {
		name := kind + "_" + dir
		_ = p.tp.Toxics.RemoveToxic(context.Background(), name)
		doc, err := json.Marshal(map[string]any{"name": name, "type": toxic, "stream": dir, "toxicity": 1, "attributes": attrs})
		if err != nil {
			return err
		}
		if _, err := p.tp.Toxics.AddToxicJson(bytes.NewReader(doc)); err != nil {
			return fmt.Errorf("netfault: %s: add %s: %w", p.name, kind, err)
		}
	}
	if !slices.Contains(p.faults, kind) {
		p.faults = append(p.faults, kind)
	}
	p.log.Info("fault on", "kind", kind)
	return nil
}

// Heal removes every fault: toxics go (a blackhole's cut connections are
// closed) and a reset proxy listens again on its address.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.tp.Toxics.ResetToxics(context.Background())
	var err error
	if p.down {
		if err = p.tp.Start(); err != nil {
			err = fmt.Errorf("netfault: %s: listen again on %s: %w", p.name, p.tp.Listen, err)
		} else {
			p.down = false
		}
	}
	if len(p.faults) > 0 {
		p.log.Info("healed", "faults", strings.Join(p.faults, ","))
	}
	p.faults = nil
	return err
}

func (p *Proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.tp.Toxics.ResetToxics(context.Background())
	if !p.down {
		p.tp.Stop()
	}
}
