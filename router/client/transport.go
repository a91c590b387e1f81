package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/router"
)

// Transport is an http.RoundTripper that sends each request to an instance
// of the cell owning its key, round-robin within the cell: it rewrites the
// URL's scheme and host (the Host header is left as the request set it),
// stamps Cellkit-Key, Cellkit-Epoch and, on writes, Cellkit-Idempotency-Key,
// and handles guard refusals (421 WRONG_CELL, 503 FROZEN, 503 STALE_MAP) as
// the Client's RetryPolicy says. A refused request is retried only if its
// body can be replayed (no body, or GetBody set, as http.NewRequest does
// for in-memory bodies); otherwise the refusal response is returned as is.
//
//	hc := &http.Client{Transport: &client.Transport{Client: c, Key: userFromPath}}
type Transport struct {
	// Client routes and holds breakers and metrics. Required.
	Client *Client
	// Base sends each attempt. Default http.DefaultTransport.
	Base http.RoundTripper
	// Key extracts the routing key from a request. Default: the key set
	// on the request's context with WithKey.
	Key func(*http.Request) (string, error)
	// IsWrite reports whether a request writes. Default: any method other
	// than GET, HEAD, OPTIONS and TRACE.
	IsWrite func(*http.Request) bool
	// Scheme of the rewritten URL. Default "http".
	Scheme string
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(req)
	if err != nil && req.Body != nil {
		req.Body.Close() // a RoundTripper closes the body, even on errors
	}
	return resp, err
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	c := t.Client
	if c == nil {
		return nil, fmt.Errorf("cellkit client: Transport.Client is nil: %w", ErrBadConfig)
	}
	ctx := req.Context()
	key, err := t.key(req)
	if err != nil {
		return nil, err
	}
	idem, write := "", t.isWrite(req)
	if write {
		if idem, err = t.idempotencyKey(req, key); err != nil {
			return nil, err
		}
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	scheme := t.Scheme
	if scheme == "" {
		scheme = "http"
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	r := c.newRouting(key, write)
	for n := 0; ; n++ {
		tg, err := r.next(ctx)
		if err != nil {
			return nil, err
		}
		addr, ok := c.httpInstance(tg.cell.id)
		if !ok {
			tg.finish(ignored)
			tg.cell.out[outBreakerOpen].Add(1)
			return nil, &CellUnavailableError{Cell: tg.cell.id, Err: ErrNoInstance}
		}
		out := req.Clone(ctx)
		if n > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				tg.finish(ignored)
				return nil, fmt.Errorf("cellkit client: replay request body: %w", err)
			}
			out.Body = body
		}
		out.URL.Scheme, out.URL.Host = scheme, addr
		if out.Host == "" {
			out.Host = req.URL.Host
		}
		out.Header.Set(wire.KeyMD, key)
		out.Header.Set(wire.EpochMD, c.epochString(tg.epoch))
		if idem != "" {
			out.Header.Set(wire.IdempotencyMD, idem)
		}
		resp, err := base.RoundTrip(out)
		res := httpResult(ctx, resp, err)
		res.final = !replayable
		tg.finish(res.health)
		retry, err := r.after(ctx, tg, res)
		if !retry {
			if err != nil && resp != nil && res.refusal == nil {
				resp.Body.Close()
				return nil, err
			}
			if res.refusal != nil {
				var fw *FrozenWaitError
				if errors.As(err, &fw) { // the wait after the refusal ran out
					drain(resp)
					return nil, err
				}
				return resp, nil // the refusal, as the guard sent it
			}
			return resp, err
		}
		drain(resp)
	}
}

func (t *Transport) key(req *http.Request) (string, error) {
	if t.Key != nil {
		k, err := t.Key(req)
		if err != nil {
			return "", &NoKeyError{Method: req.Method + " " + req.URL.String(), Err: err}
		}
		if k != "" {
			return k, nil
		}
	} else if k, ok := KeyFrom(req.Context()); ok {
		return k, nil
	}
	return "", &NoKeyError{Method: req.Method + " " + req.URL.String()}
}

func (t *Transport) isWrite(req *http.Request) bool {
	if t.IsWrite != nil {
		return t.IsWrite(req)
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

func (t *Transport) idempotencyKey(req *http.Request, key string) (string, error) {
	if id, ok := IdempotencyKeyFrom(req.Context()); ok {
		return id, nil
	}
	if id := req.Header.Get(wire.IdempotencyMD); id != "" {
		return id, nil
	}
	id, err := NewIdempotencyKey(key)
	if err != nil {
		return "", fmt.Errorf("cellkit client: %s %s: %w", req.Method, req.URL, err)
	}
	return id, nil
}

// httpResult classifies an attempt's response.
func httpResult(ctx context.Context, resp *http.Response, err error) result {
	if err != nil {
		if ctx.Err() != nil {
			return result{err: err, health: ignored}
		}
		return result{err: err, health: unhealth}
	}
	if typed := wire.FromHTTP(resp); typed != nil && cell.CodeOf(typed) != "" {
		return result{refusal: typed}
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return result{health: unhealth}
	}
	return result{}
}

// drain releases a response that will not be returned.
func drain(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// httpIndex is the HTTP addresses of each cell's instances, rebuilt when
// Discovery changes (checked on use: no goroutine).
type httpIndex struct {
	changed <-chan struct{}
	cells   map[string]*httpCell
}

type httpCell struct {
	addrs []string
	next  atomic.Uint32
}

func (c *Client) httpInstance(cell string) (string, bool) {
	idx := c.httpIdx.Load()
	if idx != nil {
		select {
		case <-idx.changed:
			idx = nil
		default:
		}
	}
	if idx == nil {
		list, changed := c.cfg.Discovery.Instances()
		idx = newHTTPIndex(list, changed)
		c.httpIdx.Store(idx)
	}
	hc := idx.cells[cell]
	if hc == nil || len(hc.addrs) == 0 {
		return "", false
	}
	n := hc.next.Add(1)
	return hc.addrs[n%uint32(len(hc.addrs))], true
}

func newHTTPIndex(list []router.Instance, changed <-chan struct{}) *httpIndex {
	idx := &httpIndex{changed: changed, cells: map[string]*httpCell{}}
	for _, in := range list { // sorted by cell, then ID
		if in.HTTPAddr == "" {
			continue
		}
		hc := idx.cells[in.Cell]
		if hc == nil {
			hc = &httpCell{}
			idx.cells[in.Cell] = hc
		}
		hc.addrs = append(hc.addrs, in.HTTPAddr)
	}
	return idx
}
