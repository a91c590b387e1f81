package httpguard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/admission"
	"github.com/cellkit/cellkit/cell/wire"
	"github.com/cellkit/cellkit/clock"
)

// KeyFunc reads the routing key from a request. Path values are available
// to it (r.PathValue) for the route's pattern.
type KeyFunc func(r *http.Request) (string, error)

// Header takes the key from a request header.
func Header(name string) KeyFunc {
	return func(r *http.Request) (string, error) { return r.Header.Get(name), nil }
}

// PathValue takes the key from a wildcard of the route's pattern, e.g.
// PathValue("key") for "POST /v1/credit/{key}".
func PathValue(name string) KeyFunc {
	return func(r *http.Request) (string, error) { return r.PathValue(name), nil }
}

// Query takes the key from a query parameter.
func Query(name string) KeyFunc {
	return func(r *http.Request) (string, error) { return r.URL.Query().Get(name), nil }
}

// DefaultKey is the key source of routes that name none: the Cellkit-Key
// header routers and SDKs stamp.
var DefaultKey = Header(http.CanonicalHeaderKey(wire.KeyMD))

// Route declares how requests matching a pattern are guarded.
type Route struct {
	// Pattern is a net/http.ServeMux pattern: "[METHOD ][HOST]/PATH",
	// e.g. "POST /v1/credit/{key}". Ignored in Config.Default.
	Pattern string
	// Kind is cell.Read or cell.Write. Zero means Write.
	Kind cell.Kind
	// Key reads the key. Nil means DefaultKey (the Cellkit-Key header).
	Key KeyFunc
}

// Config says which routes are guarded and how. The zero value guards every
// request as a write keyed by the Cellkit-Key header.
type Config struct {
	// Routes are matched like a ServeMux matches (most specific wins).
	Routes []Route
	// Default applies to requests no route or exempt pattern matches.
	// The zero value treats them as writes keyed by Cellkit-Key, so a
	// request without a key is refused with NO_KEY.
	Default Route
	// Exempt are ServeMux patterns passed through unguarded, e.g.
	// "GET /healthz", "GET /metrics".
	Exempt []string
	// OnAdmit, OnRelease and OnDecision: as in cell/grpcguard. Record.Method
	// and Decision.Method are the route's pattern ("" for Default).
	OnAdmit    func(admission.Record)
	OnRelease  func(admission.Record)
	OnDecision func(admission.Decision)
	// Clock stamps records. Default the real clock.
	Clock clock.Clock
}

// Middleware guards an HTTP handler with a *cell.Guard.
type Middleware struct {
	g   *cell.Guard
	cfg Config
	mux *http.ServeMux // patterns -> *route or exempt
	def *route
}

// route is what the internal mux dispatches to; its type tells a match from
// the mux's own redirect and not-found handlers.
type route struct {
	Route
	exempt bool
}

type serveKey struct{}

// serveFunc is carried in the request's context down to the matched route
// (the mux is shared by every Handler the middleware wraps).
type serveFunc func(w http.ResponseWriter, r *http.Request, rt *route)

func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Context().Value(serveKey{}).(serveFunc)(w, r, rt)
}

// New returns the middleware for g. Invalid or conflicting patterns are
// errors, not panics.
func New(g *cell.Guard, cfg Config) (m *Middleware, err error) {
	if g == nil {
		return nil, fmt.Errorf("httpguard: nil guard: %w", cell.ErrBadConfig)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	m = &Middleware{g: g, cfg: cfg, mux: http.NewServeMux()}
	check := func(r Route) (*route, error) {
		if r.Kind != 0 && r.Kind != cell.Read && r.Kind != cell.Write {
			return nil, fmt.Errorf("httpguard: route %q: kind %v (want cell.Read or cell.Write): %w", r.Pattern, r.Kind, cell.ErrBadConfig)
		}
		if r.Kind == 0 {
			r.Kind = cell.Write
		}
		if r.Key == nil {
			r.Key = DefaultKey
		}
		return &route{Route: r}, nil
	}
	handle := func(pattern string, rt *route) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("httpguard: pattern %q: %v: %w", pattern, p, cell.ErrBadConfig)
			}
		}()
		m.mux.Handle(pattern, rt)
		return nil
	}
	for _, r := range cfg.Routes {
		rt, err := check(r)
		if err != nil {
			return nil, err
		}
		if err := handle(r.Pattern, rt); err != nil {
			return nil, err
		}
	}
	for _, p := range cfg.Exempt {
		if err := handle(p, &route{Route: Route{Pattern: p}, exempt: true}); err != nil {
			return nil, err
		}
	}
	d := cfg.Default
	d.Pattern = ""
	if m.def, err = check(d); err != nil {
		return nil, err
	}
	return m, nil
}

