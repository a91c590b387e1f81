package paycell

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/httpguard"
	"github.com/cellkit/cellkit/router/gateway"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 16 << 10

// httpRoute is one route of the HTTP API: how the guard sees it and how the
// service serves it. The guard configuration and the handler are both made
// from this one table.
type httpRoute struct {
	pattern string
	kind    cell.Kind
	key     string // the path wildcard that holds the routing key
	serve   func(s *Service, w http.ResponseWriter, r *http.Request) (any, error)
}

var httpRoutes = []httpRoute{
	{"POST /v1/users/{owner}/open", cell.Write, "owner", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		var b struct {
			RequestID string `json:"requestId"`
		}
		if err := decodeBody(w, r, &b); err != nil {
			return nil, err
		}
		return s.OpenAccount(r.Context(), OpenRequest{Owner: r.PathValue("owner"), RequestID: b.RequestID})
	}},
	{"GET /v1/users/{owner}/balance", cell.Read, "owner", func(s *Service, _ http.ResponseWriter, r *http.Request) (any, error) {
		return s.Balance(r.Context(), r.PathValue("owner"))
	}},
	{"GET /v1/users/{owner}/statement", cell.Read, "owner", func(s *Service, _ http.ResponseWriter, r *http.Request) (any, error) {
		limit := 0
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, badRequest("limit %q: want a number from 1 to %d", clip(v), MaxStatementLimit)
			}
			if n == 0 {
				return nil, badRequest("limit 0: want 1-%d", MaxStatementLimit)
			}
			limit = n
		}
		return s.Statement(r.Context(), r.PathValue("owner"), limit)
	}},
	{"POST /v1/users/{owner}/orders", cell.Write, "owner", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		var b struct {
			RequestID string `json:"requestId"`
			Merchant  string `json:"merchant"`
			Amount    int64  `json:"amount"`
		}
		if err := decodeBody(w, r, &b); err != nil {
			return nil, err
		}
		return s.CreateOrder(r.Context(), CreateOrderRequest{Owner: r.PathValue("owner"), RequestID: b.RequestID, Merchant: b.Merchant, Amount: b.Amount})
	}},
	{"GET /v1/orders/{orderId}", cell.Read, "orderId", func(s *Service, _ http.ResponseWriter, r *http.Request) (any, error) {
		return s.Order(r.Context(), r.PathValue("orderId"))
	}},
	{"POST /v1/orders/{orderId}/pay", cell.Write, "orderId", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		var b struct {
			RequestID string `json:"requestId"`
		}
		if err := decodeBody(w, r, &b); err != nil {
			return nil, err
		}
		return s.Pay(r.Context(), PayRequest{OrderID: r.PathValue("orderId"), RequestID: b.RequestID})
	}},
	{"POST /v1/orders/{orderId}/refund", cell.Write, "orderId", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		var b struct {
			RequestID string `json:"requestId"`
			Amount    int64  `json:"amount"`
		}
		if err := decodeBody(w, r, &b); err != nil {
			return nil, err
		}
		return s.Refund(r.Context(), RefundRequest{OrderID: r.PathValue("orderId"), RequestID: b.RequestID, Amount: b.Amount})
	}},
	{"POST /v1/users/{owner}/topups", cell.Write, "owner", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		b, err := decodeAmount(w, r)
		if err != nil {
			return nil, err
		}
		return s.TopUp(r.Context(), BankRequest{Owner: r.PathValue("owner"), RequestID: b.RequestID, Amount: b.Amount})
	}},
	{"POST /v1/users/{owner}/withdrawals", cell.Write, "owner", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		b, err := decodeAmount(w, r)
		if err != nil {
			return nil, err
		}
		return s.Withdraw(r.Context(), BankRequest{Owner: r.PathValue("owner"), RequestID: b.RequestID, Amount: b.Amount})
	}},
	{"POST /v1/bank/callbacks/{opId}", cell.Write, "opId", func(s *Service, w http.ResponseWriter, r *http.Request) (any, error) {
		var b struct {
			Status  string `json:"status"`
			BankRef string `json:"bankRef"`
		}
		if err := decodeBody(w, r, &b); err != nil {
			return nil, err
		}
		return s.BankCallback(r.Context(), CallbackRequest{OpID: r.PathValue("opId"), Status: b.Status, BankRef: b.BankRef})
	}},
}

