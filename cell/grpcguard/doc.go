// Package grpcguard puts a cell guard (*cell.Guard) in front of a gRPC
// server: unary and stream server interceptors that admit a request only
// for a key this cell owns at its current epoch.
//
// Each method is declared read or write, with the key taken from the
// cellkit-key metadata or, with Method.Key, from a field of the request
// message (for streams, of the first message). Methods not declared follow
// Config.Default (a write that needs a key, unless changed); health checks
// and reflection are exempt. The cellkit-epoch metadata, when present, is
// the epoch the caller routed with: a guard behind it waits briefly to
// catch up, then refuses with STALE_MAP. A malformed epoch is
// InvalidArgument.
//
// Refusals (WRONG_CELL, FROZEN, FENCED, STALE_MAP, NO_KEY) leave through
// cell/wire's GRPCStatus only, so SDKs and routers decode them with
// wire.FromGRPC. Admitted requests get the cellkit-cell response header,
// refused ones the cellkit-cell trailer. The handler's context is cancelled,
// with the *cell.FencedError as its cause, if the instance fences itself
// while the request runs. OnAdmit and OnRelease report an admission.Record
// per admitted request; OnDecision reports every decision (for metrics).
//
//	icpt, err := grpcguard.New(inst.Guard(), grpcguard.Config{
//		Methods: map[string]grpcguard.Method{
//			"/pay.v1.Pay/Charge":  {Kind: cell.Write, Key: func(req any) (string, error) { return req.(*pb.ChargeRequest).GetUserId(), nil }},
//			"/pay.v1.Pay/Status":  {Kind: cell.Read},
//		},
//		OnDecision: metrics.Decided,
//	})
//	if err != nil {
//		return err
//	}
//	srv := grpc.NewServer(icpt.ServerOptions()...)
package grpcguard
