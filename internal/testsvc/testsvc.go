package testsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Full method names.
const (
	ServiceName      = "cellkit.testsvc.v1.Ledger"
	CreditMethod     = "/" + ServiceName + "/Credit"
	BalanceMethod    = "/" + ServiceName + "/Balance"
	StatementMethod  = "/" + ServiceName + "/Statement"
	HTTPCreditPrefix = "/v1/credit/"
	HTTPBalancePrefx = "/v1/balance/"
)

// Entry is one credit.
type Entry struct {
	Key       string  `json:"key"`
	Amount    float64 `json:"amount"`
	RequestID string  `json:"requestId"`
	Balance   float64 `json:"balance"`
	Cell      string  `json:"cell"`
}

// Server holds the books of one cell instance.
type Server struct {
	// Cell is reported in replies, so tests see who served them.
	Cell string

	mu       sync.Mutex
	balances map[string]float64
	entries  map[string][]Entry
	byReq    map[string]Entry
}

// NewServer returns empty books for cell.
func NewServer(cell string) *Server {
	return &Server{Cell: cell, balances: map[string]float64{}, entries: map[string][]Entry{}, byReq: map[string]Entry{}}
}

// Credit adds amount to key's balance once per requestID.
func (s *Server) Credit(key string, amount float64, requestID string) (Entry, error) {
	if key == "" || requestID == "" {
		return Entry{}, fmt.Errorf("testsvc: credit needs key and requestId")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byReq[requestID]; ok {
		return e, nil
	}
	s.balances[key] += amount
	e := Entry{Key: key, Amount: amount, RequestID: requestID, Balance: s.balances[key], Cell: s.Cell}
	s.entries[key] = append(s.entries[key], e)
	s.byReq[requestID] = e
	return e, nil
}

// Balance returns key's balance.
func (s *Server) Balance(key string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.balances[key]
}

// Entries returns key's credits in order.
func (s *Server) Entries(key string) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Entry(nil), s.entries[key]...)
}

// Requests returns every request ID this server applied.
func (s *Server) Requests() map[string]Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Entry, len(s.byReq))
	for k, v := range s.byReq {
		out[k] = v
	}
	return out
}

// --- gRPC ---

// LedgerServer is what ServiceDesc dispatches to (as generated code would).
type LedgerServer interface {
	credit(context.Context, *structpb.Struct) (*structpb.Struct, error)
	balance(context.Context, *structpb.Struct) (*structpb.Struct, error)
	statement(*structpb.Struct, grpc.ServerStream) error
}

// Register adds the Ledger service to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) { g.RegisterService(&ServiceDesc, s) }

func (s *Server) credit(_ context.Context, in *structpb.Struct) (*structpb.Struct, error) {
	f := in.GetFields()
	e, err := s.Credit(f["key"].GetStringValue(), f["amount"].GetNumberValue(), f["requestId"].GetStringValue())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return structpb.NewStruct(map[string]any{"key": e.Key, "balance": e.Balance, "cell": e.Cell, "requestId": e.RequestID})
}

func (s *Server) balance(_ context.Context, in *structpb.Struct) (*structpb.Struct, error) {
	key := in.GetFields()["key"].GetStringValue()
	return structpb.NewStruct(map[string]any{"key": key, "balance": s.Balance(key), "cell": s.Cell})
}

func (s *Server) statement(in *structpb.Struct, stream grpc.ServerStream) error {
	key := in.GetFields()["key"].GetStringValue()
	for _, e := range s.Entries(key) {
		m, err := structpb.NewStruct(map[string]any{"key": e.Key, "amount": e.Amount, "requestId": e.RequestID, "cell": e.Cell})
		if err != nil {
			return err
		}
		if err := stream.SendMsg(m); err != nil {
			return err
		}
	}
	return nil
}

func unaryHandler(method string, call func(LedgerServer, context.Context, *structpb.Struct) (*structpb.Struct, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(structpb.Struct)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return call(srv.(LedgerServer), ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return call(srv.(LedgerServer), ctx, req.(*structpb.Struct))
		})
	}
}

// ServiceDesc describes the Ledger service, as protoc-gen-go-grpc would.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*LedgerServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Credit", Handler: unaryHandler(CreditMethod, LedgerServer.credit)},
		{MethodName: "Balance", Handler: unaryHandler(BalanceMethod, LedgerServer.balance)},
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Statement",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(structpb.Struct)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(LedgerServer).statement(in, stream)
		},
	}},
}

// Client calls the Ledger service like a generated stub.
type Client struct{ cc grpc.ClientConnInterface }

// NewClient wraps a connection.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// Credit adds amount to key's balance, idempotent by requestID.
func (c *Client) Credit(ctx context.Context, key string, amount float64, requestID string, opts ...grpc.CallOption) (Entry, error) {
	in, _ := structpb.NewStruct(map[string]any{"key": key, "amount": amount, "requestId": requestID})
	out := new(structpb.Struct)
	if err := c.cc.Invoke(ctx, CreditMethod, in, out, opts...); err != nil {
		return Entry{}, err
	}
	f := out.GetFields()
	return Entry{Key: key, Amount: amount, RequestID: requestID, Balance: f["balance"].GetNumberValue(), Cell: f["cell"].GetStringValue()}, nil
}

// Balance reads key's balance and the cell that served it.
func (c *Client) Balance(ctx context.Context, key string, opts ...grpc.CallOption) (float64, string, error) {
	in, _ := structpb.NewStruct(map[string]any{"key": key})
	out := new(structpb.Struct)
	if err := c.cc.Invoke(ctx, BalanceMethod, in, out, opts...); err != nil {
		return 0, "", err
	}
	f := out.GetFields()
	return f["balance"].GetNumberValue(), f["cell"].GetStringValue(), nil
}

// Statement streams key's credits.
func (c *Client) Statement(ctx context.Context, key string, opts ...grpc.CallOption) ([]Entry, error) {
	stream, err := c.cc.NewStream(ctx, &ServiceDesc.Streams[0], StatementMethod, opts...)
	if err != nil {
		return nil, err
	}
	in, _ := structpb.NewStruct(map[string]any{"key": key})
	if err := stream.SendMsg(in); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	var out []Entry
	for {
		m := new(structpb.Struct)
		if err := stream.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		f := m.GetFields()
		out = append(out, Entry{Key: f["key"].GetStringValue(), Amount: f["amount"].GetNumberValue(), RequestID: f["requestId"].GetStringValue(), Cell: f["cell"].GetStringValue()})
	}
}

// --- HTTP ---

// HTTPHandler serves POST /v1/credit/{key}?amount=N&requestId=ID and
// GET /v1/balance/{key}.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/credit/{key}", func(w http.ResponseWriter, r *http.Request) {
		amount, err := strconv.ParseFloat(r.URL.Query().Get("amount"), 64)
		if err != nil {
			http.Error(w, "amount: "+err.Error(), http.StatusBadRequest)
			return
		}
		e, err := s.Credit(r.PathValue("key"), amount, r.URL.Query().Get("requestId"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, e)
	})
	mux.HandleFunc("GET /v1/balance/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		writeJSON(w, Entry{Key: key, Balance: s.Balance(key), Cell: s.Cell})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