type amountBody struct {
	RequestID string `json:"requestId"`
	Amount    int64  `json:"amount"`
}

func decodeAmount(w http.ResponseWriter, r *http.Request) (amountBody, error) {
	var b amountBody
	err := decodeBody(w, r, &b)
	return b, err
}

// decodeBody reads one JSON object into v: unknown fields, trailing data,
// wrong types and bodies over MaxBodyBytes are bad requests.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.Body == nil || r.Body == http.NoBody {
		return badRequest("body: want a JSON object")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body: data after the JSON object")
	}
	return nil
}

func bodyError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var big *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return badRequest("body: want a JSON object, got nothing")
	case errors.As(err, &big):
		return badRequest("body: larger than %d bytes", MaxBodyBytes)
	case errors.As(err, &syn):
		return badRequest("body: invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return badRequest("body: field %q: got a JSON %s, want %s", typ.Field, typ.Value, jsonType(typ.Type.Kind().String()))
		}
		return badRequest("body: got a JSON %s, want an object", typ.Value)
	}
	return badRequest("body: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "int64":
		return "a whole number"
	case "string":
		return "a string"
	}
	return kind
}

// errorBody is the JSON of an error reply.
type errorBody struct {
	Error string `json:"error"`
	Code  Code   `json:"code"`
	Cell  string `json:"cell"`
}

// HTTPHandler serves the HTTP/JSON API (see the package doc). Put it
// behind the cell guard: httpguard.New(guard, HTTPGuardConfig(...)).
func (s *Service) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range httpRoutes {
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			out, err := rt.serve(s, w, r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "cell": s.cfg.Cell})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &NotFoundError{What: "route", ID: r.Method + " " + clip(r.URL.Path)})
	})
	return mux
}

func (s *Service) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := CodeOf(err)
	if code == CodeInternal || code == CodeUnavailable {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
	writeJSON(w, code.HTTPStatus(), errorBody{Error: err.Error(), Code: code, Cell: s.cfg.Cell})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode reply","code":"INTERNAL"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// HTTPGuardConfig is the cell guard's configuration for HTTPHandler: every
// route with its kind and the path wildcard that holds its routing key
// (owner, orderId or opId: IDs route to their owner's slot), /healthz and
// unknown routes exempt. onAdmit and onRelease may be nil.
func HTTPGuardConfig(onAdmit, onRelease func(admission.Record)) httpguard.Config {
	cfg := httpguard.Config{
		Exempt:    []string{"GET /healthz", "/"},
		OnAdmit:   onAdmit,
		OnRelease: onRelease,
	}
	for _, rt := range httpRoutes {
		cfg.Routes = append(cfg.Routes, httpguard.Route{Pattern: rt.pattern, Kind: rt.kind, Key: httpguard.PathValue(rt.key)})
	}
	return cfg
}

// GatewayRoutes are the cellrouter HTTP routes for the API: the key is the
// third path segment ("/v1/users/{key}/...", "/v1/orders/{key}/..."), except
// for bank callbacks, whose key is the fourth ("/v1/bank/callbacks/{key}").
func GatewayRoutes() []gateway.Route {
	return []gateway.Route{
		{Prefix: "/v1/bank/callbacks/", Keys: []gateway.KeySource{{Path: "/v1/bank/callbacks/{key}"}}},
		{Prefix: "/v1/", Keys: []gateway.KeySource{{Path: "/v1/*/{key}"}}},
	}
}
