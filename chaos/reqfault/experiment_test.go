package reqfault

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func valid() Experiment {
	return Experiment{Name: "pay-slow", Fraction: 0.5, Latency: Duration(150 * time.Millisecond), ExpiresAt: t0.Add(time.Hour)}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Experiment)
		field string // "" with ok false: a document-level error
		ok    bool
	}{
		{"latency only", func(e *Experiment) {}, "", true},
		{"jitter only", func(e *Experiment) { e.Latency, e.Jitter = 0, Duration(time.Second) }, "", true},
		{"http status only", func(e *Experiment) { e.Latency, e.HTTPStatus = 0, 503 }, "", true},
		{"grpc code only", func(e *Experiment) { e.Latency, e.GRPCCode = 0, "UNAVAILABLE" }, "", true},
		{"abort only", func(e *Experiment) { e.Latency, e.Abort = 0, true }, "", true},
		{"both statuses", func(e *Experiment) { e.HTTPStatus, e.GRPCCode = 429, "RESOURCE_EXHAUSTED" }, "", true},
		{"all selectors", func(e *Experiment) {
			e.Cells, e.IDCs, e.Methods, e.ShadowOnly = []string{"a1"}, []string{"IDC-A"}, []string{"/pay.v1.Pay/*", "POST /v1/*"}, true
		}, "", true},
		{"fraction 1", func(e *Experiment) { e.Fraction = 1 }, "", true},
		{"expires MaxTTL ahead", func(e *Experiment) { e.ExpiresAt = t0.Add(MaxTTL) }, "", true},
		{"longest name", func(e *Experiment) { e.Name = "a" + strings.Repeat("-", 62) }, "", true},
		{"latency MaxTTL", func(e *Experiment) { e.Latency = Duration(MaxTTL) }, "", true},

		{"empty name", func(e *Experiment) { e.Name = "" }, "name", false},
		{"upper-case name", func(e *Experiment) { e.Name = "Pay" }, "name", false},
		{"name starts with dash", func(e *Experiment) { e.Name = "-pay" }, "name", false},
		{"name too long", func(e *Experiment) { e.Name = "a" + strings.Repeat("b", 63) }, "name", false},
		{"name with slash", func(e *Experiment) { e.Name = "a/b" }, "name", false},
		{"empty cell", func(e *Experiment) { e.Cells = []string{"a1", ""} }, "cells", false},
		{"empty idc", func(e *Experiment) { e.IDCs = []string{""} }, "idcs", false},
		{"empty method", func(e *Experiment) { e.Methods = []string{""} }, "methods", false},
		{"malformed glob", func(e *Experiment) { e.Methods = []string{"/pay.v1.Pay/[A-"} }, "methods", false},
		{"fraction 0", func(e *Experiment) { e.Fraction = 0 }, "fraction", false},
		{"negative fraction", func(e *Experiment) { e.Fraction = -0.5 }, "fraction", false},
		{"fraction over 1", func(e *Experiment) { e.Fraction = 1.01 }, "fraction", false},
		{"fraction NaN", func(e *Experiment) { e.Fraction = math.NaN() }, "fraction", false},
		{"negative latency", func(e *Experiment) { e.Latency = -1 }, "latency", false},
		{"latency over MaxTTL", func(e *Experiment) { e.Latency = Duration(MaxTTL + 1) }, "latency", false},
		{"negative jitter", func(e *Experiment) { e.Jitter = Duration(-time.Millisecond) }, "jitter", false},
		{"http 200", func(e *Experiment) { e.HTTPStatus = 200 }, "httpStatus", false},
		{"http 600", func(e *Experiment) { e.HTTPStatus = 600 }, "httpStatus", false},
		{"grpc OK", func(e *Experiment) { e.GRPCCode = "OK" }, "grpcCode", false},
		{"grpc code in Go case", func(e *Experiment) { e.GRPCCode = "Unavailable" }, "grpcCode", false},
		{"grpc code unknown", func(e *Experiment) { e.GRPCCode = "TEAPOT" }, "grpcCode", false},
		{"abort and status", func(e *Experiment) { e.Abort, e.HTTPStatus = true, 503 }, "abort", false},
		{"abort and code", func(e *Experiment) { e.Abort, e.GRPCCode = true, "ABORTED" }, "abort", false},
		{"no effect", func(e *Experiment) { e.Latency = 0 }, "", false},
		{"no expiry", func(e *Experiment) { e.ExpiresAt = time.Time{} }, "expiresAt", false},
		{"expires now", func(e *Experiment) { e.ExpiresAt = t0 }, "expiresAt", false},
		{"expired", func(e *Experiment) { e.ExpiresAt = t0.Add(-time.Second) }, "expiresAt", false},
		{"expires beyond MaxTTL", func(e *Experiment) { e.ExpiresAt = t0.Add(MaxTTL + time.Second) }, "expiresAt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			tt.edit(&e)
			err := e.Validate(t0)
			if tt.ok {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadExperiment) {
				t.Fatalf("Validate = %v, want ErrBadExperiment", err)
			}
			var ee *ExperimentError
			if !errors.As(err, &ee) || ee.Field != tt.field {
				t.Fatalf("Validate = %#v, want an *ExperimentError for field %q", err, tt.field)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const good = `{"name":"x","fraction":1,"latency":"150ms","jitter":"1m30s","expiresAt":"2026-05-01T13:00:00Z","created":"2026-05-01T12:00:00Z"}`
	tests := []struct {
		name string
		doc  string
		want func(Experiment) bool // nil: an error wanted
	}{
		{"good", good, func(e Experiment) bool {
			return e.Latency == Duration(150*time.Millisecond) && e.Jitter == Duration(90*time.Second) && e.ExpiresAt.Equal(t0.Add(time.Hour))
		}},
		{"long expired still parses", `{"name":"x","fraction":1,"abort":true,"expiresAt":"2001-01-01T00:00:00Z"}`, func(e Experiment) bool { return e.Abort }},
		{"null latency", `{"name":"x","fraction":1,"httpStatus":503,"latency":null,"expiresAt":"2026-05-01T13:00:00Z"}`, func(e Experiment) bool { return e.Latency == 0 }},
		{"whitespace around", " \n" + good + "\n ", func(Experiment) bool { return true }},
		{"unknown field", `{"name":"x","fraction":1,"latency":"1s","expiresAt":"2026-05-01T13:00:00Z","status":503}`, nil},
		{"trailing data", good + `{}`, nil},
		{"trailing garbage", good + `x`, nil},
		{"latency as number", `{"name":"x","fraction":1,"latency":150,"expiresAt":"2026-05-01T13:00:00Z"}`, nil},
		{"latency without unit", `{"name":"x","fraction":1,"latency":"150","expiresAt":"2026-05-01T13:00:00Z"}`, nil},
		{"no expiry", `{"name":"x","fraction":1,"latency":"1s"}`, nil},
		{"no fraction", `{"name":"x","latency":"1s","expiresAt":"2026-05-01T13:00:00Z"}`, nil},
		{"not an object", `[]`, nil},
		{"empty", ``, nil},
		{"too large", `{"name":"x","fraction":1,"latency":"1s","expiresAt":"2026-05-01T13:00:00Z","why":"` + strings.Repeat("w", MaxDocSize) + `"}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse([]byte(tt.doc))
			if tt.want == nil {
				if !errors.Is(err, ErrBadExperiment) {
					t.Fatalf("Parse = %+v, %v; want ErrBadExperiment", e, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !tt.want(e) {
				t.Fatalf("Parse = %+v", e)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	base := Experiment{Name: "x", Fraction: 0.25, HTTPStatus: 503, ExpiresAt: t0.Add(time.Minute)}
	cell := Request{Cell: "a1", IDC: "IDC-A", Method: "/pay.v1.Pay/Charge"}
	router := Request{IDC: "IDC-A", Method: "POST /v1/pay/u42"}
	tests := []struct {
		name string
		edit func(*Experiment)
		req  Request
		now  time.Time
		r01  float64
		want bool
	}{
		{"no selectors", nil, cell, t0, 0, true},
		{"no selectors, router", nil, router, t0, 0, true},
		{"r below fraction", nil, cell, t0, 0.2499, true},
		{"r at fraction", nil, cell, t0, 0.25, false},
		{"fraction 1, r near 1", func(e *Experiment) { e.Fraction = 1 }, cell, t0, 0.9999, true},
		{"just before expiry", nil, cell, t0.Add(time.Minute - 1), 0, true},
		{"at expiry", nil, cell, t0.Add(time.Minute), 0, false},
		{"after expiry", nil, cell, t0.Add(time.Hour), 0, false},
		{"cell listed", func(e *Experiment) { e.Cells = []string{"b1", "a1"} }, cell, t0, 0, true},
		{"cell not listed", func(e *Experiment) { e.Cells = []string{"b1"} }, cell, t0, 0, false},
		{"router never matches cells", func(e *Experiment) { e.Cells = []string{"a1"} }, router, t0, 0, false},
		{"router matches its idc", func(e *Experiment) { e.IDCs = []string{"IDC-A"} }, router, t0, 0, true},
		{"idc not listed", func(e *Experiment) { e.IDCs = []string{"IDC-B"} }, cell, t0, 0, false},
		{"router without idc", func(e *Experiment) { e.IDCs = []string{"IDC-A"} }, Request{Method: "GET /"}, t0, 0, false},
		{"cell and idc", func(e *Experiment) { e.Cells, e.IDCs = []string{"a1"}, []string{"IDC-A"} }, cell, t0, 0, true},
		{"grpc service glob", func(e *Experiment) { e.Methods = []string{"/pay.v1.Pay/*"} }, cell, t0, 0, true},
		{"grpc exact method", func(e *Experiment) { e.Methods = []string{"/pay.v1.Pay/Refund", "/pay.v1.Pay/Charge"} }, cell, t0, 0, true},
		{"grpc other service", func(e *Experiment) { e.Methods = []string{"/pay.v1.Ledger/*"} }, cell, t0, 0, false},
		{"star does not cross slash", func(e *Experiment) { e.Methods = []string{"*"} }, cell, t0, 0, false},
		{"http glob", func(e *Experiment) { e.Methods = []string{"POST /v1/pay/*"} }, router, t0, 0, true},
		{"http other verb", func(e *Experiment) { e.Methods = []string{"GET /v1/pay/*"} }, router, t0, 0, false},
		{"http any verb", func(e *Experiment) { e.Methods = []string{"* /v1/pay/*"} }, router, t0, 0, true},
		{"http glob one segment", func(e *Experiment) { e.Methods = []string{"POST /v1/*"} }, router, t0, 0, false},
		{"shadow only, plain request", func(e *Experiment) { e.ShadowOnly = true }, cell, t0, 0, false},
		{"shadow only, shadow request", func(e *Experiment) { e.ShadowOnly = true }, Request{Cell: "a1", Shadow: true}, t0, 0, true},
		{"shadow request, any experiment", nil, Request{Cell: "a1", Shadow: true}, t0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			if tt.edit != nil {
				tt.edit(&e)
			}
			if got := Match(e, tt.req, tt.now, tt.r01); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

// seq returns a rnd that yields vs in turn.
func seq(vs ...float64) func() float64 {
	return func() float64 {
		v := vs[0]
		vs = vs[1:]
		return v
	}
}

func TestDecide(t *testing.T) {
	exp := func(name string, edit func(*Experiment)) Experiment {
		e := Experiment{Name: name, Fraction: 0.5, ExpiresAt: t0.Add(time.Minute)}
		edit(&e)
		return e
	}
	slow := exp("a-slow", func(e *Experiment) { e.Latency = Duration(100 * time.Millisecond) })
	jitter := exp("b-jitter", func(e *Experiment) { e.Latency, e.Jitter = Duration(10*time.Millisecond), Duration(time.Second) })
	fail := exp("c-fail", func(e *Experiment) { e.HTTPStatus, e.Latency = 503, Duration(time.Millisecond) })
	abort := exp("d-abort", func(e *Experiment) { e.Abort = true })
	b1only := exp("e-b1", func(e *Experiment) { e.Cells, e.HTTPStatus = []string{"b1"}, 500 })
	req := Request{Cell: "a1", Method: "/pay.v1.Pay/Charge"}

	tests := []struct {
		name  string
		exps  []Experiment
		rnd   func() float64
		delay time.Duration
		final string
		hits  []string
	}{
		{"none", nil, seq(), 0, "", nil},
		{"fraction misses", []Experiment{slow, fail}, seq(0.9, 0.5), 0, "", nil},
		{"latency", []Experiment{slow}, seq(0), 100 * time.Millisecond, "", []string{"a-slow"}},
		{"jitter drawn", []Experiment{jitter}, seq(0, 0.25), 260 * time.Millisecond, "", []string{"b-jitter"}},
		{"delays add, status ends", []Experiment{slow, jitter, fail}, seq(0, 0, 0.5, 0), 111*time.Millisecond + 500*time.Millisecond, "c-fail", []string{"a-slow", "b-jitter", "c-fail"}},
		{"first terminal wins", []Experiment{fail, abort}, seq(0, 0), time.Millisecond, "c-fail", []string{"c-fail"}},
		{"abort alone", []Experiment{slow, abort}, seq(0.7, 0.1), 0, "d-abort", []string{"d-abort"}},
		{"other cell's experiment", []Experiment{b1only, slow}, seq(0, 0), 100 * time.Millisecond, "", []string{"a-slow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := decide(tt.exps, req, t0, tt.rnd)
			if o.delay != tt.delay {
				t.Errorf("delay = %v, want %v", o.delay, tt.delay)
			}
			final := ""
			if o.final >= 0 {
				final = tt.exps[o.final].Name
			}
			if final != tt.final {
				t.Errorf("final = %q, want %q", final, tt.final)
			}
			var hits []string
			for _, h := range o.hits {
				hits = append(hits, tt.exps[h].Name)
			}
			if !slices.Equal(hits, tt.hits) {
				t.Errorf("hits = %v, want %v", hits, tt.hits)
			}
		})
	}
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		e    Experiment
		http int
		grpc codes.Code
	}{
		{Experiment{HTTPStatus: 503}, 503, codes.Unavailable},
		{Experiment{HTTPStatus: 502}, 502, codes.Unavailable},
		{Experiment{HTTPStatus: 504}, 504, codes.DeadlineExceeded},
		{Experiment{HTTPStatus: 429}, 429, codes.ResourceExhausted},
		{Experiment{HTTPStatus: 404}, 404, codes.NotFound},
		{Experiment{HTTPStatus: 418}, 418, codes.Unknown},
		{Experiment{HTTPStatus: 500}, 500, codes.Internal},
		{Experiment{GRPCCode: "UNAVAILABLE"}, 503, codes.Unavailable},
		{Experiment{GRPCCode: "CANCELLED"}, 499, codes.Canceled},
		{Experiment{GRPCCode: "FAILED_PRECONDITION"}, 400, codes.FailedPrecondition},
		{Experiment{GRPCCode: "DATA_LOSS"}, 500, codes.DataLoss},
		{Experiment{GRPCCode: "DEADLINE_EXCEEDED"}, 504, codes.DeadlineExceeded},
		{Experiment{HTTPStatus: 418, GRPCCode: "ABORTED"}, 418, codes.Aborted},
	}
	for _, tt := range tests {
		if got := tt.e.httpStatus(); got != tt.http {
			t.Errorf("%+v: HTTP status %d, want %d", tt.e, got, tt.http)
		}
		if got := tt.e.grpcCode(); got != tt.grpc {
			t.Errorf("%+v: gRPC code %v, want %v", tt.e, got, tt.grpc)
		}
	}
	// Every non-OK code's HTTP status maps back to a code with the same
	// HTTP status (the mapping is as close to an inverse as it can be).
	for name, c := range grpcCodes {
		h := HTTPStatusForGRPC(c)
		if back := HTTPStatusForGRPC(GRPCCodeForHTTP(h)); c != codes.OK && back != h {
			t.Errorf("%s -> %d -> %v -> %d", name, h, GRPCCodeForHTTP(h), back)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"name":"x","fraction":1,"latency":"150ms","expiresAt":"2026-05-01T13:00:00Z"}`))
	f.Add([]byte(`{"name":"pay-slow-a1","cells":["a1"],"idcs":["IDC-A"],"methods":["/p.v1.P/*","POST /v1/*"],"fraction":0.25,"shadowOnly":true,"latency":"1h","jitter":"50ms","httpStatus":503,"grpcCode":"UNAVAILABLE","expiresAt":"2026-05-01T13:00:00+08:00","who":"a","why":"b","created":"2026-05-01T12:00:00.123456789Z"}`))
	f.Add([]byte(`{"name":"a","fraction":0.5,"abort":true,"expiresAt":"9999-12-31T23:59:59-23:59"}`))
	f.Add([]byte(`{"name":"a","fraction":1e-300,"jitter":"-0s","grpcCode":"DATA_LOSS","expiresAt":"0000-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"name":"a","fraction":1,"latency":"1s","expiresAt":"2026-05-01T13:00:00Z"} {}`))
	f.Add([]byte(`{"NAME":"a","Fraction":1,"latency":"1s","expiresAt":"2026-05-01T13:00:00Z","why":"\ud800\xff"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrBadExperiment) {
				t.Fatalf("Parse error %v is not ErrBadExperiment", err)
			}
			return
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode %+v: %v", data, e, err)
		}
		e2, err := Parse(out)
		if err != nil {
			t.Fatalf("accepted %q but not its encoding %s: %v", data, out, err)
		}
		out2, err := json.Marshal(e2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the document:\n%s\n%s (%v)", out, out2, err)
		}
		if !e.ExpiresAt.Equal(e2.ExpiresAt) || !e.Created.Equal(e2.Created) || e.Latency != e2.Latency || e.Fraction != e2.Fraction {
			t.Fatalf("round trip changed values: %+v -> %+v", e, e2)
		}
	})
}
