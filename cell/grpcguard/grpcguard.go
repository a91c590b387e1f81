package grpcguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
)

// KeyFunc reads the routing key from a request message (for a stream: its
// first message). The message is the type the handler decodes, e.g. the
// generated *pb.CreditRequest.
type KeyFunc func(msg any) (string, error)

// Method declares how one gRPC method is guarded.
type Method struct {
	// Kind is cell.Read or cell.Write. Zero means Write.
	Kind cell.Kind
	// Key, if set, reads the key from the request message (unary) or from
	// the first message the client sends (streams; the guard decides when
	// the handler receives it). If nil the key is the cellkit-key metadata.
	// When set it is the only source: the key the handler acts on wins
	// over whatever a router stamped.
	Key KeyFunc
}

// DefaultExempt are method prefixes never guarded: health checks and server
// reflection, which carry no routing key.
var DefaultExempt = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Config says which methods are guarded and how. The zero value guards every
// method (except DefaultExempt) as a write keyed by cellkit-key metadata.
type Config struct {
	// Methods declares methods by full name ("/pkg.Service/Method").
	Methods map[string]Method
	// Default applies to methods neither declared nor exempt. The zero
	// value treats them as writes keyed by cellkit-key metadata, so an
	// undeclared method without a key is refused with NO_KEY.
	Default Method
	// Exempt lists full method names, or service prefixes ending in "/"
	// ("/pkg.Service/"), passed through unguarded, in addition to
	// DefaultExempt.
	Exempt []string
	// OnAdmit, if set, is called when a request is admitted (Record.End is
	// zero); OnRelease when its handler returned, before a write is
	// released to the guard. Both run on the request's goroutine.
	OnAdmit   func(admission.Record)
	OnRelease func(admission.Record)
	// OnDecision, if set, is called once per guarded request with the
	// guard's answer (see guardmetrics.Metrics.Decided).
	OnDecision func(admission.Decision)
	// Clock stamps records. Default the real clock.
	Clock clock.Clock
}

// Validate checks method names and kinds.
func (c Config) Validate() error {
	check := func(name string, m Method) error {
		if m.Kind != 0 && m.Kind != cell.Read && m.Kind != cell.Write {
			return fmt.Errorf("grpcguard: method %s: kind %v (want cell.Read or cell.Write): %w", name, m.Kind, cell.ErrBadConfig)
		}
		return nil
	}
	for name, m := range c.Methods {
		if !validMethod(name) {
			return fmt.Errorf("grpcguard: method %q (want \"/pkg.Service/Method\"): %w", name, cell.ErrBadConfig)
		}
		if err := check(name, m); err != nil {
			return err
		}
	}
	if err := check("default", c.Default); err != nil {
		return err
	}
	for _, e := range c.Exempt {
		if !strings.HasPrefix(e, "/") || len(e) < 2 {
			return fmt.Errorf("grpcguard: exempt %q (want \"/pkg.Service/\" or \"/pkg.Service/Method\"): %w", e, cell.ErrBadConfig)
		}
		if _, ok := c.Methods[e]; ok {
			return fmt.Errorf("grpcguard: method %s is both declared and exempt: %w", e, cell.ErrBadConfig)
		}
	}
	return nil
}

func validMethod(name string) bool {
	svc, m, ok := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	return strings.HasPrefix(name, "/") && ok && svc != "" && m != "" && !strings.Contains(m, "/")
}

// Interceptor guards a gRPC server with a *cell.Guard.
type Interceptor struct {
	g      *cell.Guard
	cfg    Config
	exempt []string
	cellMD metadata.MD
}

// New returns the interceptors for g.
func New(g *cell.Guard, cfg Config) (*Interceptor, error) {
	if g == nil {
		return nil, fmt.Errorf("grpcguard: nil guard: %w", cell.ErrBadConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	return &Interceptor{
		g:      g,
		cfg:    cfg,
		exempt: append(append([]string(nil), DefaultExempt...), cfg.Exempt...),
		cellMD: metadata.Pairs(wire.CellMD, g.Cell()),
	}, nil
}

// ServerOptions returns the unary and stream interceptors as server options,
// for grpc.NewServer(icpt.ServerOptions()...). Put the guard first in any
// chain so that nothing runs for a request the cell must refuse.
func (i *Interceptor) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(i.Unary()), grpc.ChainStreamInterceptor(i.Stream())}
}

