package client

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

func init() { balancer.Register(balancerBuilder{}) }

// callInfo is what the interceptor tells the picker about one attempt.
type callInfo struct {
	key      string
	cell     string
	epoch    uint64
	rerouted atomic.Bool // set by the picker: the map moved the key while the pick waited
}

type callCtx struct{}

var (
	errNoCallInfo = status.Error(codes.Internal, "cellkit balancer: call without routing information: dial with (*client.Client).DialOptions so its interceptors run")
	errNoClient   = status.Error(codes.Internal, "cellkit balancer: used without the cellkit resolver (dial cellkit:///<service> with (*client.Client).DialOptions)")
	errRerouted   = status.Error(codes.Unavailable, "cellkit balancer: the map moved the key while the call waited for its cell; re-routing")
)

type balancerBuilder struct{}

func (balancerBuilder) Name() string { return BalancerName }

func (balancerBuilder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	b := &cellBalancer{cc: cc, conns: map[connKey]*subConn{}, state: connectivity.Connecting}
	b.ready.Store(&readySet{})
	return b
}

type connKey struct{ cell, instance, addr string }

type subConn struct {
	sc    balancer.SubConn
	key   connKey
	state connectivity.State
	err   error
}

// readySet is an immutable snapshot of the usable SubConns, by cell.
type readySet struct {
	cells map[string]*readyCell
}

type readyCell struct {
	ready   []balancer.SubConn // READY, in instance order
	failErr error              // every SubConn of the cell is in TRANSIENT_FAILURE (nil otherwise)
	next    atomic.Uint32
}

// cellBalancer keeps a SubConn per instance of every cell and picks, for
// each call, a READY SubConn of the cell the interceptor routed it to,
// round-robin within the cell. It never picks another cell: with no READY
// SubConn in the owner the pick waits (ErrNoSubConnAvailable), and when
// every SubConn of the owner is failing, a fail-fast call fails Unavailable
// (counted by the cell's breaker) while a wait-for-ready call keeps waiting.
//
// gRPC calls UpdateClientConnState, ResolverError, the SubConn listeners
// and Close from one goroutine; a second goroutine pushes a fresh picker
// whenever the map changes, so picks waiting for a cell the map has moved
// their key away from are re-routed.
type cellBalancer struct {
	cc     balancer.ClientConn
	client atomic.Pointer[Client]
	conns  map[connKey]*subConn
	ready  atomic.Pointer[readySet]

	updMu sync.Mutex // orders picker updates from both goroutines
	state connectivity.State

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (b *cellBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	c, _ := s.ResolverState.Attributes.Value(clientAttr{}).(*Client)
	if c == nil {
		b.updMu.Lock()
		b.state = connectivity.TransientFailure
		b.cc.UpdateState(balancer.State{ConnectivityState: b.state, Picker: errPicker{errNoClient}})
		b.updMu.Unlock()
		return balancer.ErrBadResolverState
	}
	if b.client.Load() == nil {
		b.client.Store(c)
		b.watchMap(c)
	}
	seen := make(map[connKey]bool, len(s.ResolverState.Endpoints))
	for _, ep := range s.ResolverState.Endpoints {
		if len(ep.Addresses) == 0 {
			continue
		}
		cell, _ := ep.Attributes.Value(cellAttr{}).(string)
		inst, _ := ep.Attributes.Value(instanceAttr{}).(string)
		if cell == "" {
			cell, _ = AddressCell(ep.Addresses[0])
		}
		k := connKey{cell, inst, ep.Addresses[0].Addr}
		seen[k] = true
		if b.conns[k] != nil {
			continue
		}
		e := &subConn{key: k, state: connectivity.Idle}
		sc, err := b.cc.NewSubConn(ep.Addresses, balancer.NewSubConnOptions{
			StateListener: func(st balancer.SubConnState) { b.updateSubConn(e, st) },
		})
		if err != nil {
			continue
		}
		e.sc = sc
		b.conns[k] = e
		sc.Connect()
	}
	for k, e := range b.conns {
		if !seen[k] {
			e.sc.Shutdown()
			delete(b.conns, k)
		}
	}
	b.rebuild()
	return nil
}

func (b *cellBalancer) ResolverError(error) {
	// Keep the last instances: discovery hiccups must not drop ready
	// connections. With none at all, picks wait for discovery.
	b.rebuild()
}

func (b *cellBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *cellBalancer) updateSubConn(e *subConn, st balancer.SubConnState) {
	if b.conns[e.key] != e {
		return // shut down
	}
	s := st.ConnectivityState
	switch {
	case s == connectivity.Shutdown:
		return
	case s == connectivity.Idle:
		e.sc.Connect()
		if e.state == connectivity.TransientFailure {
			return // stay failing until it connects (as round_robin does)
		}
	case s == connectivity.Connecting && e.state == connectivity.TransientFailure:
		return
	case s == connectivity.TransientFailure:
		e.err = st.ConnectionError
	}
	e.state = s
	b.rebuild()
}

// rebuild publishes a new ready set and picker.
func (b *cellBalancer) rebuild() {
	rs := &readySet{cells: map[string]*readyCell{}}
	byCell := map[string][]*subConn{}
	for _, e := range b.conns {
		byCell[e.key.cell] = append(byCell[e.key.cell], e)
	}
	var nReady, nConnecting, nIdle int
	for cell, es := range byCell {
		slices.SortFunc(es, func(x, y *subConn) int {
			if c := strings.Compare(x.key.instance, y.key.instance); c != 0 {
				return c
			}
			return strings.Compare(x.key.addr, y.key.addr)
		})
		rc := &readyCell{}
		failing := 0
		var lastErr error
		for _, e := range es {
			switch e.state {
			case connectivity.Ready:
				rc.ready = append(rc.ready, e.sc)
				nReady++
			case connectivity.TransientFailure:
				failing++
				if e.err != nil {
					lastErr = e.err
				}
			case connectivity.Connecting:
				nConnecting++
			default:
				nIdle++
			}
		}
		if failing == len(es) {
			// Not a status error: fail-fast calls fail Unavailable,
			// wait-for-ready calls keep waiting.
			rc.failErr = fmt.Errorf("cellkit balancer: all %d instances of cell %s are failing: %v", len(es), cell, lastErr)
		}
		rs.cells[cell] = rc
	}
	b.ready.Store(rs)
	state := connectivity.TransientFailure
	switch {
	case nReady > 0:
		state = connectivity.Ready
	case nConnecting > 0:
		state = connectivity.Connecting
	case nIdle > 0:
		state = connectivity.Idle
	case len(b.conns) == 0:
		state = connectivity.Connecting // waiting for discovery
	}
	b.updMu.Lock()
	b.state = state
	b.cc.UpdateState(balancer.State{ConnectivityState: state, Picker: &picker{b: b}})
	b.updMu.Unlock()
}

// watchMap pushes a fresh picker on every map change, waking the picks
// that wait so they can check whether their key moved.
func (b *cellBalancer) watchMap(c *Client) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	w := c.w
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		epoch := w.Table().Epoch()
		for {
			t, err := w.WaitEpoch(ctx, epoch+1)
			if err != nil {
				return
			}
			epoch = t.Epoch()
			b.updMu.Lock()
			b.cc.UpdateState(balancer.State{ConnectivityState: b.state, Picker: &picker{b: b}})
			b.updMu.Unlock()
		}
	}()
}

