package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestH1PoolReusesAndRecovers(t *testing.T) {
	var closed, conns atomic.Int64
	srv := &http.Server{
		IdleTimeout: 200 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/continue" {
				w.WriteHeader(http.StatusContinue) // an interim answer the client must skip
			}
			if r.URL.Path == "/close" {
				w.Header().Set("Connection", "close")
			}
			b, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b)+" "+strings.Repeat("x", 100000))
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed:
				closed.Add(1)
			}
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	p := newH1Pool(time.Second, 4)
	defer p.close()
	addr := l.Addr().String()

	get := func(method, path, body string) string {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if body == "" {
			req.Body = http.NoBody
		}
		resp, err := p.roundTrip(context.Background(), addr, req, false)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, err)
		}
		return string(b[:min(len(b), 40)])
	}
	if got := get("GET", "/a", ""); !strings.HasPrefix(got, "GET /a  x") {
		t.Fatalf("got %q", got)
	}
	if got := get("POST", "/b", "hello"); !strings.HasPrefix(got, "POST /b hello x") {
		t.Fatalf("got %q", got)
	}
	if conns.Load() != 1 {
		t.Fatalf("%d connections, want 1 reused", conns.Load())
	}
	get("GET", "/continue", "")
	// The server closes the pooled connection while it is idle: the next
	// request gets a fresh one.
	waitClosed := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for closed.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the server closed %d idle connections, want %d", closed.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitClosed(1)
	get("GET", "/after", "")
	if conns.Load() != 2 {
		t.Fatalf("%d connections, want a second one after the idle one was closed", conns.Load())
	}
	// Again with a POST carrying an idempotency key: it may be sent again
	// on a fresh connection. (Without one it would not be: a connection that
	// closes with no answer may still have run the request; http.Transport
	// decides the same way.)
	waitClosed(2)
	req, _ := http.NewRequest("POST", "http://"+addr+"/after-post", strings.NewReader("again"))
	req.Header.Set("Idempotency-Key", "k1")
	resp, err := p.roundTrip(context.Background(), addr, req, false)
	if err != nil {
		t.Fatalf("POST with an idempotency key on a connection the server closed: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "POST /after-post again x") {
		t.Fatalf("got %q", b[:min(len(b), 40)])
	}
	if conns.Load() != 3 {
		t.Fatalf("%d connections, want a second one after the idle one was closed", conns.Load())
	}
	get("GET", "/close", "") // Connection: close is honoured
	get("GET", "/after-close", "")
	if conns.Load() != 4 {
		t.Fatalf("%d connections, want 4", conns.Load())
	}
	// A canceled request fails promptly.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequest("GET", "http://"+addr+"/x", http.NoBody)
	if _, err := p.roundTrip(ctx, addr, req, false); err == nil {
		t.Fatal("canceled request succeeded")
	}
}