// Handler wraps next: requests the guard admits reach it with a context
// that is cancelled (cause: the *cell.FencedError) if the instance fences
// itself meanwhile; refusals are written with wire.WriteHTTP.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	serve := serveFunc(func(w http.ResponseWriter, r *http.Request, rt *route) {
		if rt.exempt {
			next.ServeHTTP(w, r)
			return
		}
		m.guard(w, r, rt, next)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, _ := m.mux.Handler(r); isRoute(h) {
			// Let the mux run the route so that its path values are set
			// (on a shallow copy: the caller's request is left alone).
			m.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), serveKey{}, serve)))
			return
		}
		m.guard(w, r, m.def, next)
	})
}

func isRoute(h http.Handler) bool {
	_, ok := h.(*route)
	return ok
}

func (m *Middleware) guard(w http.ResponseWriter, r *http.Request, rt *route, next http.Handler) {
	ctx := r.Context()
	if ctx.Value(serveKey{}) != nil {
		// Do not leak the dispatch hook to the handler.
		ctx = context.WithValue(ctx, serveKey{}, nil)
	}
	w.Header().Set(http.CanonicalHeaderKey(wire.CellMD), m.g.Cell())
	epoch, err := requestEpoch(r)
	if err != nil {
		m.decided(rt, "", err)
		badRequest(w, err)
		return
	}
	key, err := rt.Key(r)
	if err != nil {
		err = fmt.Errorf("httpguard: %s: key: %v: %w", rt.Pattern, err, cell.ErrNoKey)
		m.decided(rt, "", err)
		wire.WriteHTTP(w, err)
		return
	}
	var fctx context.Context
	if f := m.g.Fence(); f != nil {
		fctx = f.Context() // before the decision: see cell/grpcguard
	}
	adm, err := m.g.Admit(ctx, key, rt.Kind, epoch)
	m.decided(rt, key, err)
	if err != nil {
		if cell.CodeOf(err) == "" && ctx.Err() != nil {
			// The client went away while the guard waited for the map.
			w.WriteHeader(499)
			return
		}
		wire.WriteHTTP(w, err)
		return
	}
	if fctx != nil {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		stop := context.AfterFunc(fctx, func() { cancel(context.Cause(fctx)) })
		defer func() {
			stop()
			cancel(context.Canceled)
		}()
	}
	rec := admission.Record{Cell: m.g.Cell(), Instance: m.g.Instance(), Key: adm.Key, Kind: adm.Kind, Epoch: adm.Epoch, Slot: adm.Slot, Method: rt.Pattern, Start: m.cfg.Clock.Now()}
	if m.cfg.OnAdmit != nil {
		m.cfg.OnAdmit(rec)
	}
	defer func() {
		// End is stamped before the write is released; see grpcguard.
		rec.End = m.cfg.Clock.Now()
		adm.Release()
		if m.cfg.OnRelease != nil {
			m.cfg.OnRelease(rec)
		}
	}()
	next.ServeHTTP(w, r.WithContext(ctx))
}

func (m *Middleware) decided(rt *route, key string, err error) {
	if m.cfg.OnDecision != nil {
		m.cfg.OnDecision(admission.Decision{Cell: m.g.Cell(), Instance: m.g.Instance(), Method: rt.Pattern, Kind: rt.Kind, Key: key, Code: cell.CodeOf(err), Err: err})
	}
}

// requestEpoch reads the Cellkit-Epoch header (0 when absent; the highest
// when sent more than once).
func requestEpoch(r *http.Request) (uint64, error) {
	var epoch uint64
	for _, v := range r.Header.Values(http.CanonicalHeaderKey(wire.EpochMD)) {
		for _, part := range strings.Split(v, ",") {
			e, err := strconv.ParseUint(strings.TrimSpace(part), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("httpguard: header %s %q is not a map epoch (want a decimal number)", http.CanonicalHeaderKey(wire.EpochMD), v)
			}
			epoch = max(epoch, e)
		}
	}
	return epoch, nil
}

func badRequest(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(wire.Problem{Message: err.Error()})
}
