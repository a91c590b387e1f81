package client

import (
	"context"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/cellkit/cellkit/router"
)

// BalancerName is the name of the cellkit load-balancing policy.
const BalancerName = "cellkit"

const serviceConfigJSON = `{"loadBalancingConfig":[{"` + BalancerName + `":{}}]}`

type (
	cellAttr     struct{}
	instanceAttr struct{}
	clientAttr   struct{}
)

// AddressCell returns the cell a resolved address belongs to (the resolver
// tags every address and endpoint with it).
func AddressCell(a resolver.Address) (string, bool) {
	s, ok := a.BalancerAttributes.Value(cellAttr{}).(string)
	return s, ok
}

// ResolverBuilder returns the resolver of scheme "cellkit": every gRPC
// instance from Discovery becomes an endpoint tagged with its cell, and
// every change in Discovery is pushed to the connection. DialOptions
// installs it per connection; resolver.Register(c.ResolverBuilder())
// installs it process-wide instead.
func (c *Client) ResolverBuilder() resolver.Builder { return resolverBuilder{c} }

type resolverBuilder struct{ c *Client }

func (b resolverBuilder) Scheme() string { return Scheme }

func (b resolverBuilder) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &cellResolver{c: b.c, cc: cc, cancel: cancel}
	if sc := cc.ParseServiceConfig(serviceConfigJSON); sc.Err == nil {
		r.sc = sc
	}
	r.wg.Add(1)
	go r.run(ctx)
	return r, nil
}

type cellResolver struct {
	c      *Client
	cc     resolver.ClientConn
	sc     *serviceconfig.ParseResult
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *cellResolver) run(ctx context.Context) {
	defer r.wg.Done()
	for {
		list, changed := r.c.cfg.Discovery.Instances()
		_ = r.cc.UpdateState(r.state(list)) // an error only asks for a re-resolve: the next change brings one
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func (r *cellResolver) state(list []router.Instance) resolver.State {
	st := resolver.State{
		Endpoints:     make([]resolver.Endpoint, 0, len(list)),
		Addresses:     make([]resolver.Address, 0, len(list)),
		Attributes:    attributes.New(clientAttr{}, r.c),
		ServiceConfig: r.sc,
	}
	for _, in := range list {
		if in.GRPCAddr == "" {
			continue
		}
		attrs := attributes.New(cellAttr{}, in.Cell).WithValue(instanceAttr{}, in.ID)
		a := resolver.Address{Addr: in.GRPCAddr, BalancerAttributes: attrs}
		st.Addresses = append(st.Addresses, a)
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{a}, Attributes: attrs})
	}
	return st
}

func (r *cellResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *cellResolver) Close() {
	r.cancel()
	r.wg.Wait()
}
