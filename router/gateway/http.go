package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/router"
)

// Canonical forms of the headers the router stamps.
var (
	keyHeader   = http.CanonicalHeaderKey(wire.KeyMD)
	epochHeader = http.CanonicalHeaderKey(wire.EpochMD)
	idemHeader  = http.CanonicalHeaderKey(wire.IdempotencyMD)
)

// httpState follows one HTTP request through the proxy.
type httpState struct {
	key        string
	start      time.Time
	held       time.Duration // waiting for a frozen slot
	upstream   time.Duration // waiting for cells
	replayable bool          // the body is in memory (or empty): the request can be sent again
	cell       string        // the cell of the last attempt
	refused    bool          // the final answer is a guard refusal
	raw        bool          // a plain answer's head may come back unparsed (h1Pool.do)
	vals       [4]string     // backing for the values the proxy sets, one allocation with the state
}

// Header values the proxy sets, shared: header values are never written in
// place, only replaced.
var (
	valHTTP     = []string{"http"}
	valTrailers = []string{"trailers"}
	valEmpty    = []string{""}
)

// val returns v as a one-value header value backed by st.vals[i].
func (st *httpState) val(i int, v string) []string {
	st.vals[i] = v
	return st.vals[i : i+1 : i+1]
}

type stateKey struct{}

func (g *Gateway) initHTTP() {
	g.transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: g.cfg.DialTimeout.D(), KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: g.cfg.HTTP.MaxIdleConnsPerInstance,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // pass bodies through as the cell encoded them
	}
	g.h1 = newH1Pool(g.cfg.DialTimeout.D(), g.cfg.HTTP.MaxIdleConnsPerInstance)
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "cell.invalid" // the transport picks the instance
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:      upstream{g},
		BufferPool:     bufferPool{},
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.proxyError,
		ErrorLog:       nil,
	}
}

// ServeHTTP routes one request: find its key, strip the client's cellkit-*
// headers, hold it (body unread) while its key is frozen, read a small body
// into memory so that it can be replayed, then proxy it to the owner.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt := matchRoute(g.routes, r.URL.Path)
	if rt == nil {
		g.m.request("http", "", outcomeNoRoute)
		writeProblem(w, http.StatusNotFound, "NO_ROUTE", fmt.Sprintf("cellrouter: no route for path %q", r.URL.Path))
		return
	}
	key := rt.key(r)
	if key == "" {
		g.m.request("http", "", outcomeNoKey)
		wire.WriteHTTP(w, fmt.Errorf("cellrouter: %s %s: no routing key (looked for %s): %w", r.Method, r.URL.Path, rt.want, cell.ErrNoKey))
		return
	}
	if err := router.CheckKey(key); err != nil {
		g.m.request("http", "", outcomeNoKey)
		wire.WriteHTTP(w, fmt.Errorf("cellrouter: %s %s: unusable routing key: %v: %w", r.Method, r.URL.Path, err, cell.ErrNoKey))
		return
	}
	stripHeaders(r.Header)
	st := &httpState{key: key, start: start}
	if route := g.watcher.Table().Lookup(key); route.Frozen {
		t0 := time.Now()
		_, err := g.hold(r.Context(), "http", key, route)
		st.held = time.Since(t0)
		if err != nil {
			g.answerError(w, r, st, err)
			return
		}
	}
	if err := g.bufferBody(r, st); err != nil {
		g.m.request("http", "", outcomeCanceled)
		writeProblem(w, http.StatusBadRequest, "BAD_BODY", "cellrouter: reading the request body: "+err.Error())
		return
	}
	if r.ProtoMajor == 1 && g.h1.fits(r) {
		g.serveDirect(w, r, st)
		return
	}
	g.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
}

