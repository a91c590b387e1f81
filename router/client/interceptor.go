package client

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/wire"
)

// UnaryInterceptor routes each unary call by the key in its context: it
// stamps cellkit-key, cellkit-epoch (of the table the route came from) and
// cellkit-idempotency-key, tells the balancer which cell to pick, and
// retries guard refusals as Config.Retry says (WRONG_CELL: after the map
// catches up, on the new owner; FROZEN: after the flip; STALE_MAP: after a
// short pause). Every attempt carries the same idempotency key.
func (c *Client) UnaryInterceptor() grpc.UnaryClientInterceptor { return c.unary }

// StreamInterceptor is UnaryInterceptor for streams. A stream the guard
// refuses before its first response is re-opened on the right cell and the
// messages sent so far (at most Retry.StreamReplay) are sent again.
func (c *Client) StreamInterceptor() grpc.StreamClientInterceptor { return c.stream }

func (c *Client) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	key, ok := KeyFrom(ctx)
	if !ok {
		return &NoKeyError{Method: method}
	}
	write := c.isWrite(method)
	idem, err := c.idempotencyKey(ctx, key, method, write)
	if err != nil {
		return err
	}
	r := c.newRouting(key, write)
	for {
		tg, err := r.next(ctx)
		if err != nil {
			return err
		}
		actx, ci := c.attemptContext(ctx, key, tg, idem)
		err = invoker(actx, method, req, reply, cc, opts...)
		res := grpcResult(err, ci)
		tg.finish(res.health)
		retry, err := r.after(ctx, tg, res)
		if !retry {
			return err
		}
	}
}

// attemptContext carries the route to the picker and the stamps to the
// server. It replaces nothing the caller set in its outgoing metadata.
func (c *Client) attemptContext(ctx context.Context, key string, tg target, idem string) (context.Context, *callInfo) {
	ac := &attemptCtx{Context: ctx, ci: callInfo{key: key, cell: tg.cell.id, epoch: tg.epoch}}
	if idem == "" {
		return metadata.AppendToOutgoingContext(ac, wire.KeyMD, key, wire.EpochMD, c.epochString(tg.epoch)), &ac.ci
	}
	return metadata.AppendToOutgoingContext(ac, wire.KeyMD, key, wire.EpochMD, c.epochString(tg.epoch), wire.IdempotencyMD, idem), &ac.ci
}

// attemptCtx is context.WithValue(ctx, callCtx{}, &ci) in one allocation.
type attemptCtx struct {
	context.Context
	ci callInfo
}

func (a *attemptCtx) Value(k any) any {
	if k == (callCtx{}) {
		return &a.ci
	}
	return a.Context.Value(k)
}

func (c *Client) isWrite(method string) bool { return c.cfg.IsWrite == nil || c.cfg.IsWrite(method) }

// idempotencyKey is the call's key from its context, or a fresh one for a
// write.
func (c *Client) idempotencyKey(ctx context.Context, key, method string, write bool) (string, error) {
	if id, ok := IdempotencyKeyFrom(ctx); ok {
		return id, nil
	}
	if !write {
		return "", nil
	}
	id, err := NewIdempotencyKey(key)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "cellkit client: %s: %v", method, err)
	}
	return id, nil
}

// grpcResult classifies an attempt's error.
func grpcResult(err error, ci *callInfo) result {
	if err == nil {
		return result{}
	}
	if ci.rerouted.Load() {
		return result{err: err, rerouted: true, health: ignored}
	}
	if typed := wire.FromGRPC(err); cell.CodeOf(typed) != "" {
		st, _ := status.FromError(err)
		return result{err: &refusedError{typed: typed, st: st}, refusal: typed}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return result{err: err, health: unhealth}
	case codes.Canceled:
		return result{err: err, health: ignored}
	}
	return result{err: err}
}

