package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/router/gateway"
)

// TestClientTimeouts: a client connection is closed when it sends nothing
// for http.idleTimeout, and a request whose head or body stalls is cut off
// after http.readHeaderTimeout; a request that arrives whole is served.
func TestClientTimeouts(t *testing.T) {
	cfg := testConfig()
	// The idle timeout is long enough to tell which timeout cut a stalled
	// request off.
	const idle, head = 2 * time.Second, 200 * time.Millisecond
	cfg.HTTP.IdleTimeout = gateway.Duration(idle)
	cfg.HTTP.ReadHeaderTimeout = gateway.Duration(head)
	e := newEnv(t, cfg)
	key := keyOf(t, "a1")
	credit := "POST /v1/credit/" + key + "?amount=2&requestId=r1 HTTP/1.1\r\nHost: x\r\nX-User-Id: " + key + "\r\nContent-Length: 10\r\n\r\n"
	cases := []struct {
		name string
		send string
		want int    // status of the answer, 0: closed without one
		body string // in the answer
	}{
		{"idle", "", 0, ""},
		{"stalled head", "GET /v1/balance/" + key + " HTTP/1.1\r\nHost: x\r\n", 0, ""},
		{"stalled body", credit + "abc", http.StatusBadRequest, "BAD_BODY"},
		{"whole request", credit + "0123456789", http.StatusOK, `"requestId":"r1"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.httpAddr)
			must(t, err)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // far beyond the timeouts
			start := time.Now()
			_, err = io.WriteString(c, tc.send)
			must(t, err)
			br := bufio.NewReader(c)
			got, body := 0, ""
			if resp, err := http.ReadResponse(br, nil); err == nil {
				got = resp.StatusCode
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the gateway kept the connection open")
			}
			if got != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("answer %d %q, want %d with %q", got, body, tc.want, tc.body)
			}
			if tc.want == http.StatusOK {
				return // a keep-alive connection: it is closed once idle, as "idle" checks
			}
			if took := time.Since(start); tc.send != "" && took >= idle {
				t.Fatalf("cut off after %v: by the idle timeout, not the %v head timeout", took, head)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("the gateway kept the connection open")
				}
				if !strings.Contains(err.Error(), "reset") {
					t.Fatalf("after the answer: %q %v (want the connection closed)", rest, err)
				}
			}
		})
	}
}

// TestPipelining: requests a client sends before reading the answers to
// the previous ones (in one write, or while the previous one is being
// served, or still at the cell) are all answered, in order, on the lean
// path. (A wait for the next request armed as an answer is written, which
// would save a read(2), is not woken by a request that arrived before it:
// the last case is the one such a wait would miss.)
func TestPipelining(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "a1")
	c, err := net.Dial("tcp", e.httpAddr)
	must(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // a stuck wait fails the test
	br := bufio.NewReader(c)
	get := func(i int) string {
		return "GET /v1/balance/" + key + "?n=" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: x\r\nX-User-Id: " + key + "\r\n\r\n"
	}
	answer := func() {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		must(t, err)
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"cell":"a1"`) {
			t.Fatalf("answer %d %q", resp.StatusCode, b)
		}
	}
	n := 0
	send := func(k int) {
		t.Helper()
		var b strings.Builder
		for range k {
			b.WriteString(get(n))
			n++
		}
		_, err := io.WriteString(c, b.String())
		must(t, err)
	}
	send(3) // three in one write
	answer()
	answer()
	answer()
	for range 20 { // two writes, the second before the first is answered
		send(1)
		send(1)
		answer()
		answer()
	}
	for range 20 { // and one at a time still works
		send(1)
		answer()
	}
	// A request that arrives while the previous one is still at the cell:
	// it is in the socket before the wait for it is armed.
	_, err = io.WriteString(c, "GET /slow/1 HTTP/1.1\r\nHost: x\r\nX-User-Id: "+key+"\r\n\r\n")
	must(t, err)
	<-e.cells["a1"].slowStarted
	send(1) // on loopback, in the gateway's socket once the write returns
	close(e.cells["a1"].slowRelease)
	resp, err := http.ReadResponse(br, nil)
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "slow done by a1" {
		t.Fatalf("slow answer %d %q", resp.StatusCode, b)
	}
	answer()
}