func (b *cellBalancer) ExitIdle() {
	for _, e := range b.conns {
		if e.state == connectivity.Idle {
			e.sc.Connect()
		}
	}
}

func (b *cellBalancer) Close() {
	if b.cancel != nil {
		b.cancel()
		b.wg.Wait()
	}
	for _, e := range b.conns {
		e.sc.Shutdown()
	}
	b.conns = map[connKey]*subConn{}
}

// picker reads the balancer's current ready set, so any picker pushed
// later is as good as a new one: a new value only wakes waiting picks.
type picker struct{ b *cellBalancer }

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	ci, _ := info.Ctx.Value(callCtx{}).(*callInfo)
	if ci == nil {
		return balancer.PickResult{}, errNoCallInfo
	}
	rc := p.b.ready.Load().cells[ci.cell]
	if rc != nil && len(rc.ready) > 0 {
		n := rc.next.Add(1)
		return balancer.PickResult{SubConn: rc.ready[n%uint32(len(rc.ready))]}, nil
	}
	// Nothing ready in the owner. If the map has moved the key meanwhile,
	// end the attempt so the interceptor routes it again.
	if c := p.b.client.Load(); c != nil {
		if t := c.w.Table(); t.Epoch() > ci.epoch {
			if o := t.Owner(ci.key); o == nil || o.ID != ci.cell {
				ci.rerouted.Store(true)
				return balancer.PickResult{}, errRerouted
			}
		}
	}
	if rc != nil && rc.failErr != nil {
		return balancer.PickResult{}, rc.failErr
	}
	return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
}

type errPicker struct{ err error }

func (p errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, p.err
}
