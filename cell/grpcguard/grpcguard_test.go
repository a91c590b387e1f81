package grpcguard_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
	"github.com/cellkit/cellkit/internal/testsvc"
	"github.com/cellkit/cellkit/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 20 * time.Second

// table is a sealed 256-slot map at epoch: a1 (IDC-A) owns 0-127, b1
// (IDC-B) 128-255, then edit.
func table(t *testing.T, epoch uint64, edit func(*router.Table)) *router.Table {
	t.Helper()
	tb, err := router.NewTable(256)
	must(t, err)
	must(t, tb.AddCell(router.Cell{ID: "a1", IDC: "IDC-A"}))
	must(t, tb.AddCell(router.Cell{ID: "b1", IDC: "IDC-B"}))
	must(t, tb.Assign(router.SlotRange{First: 0, Last: 127}, "a1"))
	must(t, tb.Assign(router.SlotRange{First: 128, Last: 255}, "b1"))
	if edit != nil {
		edit(tb)
	}
	tb.SetEpoch(epoch)
	must(t, tb.Validate())
	return tb.Seal()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// keyIn returns a key whose slot (256 slots) is s.
func keyIn(s int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("user-%d", i); router.Slot(k, 256) == s {
			return k
		}
	}
}

var (
	ownKey    = keyIn(5)   // a1's
	otherKey  = keyIn(200) // b1's
	frozenKey = keyIn(7)   // a1's, frozen at epoch 2 below
)

// harness is a guarded testsvc on loopback, guarded as cell a1.
type harness struct {
	guard  *cell.Guard
	fence  *cell.Fence
	log    admission.Log
	client *testsvc.Client
	cc     *grpc.ClientConn

	mu        sync.Mutex
	decisions []admission.Decision
}

func (h *harness) Decisions() []admission.Decision {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]admission.Decision(nil), h.decisions...)
}

func newGuard(t *testing.T) (*cell.Guard, *cell.Fence) {
	t.Helper()
	f := cell.NewFence(clock.Real(), 100*time.Millisecond, "a1", "a1-0")
	must(t, f.Resume(time.Now(), time.Hour))
	g, err := cell.NewGuard(cell.Config{Cell: "a1", Instance: "a1-0", StaleWait: 300 * time.Millisecond, FrozenRetryAfter: 250 * time.Millisecond}, table(t, 1, nil), f)
	must(t, err)
	return g, f
}

func start(t *testing.T, cfg grpcguard.Config, after ...grpc.UnaryServerInterceptor) *harness {
	t.Helper()
	h := &harness{}
	h.guard, h.fence = newGuard(t)
	cfg.OnAdmit, cfg.OnRelease = h.log.Admitted, h.log.Released
	cfg.OnDecision = func(d admission.Decision) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.decisions = append(h.decisions, d)
	}
	icpt, err := grpcguard.New(h.guard, cfg)
	must(t, err)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{icpt.Unary()}, after...)...), grpc.ChainStreamInterceptor(icpt.Stream()))
	testsvc.NewServer("a1").Register(srv)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	h.cc, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() {
		h.cc.Close()
		srv.Stop()
		<-served
	})
	h.client = testsvc.NewClient(h.cc)
	return h
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// withMD adds cellkit metadata (key, then epoch when not "").
func withMD(ctx context.Context, key, epoch string) context.Context {
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, wire.KeyMD, key)
	}
	if epoch != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, wire.EpochMD, epoch)
	}
	return ctx
}

func TestOwnerAdmitted(t *testing.T) {
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{
		testsvc.CreditMethod:  {Kind: cell.Write},
		testsvc.BalanceMethod: {Kind: cell.Read},
	}})
	var hdr metadata.MD
	e, err := h.client.Credit(withMD(ctxT(t), ownKey, "1"), ownKey, 5, "r1", grpc.Header(&hdr))
	must(t, err)
	if e.Cell != "a1" || e.Balance != 5 {
		t.Fatalf("credit: %+v", e)
	}
	if got := hdr.Get(wire.CellMD); len(got) != 1 || got[0] != "a1" {
		t.Fatalf("header %s = %v, want a1", wire.CellMD, got)
	}
	if _, _, err := h.client.Balance(withMD(ctxT(t), ownKey, ""), ownKey); err != nil {
		t.Fatal(err)
	}
	rs := h.log.Records()
	if len(rs) != 2 {
		t.Fatalf("records %v, want 2", rs)
	}
	w, r := rs[0], rs[1]
	if w.Kind != cell.Write || w.Key != ownKey || w.Epoch != 1 || w.Slot != 5 || w.Method != testsvc.CreditMethod || w.Cell != "a1" || w.Instance != "a1-0" || w.End.Before(w.Start) {
		t.Errorf("write record %+v", w)
	}
	if r.Kind != cell.Read || r.Method != testsvc.BalanceMethod {
		t.Errorf("read record %+v", r)
	}
	if h.guard.InFlight() != 0 {
		t.Errorf("in flight %d after the calls returned", h.guard.InFlight())
	}
	for _, d := range h.Decisions() {
		if d.Outcome() != "admitted" {
			t.Errorf("decision %+v", d)
		}
	}
}

