// Package reqfault injects request faults in cells and routers: added
// latency, an error status, or an aborted request, switched on and off
// through etcd. EXPERIMENTAL: the document format may still change.
//
// # Experiments
//
// An experiment is a JSON document at /cellkit/<cluster>/chaos/<name>
// (Key). It selects requests by cell, IDC, method glob and shadow marker,
// hits a fraction of them, and says what to do to them:
//
//	{
//	  "name": "pay-slow-a1",
//	  "cells": ["a1"],
//	  "methods": ["/paycell.v1.Payments/*", "POST /v1/pay"],
//	  "fraction": 0.25,
//	  "latency": "150ms",
//	  "jitter": "50ms",
//	  "grpcCode": "UNAVAILABLE",
//	  "expiresAt": "2026-05-01T12:30:00Z",
//	  "who": "alice",
//	  "why": "drill 42: retries of the pay chain under a slow, failing a1"
//	}
//
// Methods are path.Match globs against the gRPC full method
// ("/paycell.v1.Payments/Pay") or, for HTTP, "METHOD /path" ("POST
// /v1/pay"); '*' does not cross '/'. Empty Cells, IDCs or Methods select
// everything, health checks included. A router has no cell, so it never
// matches an experiment that lists cells; it matches one that lists IDCs
// when its Config names its IDC. ShadowOnly experiments hit only requests
// carrying cellkit-shadow: 1 (or true).
//
// Effects: Latency plus a uniform Jitter is waited before the handler runs
// (the wait ends, and the request with it, when the request's context
// ends). HTTPStatus or GRPCCode then answers instead of the handler. Each
// applies to both protocols: an experiment with only a GRPCCode answers
// HTTP with grpc-gateway's status for that code (HTTPStatusForGRPC), one
// with only an HTTPStatus answers gRPC with the inverse (GRPCCodeForHTTP).
// HTTP error bodies are a FaultBody naming the experiment. Abort answers
// nothing: HTTP/1 connections are hijacked and closed, HTTP/2 streams
// reset (panic(http.ErrAbortHandler)); a gRPC call ends with UNAVAILABLE,
// what a client sees when its connection drops, because an interceptor can
// neither reset the stream nor close a connection other calls share. When
// several experiments match a request, every one adds its delay and the
// first by name with a status or abort decides the answer. Responses carry
// the names of the experiments that acted (ChaosMD: a header for HTTP, a
// trailer for gRPC), and Injector.Injected counts them.
//
// # Expiry
//
// Every experiment expires, at most MaxTTL (24h) after it is stored, and
// expiry is enforced twice. Put writes the key under an etcd lease that
// runs out at ExpiresAt, so etcd deletes a forgotten experiment. And an
// injector applies an experiment only while its own clock reads before
// ExpiresAt, whether or not the key is still there; it ignores keys not
// bound to a lease (ErrNoLease) and expiries further than MaxTTL (plus a
// few minutes of clock skew) ahead, since Put writes neither.
//
// Parse checks a document's rules but not its expiry against a clock, so
// that an expired stored experiment reads as expired rather than corrupt;
// Validate(now) and Put check that too. Documents that fail (bad JSON,
// unknown fields, broken rules, a name that is not the key's) are reported
// by List as *CorruptError and logged and skipped by injectors. An unusable
// document written over a good one leaves the good version in force until
// it expires or the key is deleted.
//
// # Wiring
//
// One Injector per process. A nil *Injector passes everything through, so
// wiring can stay in place with chaos switched off:
//
//	inj, err := reqfault.New(ctx, reqfault.Config{
//		Cluster: "prod", Client: etcdClient,
//		Cell: "a1", IDC: "IDC-A", // a router: Cell "" (and its IDC, if any)
//	})
//	if err != nil {
//		log.Warn("chaos disabled", "err", err) // inj is nil: pass-through
//	}
//	defer inj.Close()
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(inj.UnaryServerInterceptor(), guard.Unary()),
//		grpc.ChainStreamInterceptor(inj.StreamServerInterceptor(), guard.Stream()),
//	)
//	http.ListenAndServe(addr, inj.HTTP(mw.Handler(app)))
//
// and to run an experiment (cellctl chaos does this):
//
//	err := reqfault.Put(ctx, cli, "prod", reqfault.Experiment{
//		Name: "pay-slow-a1", Cells: []string{"a1"}, Fraction: 0.25,
//		Latency: reqfault.Duration(150 * time.Millisecond),
//		ExpiresAt: time.Now().Add(30 * time.Minute), Who: "alice", Why: "drill 42",
//	})
package reqfault