// method returns the declaration for a full method name and whether the
// method is guarded at all.
func (i *Interceptor) method(name string) (Method, bool) {
	if m, ok := i.cfg.Methods[name]; ok {
		return withKind(m), true
	}
	for _, e := range i.exempt {
		if name == e || (strings.HasSuffix(e, "/") && strings.HasPrefix(name, e)) {
			return Method{}, false
		}
	}
	return withKind(i.cfg.Default), true
}

func withKind(m Method) Method {
	if m.Kind == 0 {
		m.Kind = cell.Write
	}
	return m
}

// requestEpoch reads cellkit-epoch (0 when absent; the highest when sent
// more than once).
func requestEpoch(md metadata.MD) (uint64, error) {
	var epoch uint64
	for _, v := range md.Get(wire.EpochMD) {
		e, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, status.Errorf(codes.InvalidArgument, "grpcguard: metadata %s %q is not a map epoch (want a decimal number)", wire.EpochMD, v)
		}
		epoch = max(epoch, e)
	}
	return epoch, nil
}

func metadataKey(md metadata.MD) string {
	if vs := md.Get(wire.KeyMD); len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return ""
}

func extract(name string, f KeyFunc, msg any) (string, error) {
	key, err := f(msg)
	if err != nil {
		return "", fmt.Errorf("grpcguard: %s: key from request: %v: %w", name, err, cell.ErrNoKey)
	}
	return key, nil
}

// admit asks the guard, reports the decision and returns the fence context
// the request must be tied to.
func (i *Interceptor) admit(ctx context.Context, name string, m Method, key string, epoch uint64) (cell.Admission, context.Context, error) {
	var fctx context.Context
	if f := i.g.Fence(); f != nil {
		// Taken before the decision: if the fence trips and reopens in
		// between, the request is cancelled rather than missed.
		fctx = f.Context()
	}
	adm, err := i.g.Admit(ctx, key, m.Kind, epoch)
	i.decided(name, m.Kind, key, err)
	return adm, fctx, err
}

func (i *Interceptor) decided(name string, kind cell.Kind, key string, err error) {
	if i.cfg.OnDecision != nil {
		i.cfg.OnDecision(admission.Decision{Cell: i.g.Cell(), Instance: i.g.Instance(), Method: name, Kind: kind, Key: key, Code: cell.CodeOf(err), Err: err})
	}
}

func (i *Interceptor) record(name string, adm cell.Admission) admission.Record {
	r := admission.Record{Cell: i.g.Cell(), Instance: i.g.Instance(), Key: adm.Key, Kind: adm.Kind, Epoch: adm.Epoch, Slot: adm.Slot, Method: name, Start: i.cfg.Clock.Now()}
	if i.cfg.OnAdmit != nil {
		i.cfg.OnAdmit(r)
	}
	return r
}

// finish ends an admitted request: its record's End is stamped before the
// write is released, so a cell that takes the key over afterwards starts
// after it.
func (i *Interceptor) finish(r admission.Record, adm cell.Admission) {
	r.End = i.cfg.Clock.Now()
	adm.Release()
	if i.cfg.OnRelease != nil {
		i.cfg.OnRelease(r)
	}
}

