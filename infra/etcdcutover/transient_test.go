package etcdcutover

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellkit/cellkit/failover"
	"github.com/cellkit/cellkit/infra/etcdstore"
)

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{rpctypes.ErrStopped, true},
		{rpctypes.ErrLeaderChanged, true},
		{rpctypes.ErrNoLeader, true},
		{rpctypes.ErrTimeout, true},
		{rpctypes.ErrTimeoutDueToLeaderFail, true},
		{rpctypes.ErrTimeoutDueToConnectionLost, true},
		{rpctypes.ErrTooManyRequests, true},
		{fmt.Errorf("etcdstore: update: %w", rpctypes.ErrStopped), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{fmt.Errorf("wrapped: %w", status.Error(codes.Unavailable, "transport is closing")), true},
		{rpctypes.ErrRequestTooLarge, false},
		{rpctypes.ErrKeyNotFound, false},
		{rpctypes.ErrPermissionDenied, false},
		{status.Error(codes.InvalidArgument, "bad"), false},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{etcdstore.ErrGuardFailed, false},
		{failover.ErrMapChanged, false},
		{errors.New("other"), false},
	} {
		got := transient(tc.err)
		if errors.Is(got, failover.ErrUnavailable) != tc.want {
			t.Errorf("transient(%v) = %v, want unavailable %v", tc.err, got, tc.want)
		}
		if got.Error() != tc.err.Error() || !errors.Is(got, tc.err) {
			t.Errorf("transient(%v) changed the error: %v", tc.err, got)
		}
	}
	if transient(nil) != nil {
		t.Error("transient(nil) != nil")
	}
}