// serveDirect proxies a plain HTTP/1 request whose body is in memory (the
// common case) without httputil.ReverseProxy: the same header hygiene
// (hop-by-hop headers dropped, X-Forwarded-* set as ReverseProxy's
// SetXForwarded does), less work per request. Upgrades and streamed bodies
// take the ReverseProxy path.
func (g *Gateway) serveDirect(w http.ResponseWriter, r *http.Request, st *httpState) {
	h := r.Header
	trailers := false
	for _, v := range h["Te"] {
		trailers = trailers || strings.Contains(strings.ToLower(v), "trailers")
	}
	removeHopByHop(h)
	if trailers {
		h["Te"] = valTrailers
	}
	delete(h, "Forwarded")
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h["X-Forwarded-For"] = st.val(0, ip)
	} else {
		delete(h, "X-Forwarded-For")
	}
	h["X-Forwarded-Host"] = st.val(1, r.Host)
	h["X-Forwarded-Proto"] = valHTTP
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = valEmpty // send none rather than Go's default
	}
	ctx := r.Context()
	hw, _ := w.(*h1Writer)
	st.raw = hw != nil
	var out *http.Request
	if hw != nil {
		// The lean server's request is the gateway's own (parseHead made
		// it, nothing holds it past this call): it goes out as it is, less
		// the client's Connection: close, which is not the cell's business
		// (the client connection's answer says close, see h1Writer.close).
		out = r
		out.Close = false
	} else {
		u := *r.URL
		out = &http.Request{
			Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: h, Body: r.Body, GetBody: r.GetBody, ContentLength: r.ContentLength, Host: r.Host,
		}
	}
	resp, err := g.forward(ctx, st, out)
	if err != nil {
		g.answerError(w, r, st, err)
		return
	}
	defer resp.Body.Close()
	g.responded(st)
	if hb, ok := resp.Body.(*h1Body); ok && hb.raw != nil {
		hw.writeRawHead(hb.raw, hb.rh) // the head as the cell sent it, less hop-by-hop headers
	} else {
		removeHopByHop(resp.Header)
		dst := w.Header()
		for k, v := range resp.Header {
			dst[k] = v
		}
		for k := range resp.Trailer {
			dst.Add("Trailer", k)
		}
		w.WriteHeader(resp.StatusCode)
	}
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	var rc *http.ResponseController
	if resp.ContentLength < 0 { // streamed: pass each piece on as it comes
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client is gone
			}
			if rc != nil {
				_ = rc.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			g.log.Warn("cell broke off its answer", "cell", st.cell, "err", rerr)
			panic(http.ErrAbortHandler) // tell the client the answer is cut, as ReverseProxy does
		}
	}
	if len(resp.Trailer) > 0 {
		dst := w.Header()
		for k, v := range resp.Trailer {
			dst[k] = v
		}
	}
}

// firstValue is h.Get(key) for a key in canonical form, without
// canonicalizing it again.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// removeHopByHop drops the hop-by-hop headers a proxy must not forward
// (RFC 9110 7.6.1), as httputil.ReverseProxy does: those the Connection
// header names and the well-known ones.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(h, http.CanonicalHeaderKey(sf))
			}
		}
	}
	for k := range h {
		if hopByHop(k) {
			delete(h, k)
		}
	}
}

// stripHeaders removes every cellkit-* header a client sent, except the
// idempotency key: clients may not choose a cell, name an owner or claim an
// epoch, but a request ID that makes a retried write safe is theirs.
func stripHeaders(h http.Header) {
	for k := range h {
		if len(k) >= len(wire.Prefix) && strings.EqualFold(k[:len(wire.Prefix)], wire.Prefix) && k != idemHeader {
			delete(h, k)
		}
	}
}

// bufferBody reads a body of at most MaxReplayBody bytes into memory, so a
// refused request can be sent again; a larger one is streamed as it comes.
func (g *Gateway) bufferBody(r *http.Request, st *httpState) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		st.replayable = true
		return nil
	}
	limit := g.cfg.HTTP.MaxReplayBody
	if r.ContentLength > limit {
		return nil
	}
	var data []byte
	if r.ContentLength > 0 {
		data = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, data); err != nil {
			return err
		}
	} else {
		var err error
		if data, err = io.ReadAll(io.LimitReader(r.Body, limit+1)); err != nil {
			return err
		}
		if int64(len(data)) > limit {
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(data), r.Body), r.Body}
			return nil
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	r.ContentLength = int64(len(data))
	r.TransferEncoding = nil
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	st.replayable = true
	return nil
}

// upstream is the proxy's transport: it picks the owner's instance for each
// attempt and retries once after a guard refusal.
type upstream struct{ g *Gateway }

func (u upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(stateKey{}).(*httpState)
	if st == nil {
		return nil, errors.New("cellrouter: request without routing state")
	}
	return u.g.forward(req.Context(), st, req)
}