func TestRefusals(t *testing.T) {
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {Kind: cell.Write}}})
	h.guard.Apply(table(t, 2, func(tb *router.Table) { must(t, tb.Freeze(router.SlotRange{First: 7, Last: 7}, "c1")) }))

	for _, tc := range []struct {
		name      string
		key       string
		epoch     string
		grpcCode  codes.Code
		guardCode cell.Code
		check     func(t *testing.T, err error)
	}{
		{"wrong cell", otherKey, "", codes.FailedPrecondition, cell.CodeWrongCell, func(t *testing.T, err error) {
			var wc *cell.WrongCellError
			if !errors.As(err, &wc) || wc.Owner != "b1" || wc.OwnerIDC != "IDC-B" || wc.Epoch != 2 || wc.Cell != "a1" || wc.Key != otherKey {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"frozen", frozenKey, "2", codes.Unavailable, cell.CodeFrozen, func(t *testing.T, err error) {
			var fz *cell.FrozenError
			if !errors.As(err, &fz) || fz.RetryAfter != 250*time.Millisecond || fz.Slot != 7 || fz.Cutover != "c1" || fz.Epoch != 2 {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"no key", "", "", codes.InvalidArgument, cell.CodeNoKey, func(t *testing.T, err error) {
			if !errors.Is(err, cell.ErrNoKey) {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"stale map", ownKey, "9", codes.Unavailable, cell.CodeStaleMap, func(t *testing.T, err error) {
			var sm *cell.StaleMapError
			if !errors.As(err, &sm) || sm.Have != 2 || sm.Want != 9 || sm.RetryAfter <= 0 {
				t.Errorf("decoded %#v", err)
			}
		}},
		{"malformed epoch", ownKey, "seven", codes.InvalidArgument, "", func(t *testing.T, err error) {
			if s, _ := status.FromError(err); s.Message() == "" {
				t.Errorf("no message: %v", err)
			}
			t.Log(err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var trl metadata.MD
			_, err := h.client.Credit(withMD(ctxT(t), tc.key, tc.epoch), frozenOr(tc.key), 1, "r-"+tc.name, grpc.Trailer(&trl))
			if status.Code(err) != tc.grpcCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.grpcCode)
			}
			dec := wire.FromGRPC(err)
			if got := cell.CodeOf(dec); got != tc.guardCode {
				t.Fatalf("guard code %q (%v), want %q", got, dec, tc.guardCode)
			}
			tc.check(t, dec)
			if tc.guardCode != "" {
				if got := trl.Get(wire.CellMD); len(got) != 1 || got[0] != "a1" {
					t.Errorf("trailer %s = %v, want a1", wire.CellMD, got)
				}
			}
		})
	}
	if rs := h.log.Records(); len(rs) != 0 {
		t.Errorf("refused calls left records: %v", rs)
	}
	outcomes := map[string]int{}
	for _, d := range h.Decisions() {
		outcomes[d.Outcome()]++
	}
	want := map[string]int{"WRONG_CELL": 1, "FROZEN": 1, "NO_KEY": 1, "STALE_MAP": 1, "error": 1}
	if fmt.Sprint(outcomes) != fmt.Sprint(want) {
		t.Errorf("decision outcomes %v, want %v", outcomes, want)
	}
}

// frozenOr returns key, or some key for the message when the test sends none
// in metadata (the message key is not read without an extractor).
func frozenOr(key string) string {
	if key == "" {
		return ownKey
	}
	return key
}

func TestNewerEpochWaitsForTheGuard(t *testing.T) {
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {Kind: cell.Write}}})
	errc := make(chan error, 1)
	ctx := withMD(ctxT(t), ownKey, "2")
	go func() {
		_, err := h.client.Credit(ctx, ownKey, 1, "r1")
		errc <- err
	}()
	// Whether the call is already waiting or not yet sent, epoch 2 arriving
	// within StaleWait admits it, under epoch 2.
	h.guard.Apply(table(t, 2, nil))
	must(t, <-errc)
	if rs := h.log.Records(); len(rs) != 1 || rs[0].Epoch != 2 {
		t.Fatalf("records %v, want one at epoch 2", rs)
	}
}

func structKey(msg any) (string, error) {
	s, ok := msg.(*structpb.Struct)
	if !ok {
		return "", fmt.Errorf("message %T is not a Struct", msg)
	}
	return s.GetFields()["key"].GetStringValue(), nil
}

func TestKeyFromMessage(t *testing.T) {
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {Kind: cell.Write, Key: structKey}}})
	// No metadata at all: the key is the message's.
	if _, err := h.client.Credit(ctxT(t), ownKey, 1, "r1"); err != nil {
		t.Fatal(err)
	}
	// The message's key wins over a forged or stale metadata key.
	if _, err := h.client.Credit(withMD(ctxT(t), otherKey, ""), ownKey, 1, "r2"); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Credit(withMD(ctxT(t), ownKey, ""), otherKey, 1, "r3")
	var wc *cell.WrongCellError
	if !errors.As(wire.FromGRPC(err), &wc) || wc.Owner != "b1" {
		t.Fatalf("credit for b1's key at a1: %v, want WRONG_CELL", err)
	}
	_, err = h.client.Credit(ctxT(t), "", 1, "r4")
	if !errors.Is(wire.FromGRPC(err), cell.ErrNoKey) {
		t.Fatalf("empty message key: %v, want NO_KEY", err)
	}
	rs := h.log.Records()
	if len(rs) != 2 || rs[0].Key != ownKey || rs[1].Key != ownKey {
		t.Fatalf("records %v", rs)
	}
}

func TestStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    grpcguard.Method
		md   bool // key in metadata (else only in the message)
	}{
		{"key from metadata", grpcguard.Method{Kind: cell.Read}, true},
		{"key from first message", grpcguard.Method{Kind: cell.Read, Key: structKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{
				testsvc.StatementMethod: tc.m,
				testsvc.CreditMethod:    {Kind: cell.Write},
			}})
			for i := range 3 {
				_, err := h.client.Credit(withMD(ctxT(t), ownKey, ""), ownKey, 1, fmt.Sprint("r", i))
				must(t, err)
			}
			ctx := ctxT(t)
			if tc.md {
				ctx = withMD(ctx, ownKey, "1")
			}
			entries, err := h.client.Statement(ctx, ownKey)
			must(t, err)
			if len(entries) != 3 {
				t.Fatalf("statement %v, want 3 entries", entries)
			}
			ctx = ctxT(t)
			if tc.md {
				ctx = withMD(ctx, otherKey, "")
			}
			_, err = h.client.Statement(ctx, otherKey)
			var wc *cell.WrongCellError
			if !errors.As(wire.FromGRPC(err), &wc) || wc.Owner != "b1" {
				t.Fatalf("statement of b1's key: %v, want WRONG_CELL", err)
			}
			var reads []admission.Record
			for _, r := range h.log.Records() {
				if r.Method == testsvc.StatementMethod {
					reads = append(reads, r)
				}
			}
			if len(reads) != 1 || reads[0].Kind != cell.Read || reads[0].Key != ownKey || reads[0].Epoch != 1 || reads[0].End.IsZero() {
				t.Fatalf("stream records %v", reads)
			}
		})
	}
}

