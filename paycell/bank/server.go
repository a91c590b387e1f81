package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Submission is the JSON body of POST /v1/ops.
type Submission struct {
	OpID   string `json:"opId"`
	Kind   string `json:"kind"`
	Amount int64  `json:"amount"`
}

type errorReply struct {
	Error string `json:"error"`
}

// Handler serves the bank over HTTP, for cells in other processes:
//
//	POST /v1/ops     {opId, kind, amount} → 200 {opId, status}; 400 bad op; 409 opId reused
//	GET  /v1/ops     → every operation (Op)
//	GET  /v1/ops/{opId} → one operation; 404
//	GET  /v1/totals  → Totals
//	GET  /healthz
func (b *Bank) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/ops", func(w http.ResponseWriter, r *http.Request) {
		var s Submission
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			writeJSON(w, http.StatusBadRequest, errorReply{"body: " + err.Error()})
			return
		}
		err := b.Submit(r.Context(), s.OpID, s.Kind, s.Amount)
		switch {
		case errors.Is(err, ErrBadOp):
			writeJSON(w, http.StatusBadRequest, errorReply{err.Error()})
		case errors.Is(err, ErrConflict):
			writeJSON(w, http.StatusConflict, errorReply{err.Error()})
		case err != nil:
			writeJSON(w, http.StatusServiceUnavailable, errorReply{err.Error()})
		default:
			op, _ := b.Op(s.OpID)
			writeJSON(w, http.StatusOK, map[string]string{"opId": op.ID, "status": op.Status})
		}
	})
	mux.HandleFunc("GET /v1/ops", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Ops()) })
	mux.HandleFunc("GET /v1/ops/{opId}", func(w http.ResponseWriter, r *http.Request) {
		op, ok := b.Op(r.PathValue("opId"))
		if !ok {
			writeJSON(w, http.StatusNotFound, errorReply{"no such operation"})
			return
		}
		writeJSON(w, http.StatusOK, op)
	})
	mux.HandleFunc("GET /v1/totals", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Totals()) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Client submits operations to a bank served by Handler. It implements
// paycell.BankChannel.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the bank at baseURL over hc (nil:
// http.DefaultClient).
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), hc: hc}
}

// Submit sends an operation; the bank's refusals come back as ErrBadOp or
// ErrConflict.
func (c *Client) Submit(ctx context.Context, opID, kind string, amount int64) error {
	body, _ := json.Marshal(Submission{OpID: opID, Kind: kind, Amount: amount})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/ops", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("bank: submit %s: %w", opID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("bank: submit %s: %w", opID, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var er errorReply
	_ = json.Unmarshal(data, &er)
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusBadRequest:
		return fmt.Errorf("bank: submit %s: %s: %w", opID, er.Error, ErrBadOp)
	case http.StatusConflict:
		return fmt.Errorf("bank: submit %s: %s: %w", opID, er.Error, ErrConflict)
	}
	return fmt.Errorf("bank: submit %s: HTTP %d %s", opID, resp.StatusCode, er.Error)
}

// Totals reads the bank's totals.
func (c *Client) Totals(ctx context.Context) (Totals, error) {
	var t Totals
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/totals", nil)
	if err != nil {
		return t, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return t, fmt.Errorf("bank: totals: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("bank: totals: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return t, fmt.Errorf("bank: totals: %w", err)
	}
	return t, nil
}
