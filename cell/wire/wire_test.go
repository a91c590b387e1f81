package wire_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/cell"
	"github.com/cellkit/cellkit/cell/wire"
)

var refusals = []struct {
	err       error
	grpc      codes.Code
	http      int
	retryable bool
}{
	{&cell.WrongCellError{Key: "u1", Cell: "a1", Owner: "b1", OwnerIDC: "IDC-B", Epoch: 9}, codes.FailedPrecondition, 421, false},
	{&cell.FrozenError{Key: "u2", Slot: 17, Cutover: "c-1", RetryAfter: 250 * time.Millisecond, Epoch: 4}, codes.Unavailable, 503, true},
	{&cell.FencedError{Cell: "a1", Instance: "a1-0", Reason: "lease not renewed in time"}, codes.Unavailable, 503, true},
	{&cell.StaleMapError{Have: 3, Want: 5, RetryAfter: 100 * time.Millisecond}, codes.Unavailable, 503, true},
}

func TestGRPCRoundTrip(t *testing.T) {
	for _, r := range refusals {
		t.Run(string(cell.CodeOf(r.err)), func(t *testing.T) {
			st := wire.GRPCStatus(r.err)
			if st.Code() != r.grpc {
				t.Fatalf("code %v, want %v", st.Code(), r.grpc)
			}
			back := wire.FromGRPC(st.Err())
			if !reflect.DeepEqual(back, r.err) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", back, r.err)
			}
		})
	}
	// A plain gRPC error passes through untouched.
	plain := status.Error(codes.NotFound, "no such order")
	if got := wire.FromGRPC(plain); got != plain {
		t.Fatalf("plain error changed: %v", got)
	}
	if c := wire.GRPCStatus(fmt.Errorf("boom")).Code(); c != codes.Unknown {
		t.Fatalf("plain error code %v", c)
	}
	if c := wire.GRPCStatus(fmt.Errorf("x: %w", cell.ErrNoKey)).Code(); c != codes.InvalidArgument {
		t.Fatalf("NO_KEY code %v", c)
	}
}

func TestHTTPRoundTrip(t *testing.T) {
	for _, r := range refusals {
		t.Run(string(cell.CodeOf(r.err)), func(t *testing.T) {
			rec := httptest.NewRecorder()
			wire.WriteHTTP(rec, r.err)
			resp := rec.Result()
			if resp.StatusCode != r.http {
				t.Fatalf("status %d, want %d", resp.StatusCode, r.http)
			}
			if r.retryable && resp.Header.Get("Retry-After") == "" {
				t.Fatal("no Retry-After on a retryable refusal")
			}
			back := wire.FromHTTP(resp)
			if cell.CodeOf(back) != cell.CodeOf(r.err) {
				t.Fatalf("code %q, want %q", cell.CodeOf(back), cell.CodeOf(r.err))
			}
			var wc *cell.WrongCellError
			if errors.As(back, &wc) && (wc.Owner != "b1" || wc.OwnerIDC != "IDC-B" || wc.Epoch != 9 || wc.Cell != "a1") {
				t.Fatalf("WRONG_CELL details lost: %#v", wc)
			}
			var fz *cell.FrozenError
			if errors.As(back, &fz) && fz.RetryAfter != 250*time.Millisecond {
				t.Fatalf("FROZEN retry-after %v", fz.RetryAfter)
			}
		})
	}
	if err := wire.FromHTTP(&http.Response{Header: http.Header{}, StatusCode: 503}); err != nil {
		t.Fatalf("a 503 from something else is not a refusal: %v", err)
	}
}
