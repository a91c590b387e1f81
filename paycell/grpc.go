package paycell

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/grpcguard"
)

// GRPCServiceName is the gRPC service. Its messages are
// google.protobuf.Struct with the fields of the HTTP API's JSON (requests
// carry the path's owner, orderId or opId as a field too); amounts are
// numbers holding whole minor units.
const GRPCServiceName = "cellkit.paycell.v1.PayCell"

// Full gRPC method names.
const (
	MethodOpenAccount  = "/" + GRPCServiceName + "/OpenAccount"
	MethodBalance      = "/" + GRPCServiceName + "/Balance"
	MethodStatement    = "/" + GRPCServiceName + "/Statement"
	MethodCreateOrder  = "/" + GRPCServiceName + "/CreateOrder"
	MethodGetOrder     = "/" + GRPCServiceName + "/GetOrder"
	MethodPay          = "/" + GRPCServiceName + "/Pay"
	MethodRefund       = "/" + GRPCServiceName + "/Refund"
	MethodTopUp        = "/" + GRPCServiceName + "/TopUp"
	MethodWithdraw     = "/" + GRPCServiceName + "/Withdraw"
	MethodBankCallback = "/" + GRPCServiceName + "/BankCallback"
)

// grpcMethod is one method: how the guard sees it and how it is served.
type grpcMethod struct {
	name  string // short name, e.g. "Pay"
	kind  cell.Kind
	key   string // the request field that holds the routing key
	serve func(ctx context.Context, s *Service, f fields) (any, error)
}

var grpcMethods = []grpcMethod{
	{"OpenAccount", cell.Write, "owner", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.OpenAccount(ctx, OpenRequest{Owner: f.str("owner"), RequestID: f.str("requestId")})
	}},
	{"Balance", cell.Read, "owner", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.Balance(ctx, f.str("owner"))
	}},
	{"Statement", cell.Read, "owner", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.Statement(ctx, f.str("owner"), int(f.int("limit")))
	}},
	{"CreateOrder", cell.Write, "owner", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.CreateOrder(ctx, CreateOrderRequest{Owner: f.str("owner"), RequestID: f.str("requestId"), Merchant: f.str("merchant"), Amount: f.int("amount")})
	}},
	{"GetOrder", cell.Read, "orderId", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.Order(ctx, f.str("orderId"))
	}},
	{"Pay", cell.Write, "orderId", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.Pay(ctx, PayRequest{OrderID: f.str("orderId"), RequestID: f.str("requestId")})
	}},
	{"Refund", cell.Write, "orderId", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.Refund(ctx, RefundRequest{OrderID: f.str("orderId"), RequestID: f.str("requestId"), Amount: f.int("amount")})
	}},
	{"TopUp", cell.Write, "owner", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.TopUp(ctx, BankRequest{Owner: f.str("owner"), RequestID: f.str("requestId"), Amount: f.int("amount")})
	}},
	{"Withdraw", cell.Write, "owner", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.Withdraw(ctx, BankRequest{Owner: f.str("owner"), RequestID: f.str("requestId"), Amount: f.int("amount")})
	}},
	{"BankCallback", cell.Write, "opId", func(ctx context.Context, s *Service, f fields) (any, error) {
		return s.BankCallback(ctx, CallbackRequest{OpID: f.str("opId"), Status: f.str("status"), BankRef: f.str("bankRef")})
	}},
}

// fields reads a request Struct; the first field of the wrong type is
// kept in err and makes the request a bad one.
type fields struct {
	m   map[string]*structpb.Value
	err *error
}

func (f fields) fail(format string, args ...any) {
	if *f.err == nil {
		*f.err = badRequest(format, args...)
	}
}

func (f fields) str(name string) string {
	v, ok := f.m[name]
	if !ok {
		return ""
	}
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		f.fail("field %q: want a string", name)
		return ""
	}
	return s.StringValue
}

func (f fields) int(name string) int64 {
	v, ok := f.m[name]
	if !ok {
		return 0
	}
	n, ok := v.GetKind().(*structpb.Value_NumberValue)
	if !ok {
		f.fail("field %q: want a number", name)
		return 0
	}
	x := n.NumberValue
	if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
		f.fail("field %q: %v is not a whole number of minor units", name, x)
		return 0
	}
	return int64(x)
}

// payCellServer is what the ServiceDesc dispatches to.
type payCellServer interface {
	Cell() string
}

func (m grpcMethod) full() string { return "/" + GRPCServiceName + "/" + m.name }

func (m grpcMethod) handle(ctx context.Context, s *Service, in *structpb.Struct) (*structpb.Struct, error) {
	var ferr error
	f := fields{m: in.GetFields(), err: &ferr}
	out, err := m.serve(ctx, s, f)
	if ferr != nil {
		// A field of the wrong type wins: the service saw a zero value.
		err = ferr
	}
	if err != nil {
		return nil, GRPCStatus(err).Err()
	}
	return toStruct(out)
}

// toStruct converts a reply through its JSON form, so gRPC and HTTP
// replies have the same fields.
func toStruct(v any) (*structpb.Struct, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, GRPCStatus(fmt.Errorf("paycell: encode reply: %w", err)).Err()
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, GRPCStatus(fmt.Errorf("paycell: encode reply: %w", err)).Err()
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		return nil, GRPCStatus(fmt.Errorf("paycell: encode reply: %w", err)).Err()
	}
	return st, nil
}

// GRPCServiceDesc describes the PayCell service, as protoc-gen-go-grpc
// would; the server it is registered with must be a *Service.
var GRPCServiceDesc = func() grpc.ServiceDesc {
	d := grpc.ServiceDesc{ServiceName: GRPCServiceName, HandlerType: (*payCellServer)(nil), Metadata: "paycell"}
	for _, m := range grpcMethods {
		full := m.full()
		d.Methods = append(d.Methods, grpc.MethodDesc{MethodName: m.name, Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(structpb.Struct)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				return m.handle(ctx, srv.(*Service), req.(*structpb.Struct))
			}
			if interceptor == nil {
				return h(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
		}})
	}
	return d
}()

// RegisterGRPC adds the PayCell service to a gRPC server. Guard the server:
// grpc.NewServer(icpt.ServerOptions()...) with grpcguard.New(guard,
// GRPCGuardConfig(...)).
func (s *Service) RegisterGRPC(r grpc.ServiceRegistrar) { r.RegisterService(&GRPCServiceDesc, s) }

// GRPCGuardConfig is the cell guard's configuration for the PayCell
// service: each method with its kind and the request field that holds its
// routing key (owner, orderId or opId). onAdmit and onRelease may be nil.
func GRPCGuardConfig(onAdmit, onRelease func(admission.Record)) grpcguard.Config {
	cfg := grpcguard.Config{Methods: map[string]grpcguard.Method{}, OnAdmit: onAdmit, OnRelease: onRelease}
	for _, m := range grpcMethods {
		field := m.key
		cfg.Methods[m.full()] = grpcguard.Method{Kind: m.kind, Key: func(msg any) (string, error) {
			st, ok := msg.(*structpb.Struct)
			if !ok {
				return "", fmt.Errorf("request is a %T, want *structpb.Struct", msg)
			}
			k := st.GetFields()[field].GetStringValue()
			if k == "" {
				return "", fmt.Errorf("request has no string field %q", field)
			}
			return k, nil
		}}
	}
	return cfg
}
