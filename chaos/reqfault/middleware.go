package reqfault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/clock"
)

// Metadata keys (gRPC metadata is lower case; HTTP uses the canonical form).
const (
	// ShadowMD marks shadow traffic: "1" or "true" (any case).
	ShadowMD = "cellkit-shadow"
	// ChaosMD names, comma-separated, the experiments that acted on a
	// request: a response header for HTTP (absent when the connection was
	// aborted), a trailer for gRPC.
	ChaosMD = "cellkit-chaos"
)

var (
	shadowHeader = http.CanonicalHeaderKey(ShadowMD)
	chaosHeader  = http.CanonicalHeaderKey(ChaosMD)
)

// FaultBody is the JSON body of an HTTP response an experiment failed.
type FaultBody struct {
	Experiment string `json:"experiment"`
	Message    string `json:"message"`
}

func isShadow(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			if part == "1" || strings.EqualFold(part, "true") {
				return true
			}
		}
	}
	return false
}

// decideNow runs decide on the experiments in force and counts the hits.
// ok is false when none acts on the request; names lists those that do.
func (i *Injector) decideNow(method func() string, shadow func() bool) (exps []Experiment, o outcome, names string, ok bool) {
	exps = *i.exps.Load()
	if len(exps) == 0 {
		return nil, o, "", false // the common case: no header parsing, no allocation
	}
	r := Request{Cell: i.cfg.Cell, IDC: i.cfg.IDC, Method: method(), Shadow: shadow()}
	o = decide(exps, r, i.cfg.Clock.Now(), i.cfg.Rand)
	if len(o.hits) == 0 {
		return nil, o, "", false
	}
	var b strings.Builder
	for k, h := range o.hits {
		if k > 0 {
			b.WriteByte(',')
		}
		b.WriteString(exps[h].Name)
		i.count(exps[h].Name)
	}
	return exps, o, b.String(), true
}

// wait sleeps d on the injector's clock, or until ctx ends.
func (i *Injector) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	return clock.Sleep(ctx, i.cfg.Clock, d)
}

// HTTP returns middleware that applies the experiments to requests for
// next, matched by "METHOD /path" (the URL's decoded path). A request whose
// context ends during the injected latency is answered 499 (client gone) or
// 504 (deadline) without calling next. An abort hijacks and closes an
// HTTP/1 connection; where the connection cannot be hijacked (HTTP/2) it
// panics with http.ErrAbortHandler, which the server turns into a stream
// reset: put no recovering middleware outside this one.
func (i *Injector) HTTP(next http.Handler) http.Handler {
	if i == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exps, o, names, ok := i.decideNow(func() string { return r.Method + " " + r.URL.Path }, func() bool { return isShadow(r.Header.Values(shadowHeader)) })
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set(chaosHeader, names)
		if err := i.wait(r.Context(), o.delay); err != nil {
			code := 499
			if errors.Is(err, context.DeadlineExceeded) {
				code = http.StatusGatewayTimeout
			}
			w.WriteHeader(code)
			return
		}
		if o.final < 0 {
			next.ServeHTTP(w, r)
			return
		}
		e := exps[o.final]
		if e.Abort {
			abortHTTP(w)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(e.httpStatus())
		_ = json.NewEncoder(w).Encode(FaultBody{Experiment: e.Name, Message: fmt.Sprintf("reqfault: experiment %q failed this request", e.Name)})
	})
}

// abortHTTP drops the request without an answer.
func abortHTTP(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// grpcFault applies the experiments to one gRPC call; a non-nil error ends
// the call with it instead of calling the handler.
func (i *Injector) grpcFault(ctx context.Context, method string, setTrailer func(metadata.MD)) error {
	exps, o, names, ok := i.decideNow(func() string { return method }, func() bool {
		md, _ := metadata.FromIncomingContext(ctx)
		return isShadow(md.Get(ShadowMD))
	})
	if !ok {
		return nil
	}
	setTrailer(metadata.Pairs(ChaosMD, names))
	if err := i.wait(ctx, o.delay); err != nil {
		return status.FromContextError(err).Err()
	}
	if o.final < 0 {
		return nil
	}
	e := exps[o.final]
	if e.Abort {
		// An interceptor cannot reset the HTTP/2 stream, and closing the
		// connection would fail every other call on it. UNAVAILABLE with
		// no response is what a client sees when its connection drops.
		return status.Errorf(codes.Unavailable, "reqfault: experiment %q aborted this request", e.Name)
	}
	return status.Errorf(e.grpcCode(), "reqfault: experiment %q failed this request", e.Name)
}

// UnaryServerInterceptor returns an interceptor that applies the
// experiments to unary calls, matched by full method name. A call whose
// context ends during the injected latency ends with the context's code.
func (i *Injector) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if i == nil {
			return handler(ctx, req)
		}
		if err := i.grpcFault(ctx, info.FullMethod, func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) }); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor returns an interceptor that applies the
// experiments to streaming calls when they start, as the unary one does.
func (i *Injector) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if i == nil {
			return handler(srv, ss)
		}
		if err := i.grpcFault(ss.Context(), info.FullMethod, ss.SetTrailer); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
