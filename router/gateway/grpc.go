package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/router"
)

// frame is one gRPC message, as bytes: the proxy never decodes it.
type frame struct{ b []byte }

// rawCodec passes frames through. Its name is the content-subtype the
// client used ("proto" for plain application/grpc), so the cell sees the
// same content type.
type rawCodec struct{ name string }

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("cellrouter: raw codec cannot marshal %T", v)
	}
	return f.b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("cellrouter: raw codec cannot unmarshal into %T", v)
	}
	f.b = append([]byte(nil), data...) // grpc reuses data's buffer
	return nil
}

func (c rawCodec) Name() string { return c.name }

var proxyDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (g *Gateway) initGRPC() {
	opts := []grpc.ServerOption{
		grpc.UnknownServiceHandler(g.handleGRPC),
		grpc.ForceServerCodec(rawCodec{name: "proto"}),
		grpc.MaxRecvMsgSize(g.cfg.GRPC.MaxMessageBytes),
		grpc.MaxSendMsgSize(g.cfg.GRPC.MaxMessageBytes),
	}
	if g.opts.GRPCInterceptor != nil {
		opts = append(opts, grpc.StreamInterceptor(g.opts.GRPCInterceptor))
	}
	g.grpcSrv = grpc.NewServer(opts...)
}

// GRPCServer returns the transparent gRPC proxy: a server with no services
// of its own that forwards every call, as raw frames, to the owner of the
// call's key. Serve runs it; or call its Serve yourself.
func (g *Gateway) GRPCServer() *grpc.Server { return g.grpcSrv }

// contentSubtype is the codec name of a call's content-type.
func contentSubtype(md metadata.MD) string {
	if v := md["content-type"]; len(v) > 0 {
		if rest, ok := strings.CutPrefix(v[0], "application/grpc"); ok && len(rest) > 1 && (rest[0] == '+' || rest[0] == ';') {
			if name, _, _ := strings.Cut(rest[1:], ";"); rest[0] == '+' && name != "" {
				return strings.ToLower(name)
			}
		}
	}
	return "proto"
}

// outgoingMD is the client's metadata less what the transport sets itself
// and less every cellkit-* key but the idempotency key (clients may not
// choose a cell or claim an epoch).
func outgoingMD(in metadata.MD) metadata.MD {
	out := make(metadata.MD, len(in)+2)
	for k, v := range in {
		switch {
		case strings.HasPrefix(k, ":"), strings.HasPrefix(k, "grpc-"), k == "content-type", k == "user-agent", k == "te":
			continue
		case strings.HasPrefix(k, wire.Prefix) && k != wire.IdempotencyMD:
			continue
		}
		out[k] = v
	}
	return out
}

type recvd struct {
	f   *frame
	err error
}

// grpcCall is one proxied call.
type grpcCall struct {
	g      *Gateway
	ss     grpc.ServerStream
	method string
	key    string
	field  []protowire.Number // the key is in the first request message
	desc   string             // where the key is looked for, for NO_KEY
	md     metadata.MD        // outgoing, without key and epoch
	codec  rawCodec
	start  time.Time
}

func (g *Gateway) handleGRPC(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	method, _ := grpc.MethodFromServerStream(ss)
	in, _ := metadata.FromIncomingContext(ss.Context())
	mdKeys, field, desc := g.gkeys.forMethod(method)
	c := &grpcCall{g: g, ss: ss, method: method, field: field, desc: desc, md: outgoingMD(in), codec: rawCodec{name: contentSubtype(in)}, start: start}
	if field == nil {
		if c.key = mdKey(mdKeys, in); c.key == "" {
			return c.noKey()
		}
		if err := router.CheckKey(c.key); err != nil {
			return c.badKey(err)
		}
	}
	return c.run()
}

func (c *grpcCall) noKey() error {
	c.g.m.request("grpc", "", outcomeNoKey)
	return wire.GRPCStatus(fmt.Errorf("cellrouter: %s: no routing key (looked for %s): %w", c.method, c.desc, cell.ErrNoKey)).Err()
}

func (c *grpcCall) badKey(err error) error {
	c.g.m.request("grpc", "", outcomeNoKey)
	return wire.GRPCStatus(fmt.Errorf("cellrouter: %s: unusable routing key (from %s): %v: %w", c.method, c.desc, err, cell.ErrNoKey)).Err()
}