// runContext derives the handler's context: cancelled, with the
// *cell.FencedError as its cause, when the fence trips.
func runContext(parent, fctx context.Context) (context.Context, func()) {
	if fctx == nil {
		return parent, func() {}
	}
	ctx, cancel := context.WithCancelCause(parent)
	stop := context.AfterFunc(fctx, func() { cancel(context.Cause(fctx)) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

// toStatus turns an error from the guard into what goes on the wire:
// refusals through wire.GRPCStatus, a cancelled wait as the context's code.
func toStatus(err error) error {
	if cell.CodeOf(err) != "" {
		return wire.GRPCStatus(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// Unary returns the unary server interceptor.
func (i *Interceptor) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		m, guarded := i.method(info.FullMethod)
		if !guarded {
			return handler(ctx, req)
		}
		md, _ := metadata.FromIncomingContext(ctx)
		epoch, err := requestEpoch(md)
		if err != nil {
			i.decided(info.FullMethod, m.Kind, "", err)
			return nil, err
		}
		key := metadataKey(md)
		if m.Key != nil {
			if key, err = extract(info.FullMethod, m.Key, req); err != nil {
				i.decided(info.FullMethod, m.Kind, "", err)
				_ = grpc.SetTrailer(ctx, i.cellMD)
				return nil, toStatus(err)
			}
		}
		adm, fctx, err := i.admit(ctx, info.FullMethod, m, key, epoch)
		if err != nil {
			_ = grpc.SetTrailer(ctx, i.cellMD)
			return nil, toStatus(err)
		}
		_ = grpc.SetHeader(ctx, i.cellMD)
		hctx, stop := runContext(ctx, fctx)
		defer stop()
		rec := i.record(info.FullMethod, adm)
		defer i.finish(rec, adm)
		return handler(hctx, req)
	}
}

// Stream returns the stream server interceptor. With a Method.Key the
// decision is taken when the handler receives the first message; until then
// the handler may not send (SendMsg fails with FailedPrecondition).
func (i *Interceptor) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		m, guarded := i.method(info.FullMethod)
		if !guarded {
			return handler(srv, ss)
		}
		md, _ := metadata.FromIncomingContext(ss.Context())
		epoch, err := requestEpoch(md)
		if err != nil {
			i.decided(info.FullMethod, m.Kind, "", err)
			return err
		}
		if m.Key != nil {
			gs := &firstMessageStream{ServerStream: ss, i: i, name: info.FullMethod, m: m, epoch: epoch}
			gs.ctx, gs.cancel = context.WithCancelCause(ss.Context())
			defer gs.end()
			return handler(srv, gs)
		}
		adm, fctx, err := i.admit(ss.Context(), info.FullMethod, m, metadataKey(md), epoch)
		if err != nil {
			ss.SetTrailer(i.cellMD)
			return toStatus(err)
		}
		_ = ss.SetHeader(i.cellMD)
		hctx, stop := runContext(ss.Context(), fctx)
		defer stop()
		rec := i.record(info.FullMethod, adm)
		defer i.finish(rec, adm)
		return handler(srv, &ctxStream{ServerStream: ss, ctx: hctx})
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// firstMessageStream admits the stream when its first message arrives.
type firstMessageStream struct {
	grpc.ServerStream
	i      *Interceptor
	name   string
	m      Method
	epoch  uint64
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	decided  bool
	refusal  error
	admitted bool
	adm      cell.Admission
	rec      admission.Record
	stopFn   func() bool
}

func (s *firstMessageStream) Context() context.Context { return s.ctx }

func (s *firstMessageStream) RecvMsg(msg any) error {
	s.mu.Lock()
	if s.decided {
		err := s.refusal
		s.mu.Unlock()
		if err != nil {
			return err
		}
		return s.ServerStream.RecvMsg(msg)
	}
	s.mu.Unlock()

	err := s.ServerStream.RecvMsg(msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.decided { // a concurrent RecvMsg decided meanwhile
		return err
	}
	s.decided = true
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("grpcguard: %s: the stream ended before its first message, which carries the key: %w", s.name, cell.ErrNoKey)
			s.i.decided(s.name, s.m.Kind, "", err)
			s.refusal = toStatus(err)
			return s.refusal
		}
		s.refusal = err
		return err
	}
	key, kerr := extract(s.name, s.m.Key, msg)
	if kerr == nil {
		var fctx context.Context
		s.adm, fctx, kerr = s.i.admit(s.ctx, s.name, s.m, key, s.epoch)
		if kerr == nil {
			if fctx != nil {
				s.stopFn = context.AfterFunc(fctx, func() { s.cancel(context.Cause(fctx)) })
			}
			_ = s.ServerStream.SetHeader(s.i.cellMD)
			s.admitted = true
			s.rec = s.i.record(s.name, s.adm)
			return nil
		}
	} else {
		s.i.decided(s.name, s.m.Kind, "", kerr)
	}
	s.ServerStream.SetTrailer(s.i.cellMD)
	s.refusal = toStatus(kerr)
	return s.refusal
}

func (s *firstMessageStream) SendMsg(msg any) error {
	s.mu.Lock()
	ok, refusal := s.admitted, s.refusal
	s.mu.Unlock()
	if refusal != nil {
		return refusal
	}
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "grpcguard: %s: the handler sent before receiving the first message, which the guard needs for the key", s.name)
	}
	return s.ServerStream.SendMsg(msg)
}

func (s *firstMessageStream) end() {
	s.mu.Lock()
	admitted, stop := s.admitted, s.stopFn
	s.decided = true
	s.mu.Unlock()
	if admitted {
		s.i.finish(s.rec, s.adm)
	}
	if stop != nil {
		stop()
	}
	s.cancel(context.Canceled)
}
