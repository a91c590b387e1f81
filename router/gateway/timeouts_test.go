package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
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
