package reqfault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Limits on an experiment.
const (
	// MaxTTL is how far ahead of now an experiment may expire when it is
	// stored, and the longest Latency or Jitter it may add.
	MaxTTL = 24 * time.Hour
	// MaxDocSize bounds a stored document, in bytes.
	MaxDocSize = 64 << 10
)

// Experiment is one request fault, stored as JSON at
// /cellkit/<cluster>/chaos/<name>. See the package documentation for the
// meaning of each field and an example document.
type Experiment struct {
	// Name is the key's last segment: [a-z0-9][a-z0-9-]{0,62}.
	Name string `json:"name"`
	// Cells selects by the serving cell's ID; empty means any cell. A
	// router (no cell) never matches an experiment that lists cells.
	Cells []string `json:"cells,omitempty"`
	// IDCs selects by the serving process's IDC; empty means any IDC.
	IDCs []string `json:"idcs,omitempty"`
	// Methods are path.Match globs against the request's method name: the
	// gRPC full method ("/paycell.v1.Payments/Pay") or, for HTTP, "METHOD
	// /path" ("POST /v1/pay"). As in path.Match, '*' does not cross '/'.
	// Empty means every method.
	Methods []string `json:"methods,omitempty"`
	// Fraction of the selected requests hit, in (0, 1]. Required.
	Fraction float64 `json:"fraction"`
	// ShadowOnly limits the experiment to requests marked shadow
	// (ShadowMD = "1" or "true").
	ShadowOnly bool `json:"shadowOnly,omitempty"`
	// Latency is added before the handler runs; the wait ends early, and
	// the request with it, if the request's context ends.
	Latency Duration `json:"latency,omitempty"`
	// Jitter adds a uniform extra delay in [0, Jitter).
	Jitter Duration `json:"jitter,omitempty"`
	// HTTPStatus (400..599), if set, answers the request with that status
	// instead of calling the handler. gRPC requests get the mapped code
	// (GRPCCodeForHTTP) unless GRPCCode is also set.
	HTTPStatus int `json:"httpStatus,omitempty"`
	// GRPCCode (a code name such as "UNAVAILABLE"; not "OK"), if set, ends
	// the request with that status instead of calling the handler. HTTP
	// requests get the mapped status (HTTPStatusForGRPC) unless HTTPStatus
	// is also set.
	GRPCCode string `json:"grpcCode,omitempty"`
	// Abort drops the request without an answer: HTTP/1 hijacks and closes
	// the connection, HTTP/2 resets the stream; gRPC ends the call with
	// UNAVAILABLE (see the package documentation). Exclusive with
	// HTTPStatus and GRPCCode.
	Abort bool `json:"abort,omitempty"`
	// ExpiresAt is when the experiment stops applying. Required; Put wants
	// it in the future and at most MaxTTL ahead.
	ExpiresAt time.Time `json:"expiresAt"`
	// Who started it and Why, for reports.
	Who string `json:"who,omitempty"`
	Why string `json:"why,omitempty"`
	// Created is when it was stored (Put fills it in when zero).
	Created time.Time `json:"created,omitzero"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("150ms", "1m30s").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string; null leaves d alone.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"150ms\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CheckName reports whether name can name an experiment.
func CheckName(name string) error {
	if !nameRe.MatchString(name) {
		return &ExperimentError{Field: "name", Reason: fmt.Sprintf("%q (want 1-63 of a-z 0-9 -, starting alphanumeric)", name)}
	}
	return nil
}

// Parse decodes an experiment document strictly (unknown fields, trailing
// data and documents over MaxDocSize are errors) and checks every rule that
// does not depend on the time: a stored experiment that has since expired
// still parses, and its reader decides what expiry means (Match ignores
// it). Errors are *ExperimentError.
func Parse(data []byte) (Experiment, error) {
	if len(data) > MaxDocSize {
		return Experiment{}, &ExperimentError{Reason: fmt.Sprintf("document of %d bytes (at most %d)", len(data), MaxDocSize)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e Experiment
	if err := dec.Decode(&e); err != nil {
		return Experiment{}, &ExperimentError{Reason: "not a JSON experiment document", Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Experiment{}, &ExperimentError{Name: e.Name, Reason: "trailing data after the document"}
	}
	if err := e.check(); err != nil {
		return Experiment{}, err
	}
	return e, nil
}

// Validate checks e as Put does: every rule of the document, plus that
// ExpiresAt is after now and at most MaxTTL ahead of it. Errors are
// *ExperimentError.
func (e Experiment) Validate(now time.Time) error {
	if err := e.check(); err != nil {
		return err
	}
	if !e.ExpiresAt.After(now) {
		return e.bad("expiresAt", fmt.Sprintf("%s is not in the future (now %s)", e.ExpiresAt.Format(time.RFC3339), now.Format(time.RFC3339)))
	}
	if e.ExpiresAt.Sub(now) > MaxTTL {
		return e.bad("expiresAt", fmt.Sprintf("%s is more than %s ahead (now %s)", e.ExpiresAt.Format(time.RFC3339), MaxTTL, now.Format(time.RFC3339)))
	}
	return nil
}

func (e Experiment) bad(field, reason string) error {
	return &ExperimentError{Name: e.Name, Field: field, Reason: reason}
}

// check applies the rules that do not depend on the time.
func (e Experiment) check() error {
	if err := CheckName(e.Name); err != nil {
		return err
	}
	if slices.Contains(e.Cells, "") {
		return e.bad("cells", "empty entry")
	}
	if slices.Contains(e.IDCs, "") {
		return e.bad("idcs", "empty entry")
	}
	for _, m := range e.Methods {
		if m == "" {
			return e.bad("methods", "empty pattern")
		}
		if _, err := path.Match(m, ""); err != nil {
			return e.bad("methods", fmt.Sprintf("pattern %q: %v", m, err))
		}
	}
	if !(e.Fraction > 0 && e.Fraction <= 1) {
		return e.bad("fraction", fmt.Sprintf("%v (want 0 < fraction <= 1)", e.Fraction))
	}
	for _, f := range []struct {
		name string
		d    Duration
	}{{"latency", e.Latency}, {"jitter", e.Jitter}} {
		if f.d < 0 || time.Duration(f.d) > MaxTTL {
			return e.bad(f.name, fmt.Sprintf("%s (want 0 to %s)", f.d, MaxTTL))
		}
	}
	if e.HTTPStatus != 0 && (e.HTTPStatus < 400 || e.HTTPStatus > 599) {
		return e.bad("httpStatus", fmt.Sprintf("%d (want 400..599)", e.HTTPStatus))
	}
	if e.GRPCCode != "" {
		if c, ok := grpcCodes[e.GRPCCode]; !ok || c == codes.OK {
			return e.bad("grpcCode", fmt.Sprintf("%q (want an upper-case gRPC code name other than OK, e.g. \"UNAVAILABLE\")", e.GRPCCode))
		}
	}
	if e.Abort && (e.HTTPStatus != 0 || e.GRPCCode != "") {
		return e.bad("abort", "an aborted request gets no status: drop httpStatus and grpcCode, or abort")
	}
	if e.Latency == 0 && e.Jitter == 0 && e.HTTPStatus == 0 && e.GRPCCode == "" && !e.Abort {
		return e.bad("", "no effect: set latency, jitter, httpStatus, grpcCode or abort")
	}
	if e.ExpiresAt.IsZero() {
		return e.bad("expiresAt", "required: every experiment expires")
	}
	return nil
}

// terminal reports whether e ends the request instead of letting the
// handler run.
func (e Experiment) terminal() bool { return e.HTTPStatus != 0 || e.GRPCCode != "" || e.Abort }

// clone returns a copy of e that shares no slices with it.
func (e Experiment) clone() Experiment {
	e.Cells = slices.Clone(e.Cells)
	e.IDCs = slices.Clone(e.IDCs)
	e.Methods = slices.Clone(e.Methods)
	return e
}

// Request is what an injector knows about a request when it decides.
type Request struct {
	Cell   string // the serving cell, "" in a router
	IDC    string // the serving process's IDC, "" if unknown
	Method string // gRPC full method, or HTTP "METHOD /path"
	Shadow bool   // marked shadow traffic
}

// Match reports whether e applies to r at now, given r01, a uniform random
// number in [0, 1) drawn for this request and experiment: e has not
// expired, every selector e sets admits r, and r01 < e.Fraction. It is pure.
func Match(e Experiment, r Request, now time.Time, r01 float64) bool {
	if !now.Before(e.ExpiresAt) {
		return false
	}
	if e.ShadowOnly && !r.Shadow {
		return false
	}
	if len(e.Cells) > 0 && !slices.Contains(e.Cells, r.Cell) {
		return false
	}
	if len(e.IDCs) > 0 && !slices.Contains(e.IDCs, r.IDC) {
		return false
	}
	if len(e.Methods) > 0 && !slices.ContainsFunc(e.Methods, func(p string) bool {
		ok, _ := path.Match(p, r.Method)
		return ok
	}) {
		return false
	}
	return r01 < e.Fraction
}

// outcome is what the experiments decided for one request.
type outcome struct {
	delay time.Duration
	final int   // index of the experiment whose status or abort ends the request, or -1
	hits  []int // indexes of the experiments that did something to it
}

// decide applies Match to every experiment (sorted by name) and combines
// the matches: every match adds its latency and jitter, and the first match
// with a status or abort ends the request. hits lists the experiments that
// contributed. rnd draws uniform numbers in [0, 1). It is pure but for rnd.
func decide(exps []Experiment, r Request, now time.Time, rnd func() float64) outcome {
	o := outcome{final: -1}
	for k, e := range exps {
		if !Match(e, r, now, rnd()) {
			continue
		}
		hit := false
		if e.Latency > 0 || e.Jitter > 0 {
			o.delay += time.Duration(e.Latency)
			if e.Jitter > 0 {
				o.delay += time.Duration(float64(e.Jitter) * rnd())
			}
			hit = true
		}
		if e.terminal() && o.final < 0 {
			o.final = k
			hit = true
		}
		if hit {
			o.hits = append(o.hits, k)
		}
	}
	return o
}

// grpcCodes maps code names, as in the gRPC spec and grpc-go's JSON form,
// to codes.
var grpcCodes = map[string]codes.Code{
	"OK":                  codes.OK,
	"CANCELLED":           codes.Canceled,
	"UNKNOWN":             codes.Unknown,
	"INVALID_ARGUMENT":    codes.InvalidArgument,
	"DEADLINE_EXCEEDED":   codes.DeadlineExceeded,
	"NOT_FOUND":           codes.NotFound,
	"ALREADY_EXISTS":      codes.AlreadyExists,
	"PERMISSION_DENIED":   codes.PermissionDenied,
	"RESOURCE_EXHAUSTED":  codes.ResourceExhausted,
	"FAILED_PRECONDITION": codes.FailedPrecondition,
	"ABORTED":             codes.Aborted,
	"OUT_OF_RANGE":        codes.OutOfRange,
	"UNIMPLEMENTED":       codes.Unimplemented,
	"INTERNAL":            codes.Internal,
	"UNAVAILABLE":         codes.Unavailable,
	"DATA_LOSS":           codes.DataLoss,
	"UNAUTHENTICATED":     codes.Unauthenticated,
}

// HTTPStatusForGRPC maps a gRPC code to an HTTP status as grpc-gateway's
// runtime.HTTPStatusFromCode does (CANCELLED is 499).
func HTTPStatusForGRPC(c codes.Code) int {
	switch c {
	case codes.OK:
		return 200
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return 400
	case codes.Unauthenticated:
		return 401
	case codes.PermissionDenied:
		return 403
	case codes.NotFound:
		return 404
	case codes.AlreadyExists, codes.Aborted:
		return 409
	case codes.ResourceExhausted:
		return 429
	case codes.Unimplemented:
		return 501
	case codes.Unavailable:
		return 503
	case codes.DeadlineExceeded:
		return 504
	}
	return 500 // Unknown, Internal, DataLoss and anything else
}

// GRPCCodeForHTTP maps an HTTP error status to a gRPC code: the inverse of
// HTTPStatusForGRPC where that is one code (400 is INVALID_ARGUMENT, 409
// ABORTED, 500 INTERNAL), 502 UNAVAILABLE as in gRPC's HTTP mapping, any
// other status UNKNOWN.
func GRPCCodeForHTTP(status int) codes.Code {
	switch status {
	case 400:
		return codes.InvalidArgument
	case 401:
		return codes.Unauthenticated
	case 403:
		return codes.PermissionDenied
	case 404:
		return codes.NotFound
	case 409:
		return codes.Aborted
	case 429:
		return codes.ResourceExhausted
	case 499:
		return codes.Canceled
	case 500:
		return codes.Internal
	case 501:
		return codes.Unimplemented
	case 502, 503:
		return codes.Unavailable
	case 504:
		return codes.DeadlineExceeded
	}
	return codes.Unknown
}

// httpStatus is the status e answers HTTP requests with (it is terminal
// and not an abort).
func (e Experiment) httpStatus() int {
	if e.HTTPStatus != 0 {
		return e.HTTPStatus
	}
	return HTTPStatusForGRPC(grpcCodes[e.GRPCCode])
}

// grpcCode is the code e ends gRPC requests with (it is terminal and not
// an abort).
func (e Experiment) grpcCode() codes.Code {
	if e.GRPCCode != "" {
		return grpcCodes[e.GRPCCode]
	}
	return GRPCCodeForHTTP(e.HTTPStatus)
}

// effect describes e's effect for logs and messages.
func (e Experiment) effect() string {
	var s []string
	if e.Latency > 0 || e.Jitter > 0 {
		s = append(s, "latency "+e.Latency.String()+"+jitter "+e.Jitter.String())
	}
	if e.HTTPStatus != 0 {
		s = append(s, "http "+strconv.Itoa(e.HTTPStatus))
	}
	if e.GRPCCode != "" {
		s = append(s, "grpc "+e.GRPCCode)
	}
	if e.Abort {
		s = append(s, "abort")
	}
	return strings.Join(s, ", ")
}
