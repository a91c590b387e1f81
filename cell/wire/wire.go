package wire

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellkit/cellkit/cell"
)

// Metadata keys (gRPC metadata is lower case; HTTP uses the canonical form).
const (
	Prefix         = "cellkit-"
	KeyMD          = "cellkit-key"
	EpochMD        = "cellkit-epoch"
	IdempotencyMD  = "cellkit-idempotency-key"
	CodeMD         = "cellkit-code"
	OwnerMD        = "cellkit-owner"
	OwnerIDCMD     = "cellkit-owner-idc"
	CellMD         = "cellkit-cell"
	ErrorDomain    = "cellkit.io"
	problemType    = "application/problem+json"
	maxRetryAfter  = time.Hour
	minRetryAfterS = 1
)

// GRPCStatus turns a guard refusal into a gRPC status with details; any
// other error becomes codes.Unknown (nil: OK).
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	code := cell.CodeOf(err)
	if code == "" {
		if s, ok := status.FromError(err); ok {
			return s
		}
		return status.New(codes.Unknown, err.Error())
	}
	st := status.New(grpcCode(code), err.Error())
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: string(code), Domain: ErrorDomain, Metadata: meta(err)}}
	if d, ok := retryAfter(err); ok {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	}
	if withDetails, derr := st.WithDetails(details...); derr == nil {
		return withDetails
	}
	return st
}

func grpcCode(c cell.Code) codes.Code {
	switch c {
	case cell.CodeWrongCell:
		return codes.FailedPrecondition
	case cell.CodeNoKey:
		return codes.InvalidArgument
	}
	return codes.Unavailable
}

// HTTPStatus is the HTTP status for err (200 for nil, 500 for an error that
// is not a guard refusal).
func HTTPStatus(err error) int {
	switch cell.CodeOf(err) {
	case "":
		if err == nil {
			return http.StatusOK
		}
		return http.StatusInternalServerError
	case cell.CodeWrongCell:
		return http.StatusMisdirectedRequest
	case cell.CodeNoKey:
		return http.StatusBadRequest
	}
	return http.StatusServiceUnavailable
}

// Problem is the JSON body of an HTTP refusal.
type Problem struct {
	Code         cell.Code `json:"code"`
	Message      string    `json:"message"`
	Owner        string    `json:"owner,omitempty"`
	OwnerIDC     string    `json:"ownerIdc,omitempty"`
	Cell         string    `json:"cell,omitempty"`
	Epoch        uint64    `json:"epoch,omitempty"`
	Slot         *int      `json:"slot,omitempty"`
	Cutover      string    `json:"cutover,omitempty"`
	RetryAfterMs int64     `json:"retryAfterMs,omitempty"`
}

