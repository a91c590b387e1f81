package testsvc

import (
	"context"
	"net"
	"net/http/httptest"
	"net/url"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestGRPCAndHTTP(t *testing.T) {
	srv := NewServer("a1")
	g := grpc.NewServer()
	srv.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := NewClient(cc)
	ctx := context.Background()
	for range 2 { // the retry is idempotent
		e, err := c.Credit(ctx, "u1", 10, "r1")
		if err != nil || e.Balance != 10 || e.Cell != "a1" {
			t.Fatalf("Credit = %+v, %v", e, err)
		}
	}
	if _, err := c.Credit(ctx, "u1", 5, "r2"); err != nil {
		t.Fatal(err)
	}
	if b, cell, err := c.Balance(ctx, "u1"); err != nil || b != 15 || cell != "a1" {
		t.Fatalf("Balance = %v %v %v", b, cell, err)
	}
	st, err := c.Statement(ctx, "u1")
	if err != nil || len(st) != 2 || st[1].RequestID != "r2" {
		t.Fatalf("Statement = %+v, %v", st, err)
	}
	hs := httptest.NewServer(srv.HTTPHandler())
	t.Cleanup(hs.Close)
	resp, err := hs.Client().Post(hs.URL+"/v1/credit/u1?amount=1&requestId="+url.QueryEscape("r3"), "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP credit: %v %v", resp, err)
	}
	resp.Body.Close()
	if srv.Balance("u1") != 16 {
		t.Fatalf("balance %v", srv.Balance("u1"))
	}
}