// run forwards the call and retries it once on a guard refusal when that is
// safe: the cell refused before sending anything (a refusal is a
// trailers-only answer) so the client has seen nothing yet, and every
// request message sent so far is still in memory (at most MaxReplayMessages
// and MaxReplayBytes). Unary and server-streaming calls always qualify; a
// client or bidi stream qualifies until it outgrows the bounds. Once a
// header or message reached the client, the call cannot be restarted
// without the client noticing, so it is not.
func (c *grpcCall) run() error {
	g := c.g
	ctx, cancel := context.WithCancel(c.ss.Context())
	defer cancel()

	in := make(chan recvd)
	reading := false
	startReader := func() {
		if reading {
			return
		}
		reading = true
		// One goroutine reads the client's messages for the whole call;
		// it ends when the call does (RecvMsg fails, ctx ends).
		go func() {
			for {
				f := new(frame)
				err := c.ss.RecvMsg(f)
				select {
				case in <- recvd{f, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}

	var (
		replay     []*frame
		replayN    int
		replayOK   = true
		clientDone bool
		clientErr  error
		hint       *ownerHint
	)
	if c.field != nil {
		// The key is in the first message: read it before routing.
		startReader()
		var m recvd
		select {
		case m = <-in:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if m.err != nil {
			if errors.Is(m.err, io.EOF) {
				return c.noKey()
			}
			return m.err
		}
		if c.key = fieldString(m.f.b, c.field); c.key == "" {
			return c.noKey()
		}
		if err := router.CheckKey(c.key); err != nil {
			return c.badKey(err)
		}
		replay, replayN = []*frame{m.f}, len(m.f.b)
		replayOK = g.cfg.GRPC.MaxReplayMessages >= 1 && replayN <= g.cfg.GRPC.MaxReplayBytes
	}
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		r, owner, err := g.resolve(ctx, "grpc", c.key, hint)
		if err != nil {
			return c.fail(owner, err)
		}
		resolved := time.Now()
		cc, addr, err := g.pools.pickGRPC(owner)
		if err != nil {
			return c.fail(owner, err)
		}
		if cc == nil {
			return c.fail(owner, &routeError{outcome: outcomeNoInstance, cell: owner, msg: fmt.Sprintf("cellrouter: cell %s owns key %q but has no gRPC instance", owner, c.key)})
		}
		startReader()
		md := c.md.Copy()
		md[wire.KeyMD] = []string{c.key}
		md[wire.EpochMD] = []string{g.epochText(r.Epoch)}
		actx, acancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
		cs, err := cc.NewStream(actx, proxyDesc, c.method, grpc.ForceCodec(c.codec))
		if err != nil {
			acancel()
			if attempt == 0 && ctx.Err() == nil {
				g.log.Warn("cell instance unreachable; trying the next one", "cell", owner, "addr", addr, "err", err)
				continue
			}
			return c.fail(owner, err)
		}
		if attempt == 0 {
			g.m.added("grpc", t0.Sub(c.start)+time.Since(resolved))
		}

		sendDone := make(chan struct{})
		go func() {
			defer close(sendDone)
			for _, f := range replay {
				if cs.SendMsg(f) != nil {
					return
				}
			}
			if clientDone {
				_ = cs.CloseSend()
				return
			}
			for {
				select {
				case m := <-in:
					if errors.Is(m.err, io.EOF) {
						clientDone = true
						_ = cs.CloseSend()
						return
					}
					if m.err != nil {
						clientErr = m.err
						acancel()
						return
					}
					if replayOK {
						if len(replay) < g.cfg.GRPC.MaxReplayMessages && replayN+len(m.f.b) <= g.cfg.GRPC.MaxReplayBytes {
							replay = append(replay, m.f)
							replayN += len(m.f.b)
						} else {
							replayOK, replay = false, nil
						}
					}
					if cs.SendMsg(m.f) != nil {
						return // the cell ended the call; RecvMsg has its status
					}
				case <-actx.Done():
					return
				}
			}
		}()

		committed, err := c.pump(cs)
		acancel()
		<-sendDone
		if err == nil {
			c.ss.SetTrailer(cs.Trailer())
			g.m.request("grpc", owner, outcomeOK)
			return nil
		}
		if clientErr != nil || ctx.Err() != nil {
			g.m.request("grpc", owner, outcomeCanceled)
			if clientErr != nil {
				return clientErr
			}
			return status.FromContextError(ctx.Err()).Err()
		}
		ref := wire.FromGRPC(err)
		code := cell.CodeOf(ref)
		if attempt == 0 && !committed && replayOK && retryable(code) {
			g.log.Debug("cell refused; retrying once", "key", c.key, "cell", owner, "refusal", ref)
			hint = g.afterRefusal(ctx, "grpc", ref)
			continue
		}
		c.ss.SetTrailer(cs.Trailer())
		switch {
		case code != "":
			g.m.request("grpc", owner, outcomeRefused)
		case status.Code(err) == codes.Unavailable && len(status.Convert(err).Details()) == 0 && !committed:
			g.m.request("grpc", owner, outcomeError)
		default:
			g.m.request("grpc", owner, outcomeOK)
		}
		return err
	}
}

// pump forwards the cell's header and messages to the client. committed
// says whether anything reached the client; err is the call's end (nil for
// OK).
func (c *grpcCall) pump(cs grpc.ClientStream) (committed bool, err error) {
	// nil, nil: the call ended without a header (a trailers-only answer,
	// which is how guards refuse); RecvMsg reports the status.
	if hdr, _ := cs.Header(); hdr != nil {
		if err := c.ss.SendHeader(hdr); err != nil {
			return true, err
		}
		committed = true
	}
	for {
		f := new(frame)
		if err := cs.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return committed, nil
			}
			return committed, err
		}
		committed = true
		if err := c.ss.SendMsg(f); err != nil {
			return true, err
		}
	}
}

// fail answers a call the router could not deliver.
func (c *grpcCall) fail(cellID string, err error) error {
	g := c.g
	var be *bufferError
	var re *routeError
	switch {
	case errors.As(err, &be):
		outcome := outcomeOverflow
		if be.timeout {
			outcome = outcomeTimeout
		}
		g.m.request("grpc", "", outcome)
		return wire.GRPCStatus(err).Err()
	case errors.As(err, &re):
		g.m.request("grpc", re.cell, re.outcome)
		g.log.Warn("cannot route", "err", err)
		return status.Error(codes.Unavailable, err.Error())
	case c.ss.Context().Err() != nil:
		g.m.request("grpc", cellID, outcomeCanceled)
		return status.FromContextError(c.ss.Context().Err()).Err()
	}
	g.m.request("grpc", cellID, outcomeError)
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("cellrouter: cell %s: %v", cellID, err))
}