// WriteHTTP writes a guard refusal (or any error, as 500) to w.
func WriteHTTP(w http.ResponseWriter, err error) {
	h := w.Header()
	code := cell.CodeOf(err)
	p := Problem{Code: code, Message: err.Error()}
	var wc *cell.WrongCellError
	var fz *cell.FrozenError
	var fe *cell.FencedError
	var sm *cell.StaleMapError
	switch {
	case errors.As(err, &wc):
		p.Owner, p.OwnerIDC, p.Cell, p.Epoch = wc.Owner, wc.OwnerIDC, wc.Cell, wc.Epoch
		h.Set(OwnerMD, wc.Owner)
		h.Set(OwnerIDCMD, wc.OwnerIDC)
		h.Set(CellMD, wc.Cell)
		h.Set(EpochMD, strconv.FormatUint(wc.Epoch, 10))
	case errors.As(err, &fz):
		slot := fz.Slot
		p.Slot, p.Cutover, p.Epoch = &slot, fz.Cutover, fz.Epoch
		h.Set(EpochMD, strconv.FormatUint(fz.Epoch, 10))
	case errors.As(err, &fe):
		p.Cell = fe.Cell
	case errors.As(err, &sm):
		// As in gRPC's ErrorInfo: the guard's epoch, and the one it waited for.
		p.Epoch = sm.Have
		h.Set(EpochMD, strconv.FormatUint(sm.Have, 10))
		h.Set(Prefix+"want-epoch", strconv.FormatUint(sm.Want, 10))
	}
	if d, ok := retryAfter(err); ok {
		p.RetryAfterMs = d.Milliseconds()
		h.Set("Retry-After", strconv.Itoa(max(minRetryAfterS, int(math.Ceil(d.Seconds())))))
		h.Set(Prefix+"retry-after-ms", strconv.FormatInt(d.Milliseconds(), 10))
	}
	if code != "" {
		h.Set(CodeMD, string(code))
	}
	h.Set("Content-Type", problemType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(HTTPStatus(err))
	_ = json.NewEncoder(w).Encode(p)
}

// FromGRPC turns a gRPC error carrying a cellkit ErrorInfo back into the
// typed guard error; other errors come back unchanged.
func FromGRPC(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	var info *errdetails.ErrorInfo
	var delay time.Duration
	for _, d := range st.Details() {
		switch v := d.(type) {
		case *errdetails.ErrorInfo:
			if v.GetDomain() == ErrorDomain {
				info = v
			}
		case *errdetails.RetryInfo:
			delay = v.GetRetryDelay().AsDuration()
		}
	}
	if info == nil {
		return err
	}
	return fromMeta(cell.Code(info.GetReason()), info.GetMetadata(), delay, st.Message(), err)
}

// FromHTTP turns an HTTP refusal (a response with a cellkit-code header)
// into the typed guard error; it returns nil for any other response. It
// reads headers only and leaves the body alone.
func FromHTTP(resp *http.Response) error {
	code := cell.Code(resp.Header.Get(CodeMD))
	if code == "" {
		return nil
	}
	m := map[string]string{
		"owner":    resp.Header.Get(OwnerMD),
		"ownerIdc": resp.Header.Get(OwnerIDCMD),
		"cell":     resp.Header.Get(CellMD),
		"epoch":    resp.Header.Get(EpochMD),
		"want":     resp.Header.Get(Prefix + "want-epoch"),
	}
	var delay time.Duration
	if ms, err := strconv.ParseInt(resp.Header.Get(Prefix+"retry-after-ms"), 10, 64); err == nil && ms >= 0 {
		delay = min(time.Duration(ms)*time.Millisecond, maxRetryAfter)
	} else if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		delay = min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	return fromMeta(code, m, delay, resp.Status, nil)
}

func fromMeta(code cell.Code, m map[string]string, delay time.Duration, msg string, orig error) error {
	epoch, _ := strconv.ParseUint(m["epoch"], 10, 64)
	switch code {
	case cell.CodeWrongCell:
		return &cell.WrongCellError{Key: m["key"], Cell: m["cell"], Owner: m["owner"], OwnerIDC: m["ownerIdc"], Epoch: epoch}
	case cell.CodeFrozen:
		slot, _ := strconv.Atoi(m["slot"])
		return &cell.FrozenError{Key: m["key"], Slot: slot, Cutover: m["cutover"], RetryAfter: delay, Epoch: epoch}
	case cell.CodeFenced:
		return &cell.FencedError{Cell: m["cell"], Instance: m["instance"], Reason: m["reason"]}
	case cell.CodeStaleMap:
		want, _ := strconv.ParseUint(m["want"], 10, 64)
		return &cell.StaleMapError{Have: epoch, Want: want, RetryAfter: delay}
	case cell.CodeNoKey:
		return errors.Join(cell.ErrNoKey, errors.New(strings.TrimSpace(msg)))
	}
	if orig != nil {
		return orig
	}
	return errors.New(msg)
}

func meta(err error) map[string]string {
	m := map[string]string{}
	var wc *cell.WrongCellError
	var fz *cell.FrozenError
	var fe *cell.FencedError
	var sm *cell.StaleMapError
	switch {
	case errors.As(err, &wc):
		m["key"], m["cell"], m["owner"], m["ownerIdc"], m["epoch"] = wc.Key, wc.Cell, wc.Owner, wc.OwnerIDC, strconv.FormatUint(wc.Epoch, 10)
	case errors.As(err, &fz):
		m["key"], m["slot"], m["cutover"], m["epoch"] = fz.Key, strconv.Itoa(fz.Slot), fz.Cutover, strconv.FormatUint(fz.Epoch, 10)
	case errors.As(err, &fe):
		m["cell"], m["instance"], m["reason"] = fe.Cell, fe.Instance, fe.Reason
	case errors.As(err, &sm):
		m["epoch"], m["want"] = strconv.FormatUint(sm.Have, 10), strconv.FormatUint(sm.Want, 10)
	}
	return m
}

func retryAfter(err error) (time.Duration, bool) {
	var fz *cell.FrozenError
	var sm *cell.StaleMapError
	switch {
	case errors.As(err, &fz):
		return fz.RetryAfter, true
	case errors.As(err, &sm):
		return sm.RetryAfter, true
	case errors.Is(err, cell.ErrFenced):
		return time.Second, true
	}
	return 0, false
}
