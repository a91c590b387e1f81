package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellkit/cellkit/router"
)

// pools is where each cell's instances listen, from a router.Discovery,
// with round-robin pickers and a gRPC connection per instance address.
type pools struct {
	snap atomic.Pointer[poolSnap]

	dialTimeout time.Duration
	maxMsg      int

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

type poolSnap struct {
	cells map[string]*cellPool
	all   []router.Instance
}

type cellPool struct {
	http, grpc []string
	nh, ng     atomic.Uint64
}

func newPools(dialTimeout time.Duration, maxMsg int) *pools {
	p := &pools{dialTimeout: dialTimeout, maxMsg: maxMsg, conns: map[string]*grpc.ClientConn{}}
	p.snap.Store(&poolSnap{cells: map[string]*cellPool{}})
	return p
}

// follow installs d's instances until ctx ends.
func (p *pools) follow(ctx context.Context, d router.Discovery) {
	for {
		list, changed := d.Instances()
		p.set(list)
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func (p *pools) set(list []router.Instance) {
	s := &poolSnap{cells: map[string]*cellPool{}, all: list}
	live := map[string]bool{}
	for _, in := range list {
		cp := s.cells[in.Cell]
		if cp == nil {
			cp = &cellPool{}
			s.cells[in.Cell] = cp
		}
		if in.HTTPAddr != "" {
			cp.http = append(cp.http, in.HTTPAddr)
		}
		if in.GRPCAddr != "" {
			cp.grpc = append(cp.grpc, in.GRPCAddr)
			live[in.GRPCAddr] = true
		}
	}
	p.snap.Store(s)
	// Connections to instances that left discovery are closed; calls still
	// running on them fail (the instance is gone or going anyway).
	p.mu.Lock()
	var stale []*grpc.ClientConn
	for addr, cc := range p.conns {
		if !live[addr] {
			stale = append(stale, cc)
			delete(p.conns, addr)
		}
	}
	p.mu.Unlock()
	for _, cc := range stale {
		cc.Close()
	}
}

func (p *pools) pickHTTP(cell string) string {
	cp := p.snap.Load().cells[cell]
	if cp == nil || len(cp.http) == 0 {
		return ""
	}
	return cp.http[(cp.nh.Add(1)-1)%uint64(len(cp.http))]
}

func (p *pools) pickGRPC(cell string) (*grpc.ClientConn, string, error) {
	cp := p.snap.Load().cells[cell]
	if cp == nil || len(cp.grpc) == 0 {
		return nil, "", nil
	}
	addr := cp.grpc[(cp.ng.Add(1)-1)%uint64(len(cp.grpc))]
	cc, err := p.conn(addr)
	return cc, addr, err
}

func (p *pools) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("gateway: closed")
	}
	if cc := p.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: p.dialTimeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(p.maxMsg), grpc.MaxCallSendMsgSize(p.maxMsg)),
		grpc.WithDisableRetry(), // the gateway decides about retries itself
	)
	if err != nil {
		return nil, fmt.Errorf("gateway: grpc client for %s: %w", addr, err)
	}
	p.conns[addr] = cc
	return cc, nil
}

// instancesOf returns how many HTTP and gRPC addresses cell has.
func (p *pools) instancesOf(cell string) (nhttp, ngrpc int) {
	cp := p.snap.Load().cells[cell]
	if cp == nil {
		return 0, 0
	}
	return len(cp.http), len(cp.grpc)
}

func (p *pools) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*grpc.ClientConn{}
	p.mu.Unlock()
	for _, cc := range conns {
		cc.Close()
	}
}
