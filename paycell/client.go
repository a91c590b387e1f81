package paycell

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cellkit/cellkit/cell/wire"
)

// API is the payment chain's operations. *Service serves them from its
// books; *Client calls them over HTTP (through cellrouter or straight to a
// cell).
type API interface {
	OpenAccount(ctx context.Context, r OpenRequest) (Account, error)
	Balance(ctx context.Context, owner string) (Account, error)
	Statement(ctx context.Context, owner string, limit int) (Statement, error)
	CreateOrder(ctx context.Context, r CreateOrderRequest) (Order, error)
	Order(ctx context.Context, orderID string) (Order, error)
	Pay(ctx context.Context, r PayRequest) (Payment, error)
	Refund(ctx context.Context, r RefundRequest) (Refund, error)
	TopUp(ctx context.Context, r BankRequest) (TopUp, error)
	Withdraw(ctx context.Context, r BankRequest) (Withdrawal, error)
	BankCallback(ctx context.Context, r CallbackRequest) (Callback, error)
}

var (
	_ API = (*Service)(nil)
	_ API = (*Client)(nil)
)

// Client calls the HTTP API. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the API at baseURL (e.g.
// "http://127.0.0.1:8080", a cellrouter or a cell) over hc (nil:
// http.DefaultClient).
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), hc: hc}
}

// APIError is a reply other than 200. errors.Is matches it against the
// service's sentinels by its code (ErrInsufficientFunds, ErrConflict, ...);
// a guard refusal (421 WRONG_CELL, 503 FROZEN, ...) unwraps to the typed
// cell error (errors.As(err, new(*cell.WrongCellError))).
type APIError struct {
	Status  int    // the HTTP status
	Code    string // a paycell Code, or a guard refusal's cell.Code
	Message string
	Cell    string // the cell that answered, when it said
	// Guard is the typed refusal when the cell guard (or a router in front
	// of it) refused the request.
	Guard error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("paycell: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Is matches the sentinel of the error's code.
func (e *APIError) Is(target error) bool {
	s := Code(e.Code).sentinel()
	return s != nil && s == target
}

// Unwrap returns the guard refusal, if any.
func (e *APIError) Unwrap() error { return e.Guard }

// Temporary reports whether the same request may succeed if sent again
// (with the same requestId): guard refusals, unavailability, server errors.
func (e *APIError) Temporary() bool {
	return e.Guard != nil || e.Status >= 500 || e.Status == http.StatusMisdirectedRequest
}

// OpenAccount calls POST /v1/users/{owner}/open.
func (c *Client) OpenAccount(ctx context.Context, r OpenRequest) (Account, error) {
	var out Account
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(r.Owner)+"/open", map[string]any{"requestId": r.RequestID}, &out)
	return out, err
}

// Balance calls GET /v1/users/{owner}/balance.
func (c *Client) Balance(ctx context.Context, owner string) (Account, error) {
	var out Account
	err := c.do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(owner)+"/balance", nil, &out)
	return out, err
}

// Statement calls GET /v1/users/{owner}/statement (limit 0: the server's default).
func (c *Client) Statement(ctx context.Context, owner string, limit int) (Statement, error) {
	var out Statement
	p := "/v1/users/" + url.PathEscape(owner) + "/statement"
	if limit != 0 {
		p += "?limit=" + strconv.Itoa(limit)
	}
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}

// CreateOrder calls POST /v1/users/{owner}/orders.
func (c *Client) CreateOrder(ctx context.Context, r CreateOrderRequest) (Order, error) {
	var out Order
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(r.Owner)+"/orders",
		map[string]any{"requestId": r.RequestID, "merchant": r.Merchant, "amount": r.Amount}, &out)
	return out, err
}

// Order calls GET /v1/orders/{orderId}.
func (c *Client) Order(ctx context.Context, orderID string) (Order, error) {
	var out Order
	err := c.do(ctx, http.MethodGet, "/v1/orders/"+url.PathEscape(orderID), nil, &out)
	return out, err
}

// Pay calls POST /v1/orders/{orderId}/pay.
func (c *Client) Pay(ctx context.Context, r PayRequest) (Payment, error) {
	var out Payment
	err := c.do(ctx, http.MethodPost, "/v1/orders/"+url.PathEscape(r.OrderID)+"/pay", map[string]any{"requestId": r.RequestID}, &out)
	return out, err
}

// Refund calls POST /v1/orders/{orderId}/refund.
func (c *Client) Refund(ctx context.Context, r RefundRequest) (Refund, error) {
	var out Refund
	err := c.do(ctx, http.MethodPost, "/v1/orders/"+url.PathEscape(r.OrderID)+"/refund",
		map[string]any{"requestId": r.RequestID, "amount": r.Amount}, &out)
	return out, err
}

// TopUp calls POST /v1/users/{owner}/topups.
func (c *Client) TopUp(ctx context.Context, r BankRequest) (TopUp, error) {
	var out TopUp
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(r.Owner)+"/topups",
		map[string]any{"requestId": r.RequestID, "amount": r.Amount}, &out)
	return out, err
}

// Withdraw calls POST /v1/users/{owner}/withdrawals.
func (c *Client) Withdraw(ctx context.Context, r BankRequest) (Withdrawal, error) {
	var out Withdrawal
	err := c.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(r.Owner)+"/withdrawals",
		map[string]any{"requestId": r.RequestID, "amount": r.Amount}, &out)
	return out, err
}

// BankCallback calls POST /v1/bank/callbacks/{opId} (what the bank does).
func (c *Client) BankCallback(ctx context.Context, r CallbackRequest) (Callback, error) {
	var out Callback
	body := map[string]any{"status": r.Status}
	if r.BankRef != "" {
		body["bankRef"] = r.BankRef
	}
	err := c.do(ctx, http.MethodPost, "/v1/bank/callbacks/"+url.PathEscape(r.OpID), body, &out)
	return out, err
}

// do sends one request and decodes a 200 reply into out; any other reply is
// an *APIError.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("paycell: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("paycell: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		if m, ok := body.(map[string]any); ok {
			// Lets a router resend the request on a stale connection.
			if id, _ := m["requestId"].(string); id != "" {
				req.Header.Set(wire.IdempotencyMD, id)
			}
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("paycell: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("paycell: %s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("paycell: %s %s: decode reply: %w", method, path, err)
		}
		return nil
	}
	ae := &APIError{Status: resp.StatusCode, Cell: resp.Header.Get(wire.CellMD)}
	if g := wire.FromHTTP(resp); g != nil {
		// The guard (or a router) refused: its code is in the headers.
		ae.Guard, ae.Code = g, resp.Header.Get(wire.CodeMD)
		var p wire.Problem
		if json.Unmarshal(data, &p) == nil && p.Message != "" {
			ae.Message = p.Message
		} else {
			ae.Message = g.Error()
		}
		return ae
	}
	var eb errorBody
	if json.Unmarshal(data, &eb) == nil && eb.Code != "" {
		ae.Code, ae.Message = string(eb.Code), eb.Error
		if eb.Cell != "" {
			ae.Cell = eb.Cell
		}
		return ae
	}
	ae.Code = string(codeOfHTTP(resp.StatusCode))
	ae.Message = strings.TrimSpace(string(data))
	if len(ae.Message) > 200 {
		ae.Message = ae.Message[:200] + "..."
	}
	if ae.Message == "" {
		ae.Message = http.StatusText(resp.StatusCode)
	}
	return ae
}
