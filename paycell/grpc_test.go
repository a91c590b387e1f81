package paycell_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/paycell"
)

// serveGRPC serves svc's gRPC API behind guard and returns a connection.
func serveGRPC(t *testing.T, guard *cell.Guard, svc *paycell.Service, log *admission.Log) *grpc.ClientConn {
	t.Helper()
	icpt, err := grpcguard.New(guard, paycell.GRPCGuardConfig(log.Admitted, log.Released))
	must(t, err)
	srv := grpc.NewServer(icpt.ServerOptions()...)
	svc.RegisterGRPC(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { cc.Close(); srv.Stop(); <-done })
	return cc
}

func invoke(ctx context.Context, cc *grpc.ClientConn, method string, in map[string]any) (map[string]any, error) {
	req, err := structpb.NewStruct(in)
	if err != nil {
		return nil, err
	}
	out := new(structpb.Struct)
	if err := cc.Invoke(ctx, method, req, out); err != nil {
		return nil, err
	}
	return out.AsMap(), nil
}

// reason is the paycell ErrorInfo reason of a gRPC error.
func reason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == paycell.ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

func TestGRPC(t *testing.T) {
	c := newCluster(t, "a1")
	svc, _ := newService(t, dialects[0])
	var log admission.Log
	cc := serveGRPC(t, c.inst["a1"].Guard(), svc, &log)
	ctx := ctxT(t)
	mine, theirs := usersIn(2, 0, 511), usersIn(1, 512, 1023)[0]
	u, nobody := mine[0], mine[1]

	step := func(method string, in map[string]any) map[string]any {
		t.Helper()
		out, err := invoke(ctx, cc, method, in)
		if err != nil {
			t.Fatalf("%s %v: %v", method, in, err)
		}
		if out["cell"] != "a1" {
			t.Fatalf("%s: reply %v has no cell a1", method, out)
		}
		return out
	}
	step(paycell.MethodOpenAccount, map[string]any{"owner": u, "requestId": "open"})
	top := step(paycell.MethodTopUp, map[string]any{"owner": u, "requestId": "t1", "amount": 100})
	step(paycell.MethodBankCallback, map[string]any{"opId": top["opId"], "status": "succeeded"})
	o := step(paycell.MethodCreateOrder, map[string]any{"owner": u, "requestId": "o1", "merchant": "m1", "amount": 60})
	p := step(paycell.MethodPay, map[string]any{"orderId": o["orderId"], "requestId": "p1"})
	if p["balance"] != float64(40) || p["status"] != "paid" {
		t.Fatalf("pay reply %v", p)
	}
	step(paycell.MethodRefund, map[string]any{"orderId": o["orderId"], "requestId": "f1", "amount": 10})
	if g := step(paycell.MethodGetOrder, map[string]any{"orderId": o["orderId"]}); g["refunded"] != float64(10) {
		t.Fatalf("order %v", g)
	}
	if b := step(paycell.MethodBalance, map[string]any{"owner": u}); b["balance"] != float64(50) {
		t.Fatalf("balance %v", b)
	}
	if st := step(paycell.MethodStatement, map[string]any{"owner": u, "limit": 2}); len(st["entries"].([]any)) != 2 {
		t.Fatalf("statement %v", st)
	}
	w := step(paycell.MethodWithdraw, map[string]any{"owner": u, "requestId": "w1", "amount": 50})
	if w["balance"] != float64(0) {
		t.Fatalf("withdraw %v", w)
	}

	for _, tc := range []struct {
		name   string
		method string
		in     map[string]any
		code   codes.Code
		reason paycell.Code
	}{
		{"insufficient funds", paycell.MethodWithdraw, map[string]any{"owner": u, "requestId": "w2", "amount": 1}, codes.FailedPrecondition, paycell.CodeInsufficientFunds},
		{"reused requestId", paycell.MethodWithdraw, map[string]any{"owner": u, "requestId": "w1", "amount": 2}, codes.Aborted, paycell.CodeConflict},
		{"unknown account", paycell.MethodBalance, map[string]any{"owner": nobody}, codes.NotFound, paycell.CodeNotFound},
		{"amount as a string", paycell.MethodTopUp, map[string]any{"owner": u, "requestId": "t2", "amount": "5"}, codes.InvalidArgument, paycell.CodeBadRequest},
		{"fractional amount", paycell.MethodTopUp, map[string]any{"owner": u, "requestId": "t2", "amount": 5.5}, codes.InvalidArgument, paycell.CodeBadRequest},
		{"owner as a number", paycell.MethodTopUp, map[string]any{"owner": 5, "requestId": "t2", "amount": 5}, codes.InvalidArgument, ""},
	} {
		_, err := invoke(ctx, cc, tc.method, tc.in)
		if status.Code(err) != tc.code || reason(err) != string(tc.reason) {
			t.Errorf("%s: %v (reason %q), want %v %s", tc.name, err, reason(err), tc.code, tc.reason)
		}
	}

	// The guard refuses another cell's key, by owner and by order ID.
	_, err := invoke(ctx, cc, paycell.MethodOpenAccount, map[string]any{"owner": theirs, "requestId": "x"})
	var wc *cell.WrongCellError
	if !errors.As(wire.FromGRPC(err), &wc) || wc.Owner != "b1" {
		t.Fatalf("open for %s at a1: %v, want WRONG_CELL owner b1", theirs, err)
	}
	if _, err := svc.Balance(ctx, theirs); !errors.Is(err, paycell.ErrNotFound) {
		t.Fatalf("refused open wrote an account: %v", err)
	}
	if c := log.Conflicts(); len(c) > 0 || log.Running() != 0 {
		t.Fatalf("admission log: %v, %d running", c, log.Running())
	}
	checkBooks(t, svc)
}
