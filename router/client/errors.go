package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/cell"
)

// Sentinels, matched with errors.Is.
var (
	// ErrNoKey: the call's context carries no routing key (see WithKey).
	// The SDK never sends a keyless call to "any cell".
	ErrNoKey = errors.New("cellkit client: no routing key in the call's context (use client.WithKey)")
	// ErrNoOwner: the table names no owner for the key's slot.
	ErrNoOwner = errors.New("cellkit client: no cell owns the key")
	// ErrNoInstance: discovery lists no instance of the owner cell.
	ErrNoInstance = errors.New("cellkit client: no instance of the owner cell is known")
	// ErrFrozenWaitExceeded: Retry.FrozenWait elapsed before the flip.
	ErrFrozenWaitExceeded = errors.New("cellkit client: key still frozen after the configured wait")
	// ErrBadConfig: a Config or Transport field is invalid.
	ErrBadConfig = errors.New("cellkit client: bad configuration")
)

// NoKeyError is returned for a call without a routing key. errors.Is(err,
// ErrNoKey) holds; its gRPC status is InvalidArgument.
type NoKeyError struct {
	Method string // the gRPC full method or the HTTP method and URL
	Err    error  // why Transport.Key found none, if it said
}

func (e *NoKeyError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("cellkit client: %s: no routing key: %v", e.Method, e.Err)
	}
	return fmt.Sprintf("cellkit client: %s: no routing key in the call's context (use client.WithKey)", e.Method)
}

// Is makes errors.Is(err, ErrNoKey) true.
func (e *NoKeyError) Is(t error) bool { return t == ErrNoKey }

// Unwrap returns Err.
func (e *NoKeyError) Unwrap() error { return e.Err }

// GRPCStatus maps the error to codes.InvalidArgument.
func (e *NoKeyError) GRPCStatus() *status.Status { return status.New(codes.InvalidArgument, e.Error()) }

// CellUnavailableError says the owner cell cannot be reached right now:
// its circuit breaker is open (Err is gobreaker.ErrOpenState or
// ErrTooManyRequests) or, over HTTP, no instance of it is known
// (ErrNoInstance). The call was not sent anywhere: writes never fall back
// to another cell. Its gRPC status is Unavailable.
type CellUnavailableError struct {
	Cell string
	Err  error
}

func (e *CellUnavailableError) Error() string {
	return fmt.Sprintf("cellkit client: cell %s unavailable: %v", e.Cell, e.Err)
}

// Unwrap returns the reason.
func (e *CellUnavailableError) Unwrap() error { return e.Err }

// GRPCStatus maps the error to codes.Unavailable.
func (e *CellUnavailableError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// FrozenWaitError says the key stayed frozen (a cutover was moving it) for
// as long as the call could wait: until its deadline or Retry.FrozenWait.
// errors.Is(err, cell.ErrFrozen) holds, and so does errors.Is with the
// reason (context.DeadlineExceeded, context.Canceled or
// ErrFrozenWaitExceeded). Its gRPC status is DeadlineExceeded, Canceled or
// Unavailable accordingly.
type FrozenWaitError struct {
	Key    string
	Epoch  uint64        // the epoch at which the key was last seen frozen
	Waited time.Duration // how long the call waited for the flip
	Err    error         // why the wait ended
}

func (e *FrozenWaitError) Error() string {
	return fmt.Sprintf("cellkit client: key %q frozen at epoch %d; waited %v for the flip: %v", e.Key, e.Epoch, e.Waited, e.Err)
}

// Unwrap returns cell.ErrFrozen and the reason the wait ended.
func (e *FrozenWaitError) Unwrap() []error { return []error{cell.ErrFrozen, e.Err} }

// GRPCStatus maps the error to a status code by why the wait ended.
func (e *FrozenWaitError) GRPCStatus() *status.Status {
	code := codes.Unavailable
	switch {
	case errors.Is(e.Err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(e.Err, context.Canceled):
		code = codes.Canceled
	}
	return status.New(code, e.Error())
}

// refusedError is a guard refusal that ends a gRPC call: errors.As finds the
// typed cell error (*cell.WrongCellError, ...) and status.FromError the
// status the guard sent.
type refusedError struct {
	typed error
	st    *status.Status
}

func (e *refusedError) Error() string              { return e.typed.Error() }
func (e *refusedError) Unwrap() error              { return e.typed }
func (e *refusedError) GRPCStatus() *status.Status { return e.st }
