package paycell

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Every error the service returns for a request it refused
// matches one of them with errors.Is; anything else is an internal failure
// (the database, a cancelled request).
var (
	// ErrBadRequest: the request is malformed (a missing requestId, an
	// amount that is not a positive integer, an ID of the wrong kind).
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: the account, order or bank operation does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a requestId reused with different parameters, or a
	// request the object's state forbids (paying a paid order, refunding
	// more than was paid, a callback that contradicts an earlier one).
	ErrConflict = errors.New("conflict")
	// ErrInsufficientFunds: the balance cannot cover a payment or a
	// withdrawal.
	ErrInsufficientFunds = errors.New("insufficient funds")
	// ErrBadConfig is wrapped by configuration errors.
	ErrBadConfig = errors.New("bad paycell configuration")
)

// Code is the closed set of error codes on the wire (HTTP "code", the gRPC
// ErrorInfo reason).
type Code string

// Codes.
const (
	CodeBadRequest        Code = "BAD_REQUEST"
	CodeNotFound          Code = "NOT_FOUND"
	CodeConflict          Code = "CONFLICT"
	CodeInsufficientFunds Code = "INSUFFICIENT_FUNDS"
	CodeUnavailable       Code = "UNAVAILABLE" // cancelled or timed out; safe to retry with the same requestId
	CodeInternal          Code = "INTERNAL"
)

// ErrorDomain is the gRPC ErrorInfo domain of paycell errors.
const ErrorDomain = "paycell.cellkit.io"

// CodeOf returns err's code ("" for nil).
func CodeOf(err error) Code {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrBadRequest):
		return CodeBadRequest
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrConflict):
		return CodeConflict
	case errors.Is(err, ErrInsufficientFunds):
		return CodeInsufficientFunds
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return CodeUnavailable
	}
	return CodeInternal
}

// HTTPStatus is the HTTP status for a code.
func (c Code) HTTPStatus() int {
	switch c {
	case "":
		return http.StatusOK
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeInsufficientFunds:
		return http.StatusPaymentRequired
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// GRPCCode is the gRPC status code for a code.
func (c Code) GRPCCode() codes.Code {
	switch c {
	case "":
		return codes.OK
	case CodeBadRequest:
		return codes.InvalidArgument
	case CodeNotFound:
		return codes.NotFound
	case CodeConflict:
		return codes.Aborted
	case CodeInsufficientFunds:
		return codes.FailedPrecondition
	case CodeUnavailable:
		return codes.Unavailable
	}
	return codes.Internal
}

// codeOfHTTP maps an HTTP status back to a code, for replies without one.
func codeOfHTTP(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusPaymentRequired:
		return CodeInsufficientFunds
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusBadGateway:
		return CodeUnavailable
	}
	return CodeInternal
}

// sentinel is the sentinel error of a code.
func (c Code) sentinel() error {
	switch c {
	case CodeBadRequest:
		return ErrBadRequest
	case CodeNotFound:
		return ErrNotFound
	case CodeConflict:
		return ErrConflict
	case CodeInsufficientFunds:
		return ErrInsufficientFunds
	}
	return nil
}

// GRPCStatus turns a service error into a gRPC status carrying an ErrorInfo
// whose reason is the code.
func GRPCStatus(err error) *status.Status {
	c := CodeOf(err)
	if c == "" {
		return status.New(codes.OK, "")
	}
	st := status.New(c.GRPCCode(), err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: string(c), Domain: ErrorDomain}); derr == nil {
		return d
	}
	return st
}

// badRequest wraps ErrBadRequest with a reason.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// NotFoundError names what was not found.
type NotFoundError struct {
	What string // "account", "order", "bank operation"
	ID   string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.What, e.ID) }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(t error) bool { return t == ErrNotFound }

// InsufficientFundsError says by how much a balance fell short.
type InsufficientFundsError struct {
	Owner   string
	Balance int64
	Amount  int64
}

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("insufficient funds: %s has %d, needs %d", e.Owner, e.Balance, e.Amount)
}

// Is makes errors.Is(err, ErrInsufficientFunds) true.
func (e *InsufficientFundsError) Is(t error) bool { return t == ErrInsufficientFunds }

// ConflictError says why a request conflicts with what is stored.
type ConflictError struct {
	Reason string
}

func (e *ConflictError) Error() string { return "conflict: " + e.Reason }

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(t error) bool { return t == ErrConflict }

// RefundExceedsError says a refund would take the order's cumulative
// refunds past its amount. It is a conflict.
type RefundExceedsError struct {
	OrderID  string
	Amount   int64 // the order's amount
	Refunded int64 // refunded so far
	Asked    int64
}

func (e *RefundExceedsError) Error() string {
	return fmt.Sprintf("conflict: refund of %d on order %s would exceed its amount %d (refunded so far %d)", e.Asked, e.OrderID, e.Amount, e.Refunded)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *RefundExceedsError) Is(t error) bool { return t == ErrConflict }