// forward sends req to an instance of its key's owner, and once more after
// a guard refusal when the request is replayable.
func (g *Gateway) forward(ctx context.Context, st *httpState, req *http.Request) (*http.Response, error) {
	var hint *ownerHint
	for attempt := 0; ; attempt++ {
		r, owner, err := g.resolve(ctx, "http", st.key, hint)
		if err != nil {
			return nil, err
		}
		addr := g.pools.pickHTTP(owner)
		if addr == "" {
			return nil, &routeError{outcome: outcomeNoInstance, cell: owner, msg: fmt.Sprintf("cellrouter: cell %s owns key %q but has no HTTP instance", owner, st.key)}
		}
		out := req
		if attempt > 0 {
			out = req.Clone(ctx)
			if req.GetBody != nil {
				if out.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
		}
		out.URL.Host = addr
		// A retry's request is a clone, and the transport may still be
		// reading the first attempt's headers: st.vals is written once.
		if attempt == 0 {
			out.Header[keyHeader] = st.val(2, st.key)
			out.Header[epochHeader] = st.val(3, g.epochText(r.Epoch))
		} else {
			out.Header[keyHeader] = []string{st.key}
			out.Header[epochHeader] = []string{g.epochText(r.Epoch)}
		}
		st.cell = owner
		t0 := time.Now()
		var resp *http.Response
		if g.h1.fits(out) {
			resp, err = g.h1.roundTrip(ctx, addr, out, st.raw)
		} else {
			resp, err = g.transport.RoundTrip(out)
		}
		st.upstream += time.Since(t0)
		if err != nil {
			var op *net.OpError
			if attempt == 0 && st.replayable && errors.As(err, &op) && op.Op == "dial" && ctx.Err() == nil {
				// Nothing reached the instance: another one of the cell may answer.
				g.log.Warn("cell instance unreachable; trying the next one", "cell", owner, "addr", addr, "err", err)
				continue
			}
			return nil, err
		}
		if resp.StatusCode == http.StatusMisdirectedRequest || resp.StatusCode == http.StatusServiceUnavailable {
			if ref := wire.FromHTTP(resp); ref != nil {
				// A refusal means the cell did not run the request, so
				// sending it again is safe whatever the method.
				if attempt == 0 && st.replayable && retryable(cell.CodeOf(ref)) {
					drain(resp)
					g.log.Debug("cell refused; retrying once", "key", st.key, "cell", owner, "refusal", ref)
					hint = g.afterRefusal(ctx, "http", ref)
					continue
				}
				st.refused = true
			}
		}
		return resp, nil
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func (g *Gateway) modifyResponse(resp *http.Response) error {
	if st, _ := resp.Request.Context().Value(stateKey{}).(*httpState); st != nil {
		g.responded(st)
	}
	return nil
}

// responded counts a request the cell answered, when its answer's head is
// about to be written to the client.
func (g *Gateway) responded(st *httpState) {
	g.m.added("http", time.Since(st.start)-st.held-st.upstream)
	outcome := outcomeOK
	if st.refused {
		outcome = outcomeRefused
	}
	g.m.request("http", st.cell, outcome)
}

// proxyError answers a request the router could not deliver.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(stateKey{}).(*httpState)
	g.answerError(w, r, st, err)
}

func (g *Gateway) answerError(w http.ResponseWriter, r *http.Request, st *httpState, err error) {
	cellID := ""
	if st != nil {
		cellID = st.cell
	}
	var be *bufferError
	var re *routeError
	switch {
	case errors.As(err, &be):
		outcome := outcomeOverflow
		if be.timeout {
			outcome = outcomeTimeout
		}
		g.m.request("http", "", outcome)
		wire.WriteHTTP(w, err)
	case errors.As(err, &re):
		g.m.request("http", re.cell, re.outcome)
		g.log.Warn("cannot route", "err", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, strings.ToUpper(re.outcome), err.Error())
	case r.Context().Err() != nil:
		g.m.request("http", cellID, outcomeCanceled)
		w.WriteHeader(http.StatusBadGateway)
	default:
		g.m.request("http", cellID, outcomeError)
		g.log.Warn("cell did not answer", "cell", cellID, "err", err)
		writeProblem(w, http.StatusBadGateway, "UPSTREAM", fmt.Sprintf("cellrouter: cell %s did not answer: %v", cellID, err))
	}
}

// problem is the JSON body of the router's own error answers (guard
// refusals use cell/wire's Problem).
type problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeProblem(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Code: code, Message: msg})
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bufferPool lends the proxy's copy buffers.
type bufferPool struct{}

func (bufferPool) Get() []byte  { return *(copyBufs.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { copyBufs.Put(&b) }