func TestDefaultPolicyAndExempt(t *testing.T) {
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {Kind: cell.Write}}})
	// Balance is not declared: a write that needs a key.
	_, _, err := h.client.Balance(ctxT(t), ownKey)
	if !errors.Is(wire.FromGRPC(err), cell.ErrNoKey) {
		t.Fatalf("undeclared method without key: %v, want NO_KEY", err)
	}
	_, _, err = h.client.Balance(withMD(ctxT(t), ownKey, ""), ownKey)
	must(t, err)
	if rs := h.log.Records(); len(rs) != 1 || rs[0].Kind != cell.Write || rs[0].Method != testsvc.BalanceMethod {
		t.Fatalf("records %v, want Balance as a write", rs)
	}
	// Health checks are exempt.
	resp, err := healthpb.NewHealthClient(h.cc).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", resp, err)
	}

	h2 := start(t, grpcguard.Config{Exempt: []string{testsvc.BalanceMethod}})
	if _, _, err := h2.client.Balance(ctxT(t), ownKey); err != nil {
		t.Fatalf("exempt method: %v", err)
	}
	if _, err := h2.client.Credit(ctxT(t), ownKey, 1, "r1"); !errors.Is(wire.FromGRPC(err), cell.ErrNoKey) {
		t.Fatalf("default policy for Credit: %v, want NO_KEY", err)
	}
}

func TestFenceCancelsRunningRequest(t *testing.T) {
	entered := make(chan struct{})
	causes := make(chan error, 1)
	hold := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if req.(*structpb.Struct).GetFields()["requestId"].GetStringValue() == "hold" {
			close(entered)
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return handler(ctx, req)
	}
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {Kind: cell.Write}}}, hold)
	errc := make(chan error, 1)
	ctx := withMD(ctxT(t), ownKey, "")
	go func() {
		_, err := h.client.Credit(ctx, ownKey, 1, "hold")
		errc <- err
	}()
	<-entered
	if n := h.guard.InFlight(); n != 1 {
		t.Fatalf("in flight %d, want 1", n)
	}
	h.fence.Trip("test: lease lost")
	var fe *cell.FencedError
	if cause := <-causes; !errors.As(cause, &fe) || fe.Reason != "test: lease lost" {
		t.Fatalf("handler context cause %v, want the FencedError", cause)
	}
	if err := <-errc; err == nil {
		t.Fatal("held call succeeded")
	}
	if n := h.guard.InFlight(); n != 0 {
		t.Fatalf("in flight %d after the handler returned", n)
	}
	_, err := h.client.Credit(withMD(ctxT(t), ownKey, ""), ownKey, 1, "after")
	if status.Code(err) != codes.Unavailable || !errors.Is(wire.FromGRPC(err), cell.ErrFenced) {
		t.Fatalf("after the fence tripped: %v, want FENCED", err)
	}
	if rs := h.log.Records(); len(rs) != 1 || rs[0].End.IsZero() {
		t.Fatalf("records %v, want the held call, ended", rs)
	}
}

func TestConfigValidate(t *testing.T) {
	g, _ := newGuard(t)
	for name, cfg := range map[string]grpcguard.Config{
		"bad method name": {Methods: map[string]grpcguard.Method{"Credit": {}}},
		"bad kind":        {Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {Kind: 9}}},
		"bad exempt":      {Exempt: []string{"grpc.health.v1.Health"}},
		"declared exempt": {Methods: map[string]grpcguard.Method{testsvc.CreditMethod: {}}, Exempt: []string{testsvc.CreditMethod}},
	} {
		if _, err := grpcguard.New(g, cfg); !errors.Is(err, cell.ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", name, err)
		}
	}
	if _, err := grpcguard.New(nil, grpcguard.Config{}); err == nil {
		t.Error("nil guard accepted")
	}
}

func TestStreamWithoutFirstMessage(t *testing.T) {
	h := start(t, grpcguard.Config{Methods: map[string]grpcguard.Method{testsvc.StatementMethod: {Kind: cell.Read, Key: structKey}}})
	stream, err := h.cc.NewStream(ctxT(t), &testsvc.ServiceDesc.Streams[0], testsvc.StatementMethod)
	must(t, err)
	must(t, stream.CloseSend())
	// For this server-streaming method gRPC itself refuses (Internal,
	// cardinality); a client-streaming one would get NO_KEY from the guard.
	// Either way the handler is never admitted.
	if err = stream.RecvMsg(new(structpb.Struct)); err == nil {
		t.Fatal("stream without a first message succeeded")
	}
	t.Log(err)
	for _, d := range h.Decisions() {
		if d.Err == nil {
			t.Fatalf("admitted: %+v", d)
		}
	}
	if rs := h.log.Records(); len(rs) != 0 {
		t.Fatalf("records %v", rs)
	}
}
