package reqfault_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/cellkit/cellkit/chaos/reqfault"
)

// An experiment document, and which requests it hits.
func ExampleMatch() {
	e, err := reqfault.Parse([]byte(`{
		"name": "pay-slow-a1",
		"cells": ["a1"],
		"methods": ["/paycell.v1.Payments/*", "POST /v1/pay"],
		"fraction": 0.25,
		"latency": "150ms",
		"grpcCode": "UNAVAILABLE",
		"expiresAt": "2026-05-01T12:30:00Z"
	}`))
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	pay := reqfault.Request{Cell: "a1", IDC: "IDC-A", Method: "/paycell.v1.Payments/Pay"}
	fmt.Println(reqfault.Match(e, pay, now, 0.1))                                                    // selected, and in the 25%
	fmt.Println(reqfault.Match(e, pay, now, 0.3))                                                    // selected, not in the 25%
	fmt.Println(reqfault.Match(e, reqfault.Request{IDC: "IDC-A", Method: "POST /v1/pay"}, now, 0.1)) // a router: no cell
	fmt.Println(reqfault.Match(e, pay, now.Add(time.Hour), 0.1))                                     // expired
	// Output:
	// true
	// false
	// false
	// false
}

// Wiring an injector into a cell's servers, and running an experiment.
// (Compiled, not run: it needs etcd.)
func Example() {
	_ = func(ctx context.Context, cli *clientv3.Client, app http.Handler) error {
		inj, err := reqfault.New(ctx, reqfault.Config{Cluster: "prod", Client: cli, Cell: "a1", IDC: "IDC-A"})
		if err != nil {
			inj = nil // chaos off: the middleware passes everything through
		}
		defer inj.Close()
		srv := grpc.NewServer(
			grpc.ChainUnaryInterceptor(inj.UnaryServerInterceptor()),
			grpc.ChainStreamInterceptor(inj.StreamServerInterceptor()),
		)
		_ = srv
		go http.ListenAndServe(":8080", inj.HTTP(app))

		return reqfault.Put(ctx, cli, "prod", reqfault.Experiment{
			Name: "pay-slow-a1", Cells: []string{"a1"}, Fraction: 0.25,
			Latency:   reqfault.Duration(150 * time.Millisecond),
			ExpiresAt: time.Now().Add(30 * time.Minute), Who: "alice", Why: "drill 42",
		})
	}
}