func (c *Client) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	key, ok := KeyFrom(ctx)
	if !ok {
		return nil, &NoKeyError{Method: method}
	}
	write := c.isWrite(method)
	idem, err := c.idempotencyKey(ctx, key, method, write)
	if err != nil {
		return nil, err
	}
	s := &retryStream{
		c: c, ctx: ctx, desc: desc, cc: cc, method: method, streamer: streamer, opts: opts,
		idem: idem, r: c.newRouting(key, write), replayable: c.cfg.Retry.StreamReplay > 0,
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// retryStream is a client stream that can be re-opened on another cell, with
// what was sent replayed, until its first response arrives.
type retryStream struct {
	c        *Client
	ctx      context.Context
	desc     *grpc.StreamDesc
	cc       *grpc.ClientConn
	method   string
	streamer grpc.Streamer
	opts     []grpc.CallOption
	idem     string
	r        routing // used by open and by the first RecvMsg only

	sendMu sync.Mutex // serialises sends and replays

	mu         sync.Mutex
	cur        grpc.ClientStream
	tg         target
	ci         *callInfo
	sent       []proto.Message
	replayable bool // still within Retry.StreamReplay and no response yet
	closedSend bool
	settled    bool // the first response (or error) was seen: no more retries
}

// open routes and creates the underlying stream.
func (s *retryStream) open() error {
	for {
		tg, err := s.r.next(s.ctx)
		if err != nil {
			return err
		}
		actx, ci := s.c.attemptContext(s.ctx, s.r.key, tg, s.idem)
		cs, err := s.streamer(actx, s.desc, s.cc, s.method, s.opts...)
		if err != nil {
			res := grpcResult(err, ci)
			tg.finish(res.health)
			retry, err := s.r.after(s.ctx, tg, res)
			if !retry {
				return err
			}
			continue
		}
		// The cell took the stream: that is all its breaker learns from
		// a stream, which may live for long.
		tg.finish(healthy)
		s.mu.Lock()
		s.cur, s.tg, s.ci = cs, tg, ci
		s.mu.Unlock()
		return nil
	}
}

func (s *retryStream) current() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *retryStream) Header() (metadata.MD, error) { return s.current().Header() }
func (s *retryStream) Trailer() metadata.MD         { return s.current().Trailer() }
func (s *retryStream) Context() context.Context     { return s.current().Context() }

func (s *retryStream) SendMsg(m any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	cur, retrying := s.cur, !s.settled && s.replayable
	if retrying {
		pm, ok := m.(proto.Message)
		if ok && len(s.sent) < s.c.cfg.Retry.StreamReplay {
			s.sent = append(s.sent, proto.Clone(pm))
		} else {
			s.replayable, s.sent, retrying = false, nil, false
		}
	}
	s.mu.Unlock()
	err := cur.SendMsg(m)
	if errors.Is(err, io.EOF) && retrying {
		// The stream ended, perhaps refused; the message is kept for a
		// replay and the first RecvMsg tells what happened.
		return nil
	}
	return err
}

func (s *retryStream) CloseSend() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.closedSend = true
	cur := s.cur
	s.mu.Unlock()
	return cur.CloseSend()
}

func (s *retryStream) RecvMsg(m any) error {
	for {
		s.mu.Lock()
		cur, settled, tg, ci, replayable := s.cur, s.settled, s.tg, s.ci, s.replayable
		s.mu.Unlock()
		err := cur.RecvMsg(m)
		if settled {
			return err
		}
		res := grpcResult(err, ci)
		if errors.Is(err, io.EOF) {
			res = result{err: err}
		}
		res.final = !replayable && res.refusal != nil
		retry, rerr := s.r.after(s.ctx, tg, res)
		if !retry {
			s.settle()
			return rerr
		}
		if err := s.reopen(); err != nil {
			s.settle()
			return err
		}
	}
}

func (s *retryStream) settle() {
	s.mu.Lock()
	s.settled, s.sent = true, nil
	s.mu.Unlock()
}

// reopen opens a stream on the (new) owner and replays what was sent.
func (s *retryStream) reopen() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.open(); err != nil {
		return err
	}
	s.mu.Lock()
	cur, sent, closed := s.cur, s.sent, s.closedSend
	s.mu.Unlock()
	for _, m := range sent {
		if err := cur.SendMsg(m); err != nil {
			return nil // the stream ended; RecvMsg has the status
		}
	}
	if closed {
		_ = cur.CloseSend()
	}
	return nil
}
