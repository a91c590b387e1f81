package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// smuggling are classic request-smuggling heads (and other malformed
// ones): the gateway must refuse each (400, or 501 from net/http for an
// unsupported Transfer-Encoding) and close the connection, so that what
// follows is never read as a second request.
var smuggling = []struct{ name, head string }{
	{"CL.TE", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"},
	{"TE.CL", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"},
	{"TE.TE two values", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"},
	{"TE.TE list", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"},
	{"TE.TE xchunked", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE space before colon", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE tab", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE obs-fold", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE case", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 4\r\ntRANSFER-eNCODING: chunked\r\n\r\n0\r\n\r\n"},
	{"TE after bare LF", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 4\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"duplicate CL", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\nGET /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\n\r\n"},
	{"duplicate equal CL", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
	{"CL list", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 2, 2\r\n\r\nok"},
	{"CL signed", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: +2\r\n\r\nok"},
	{"CL negative", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: -1\r\n\r\nok"},
	{"CL hex", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: 0x2\r\n\r\nok"},
	{"CL empty", "POST /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nContent-Length: \r\n\r\nok"},
	{"obs-fold", "GET /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nX-A: a\r\n b\r\n\r\n"},
	{"missing Host", "GET /v1/x HTTP/1.1\r\nX-User-Id: KEY\r\n\r\n"},
	{"two Hosts", "GET /v1/x HTTP/1.1\r\nHost: x\r\nHost: y\r\nX-User-Id: KEY\r\n\r\n"},
	{"extra space in request line", "GET  /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\n\r\n"},
	{"space in target", "GET /v1/x /y HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\n\r\n"},
	{"bad header name", "GET /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nX(A): b\r\n\r\n"},
	{"bare CR in value", "GET /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nX-A: a\rb\r\n\r\n"},
	{"NUL in value", "GET /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\nX-A: a\x00b\r\n\r\n"},
}

func TestSmugglingRefused(t *testing.T) {
	e := newEnv(t, testConfig())
	key := keyOf(t, "a1")
	for _, tc := range smuggling {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.httpAddr)
			must(t, err)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			// A valid request follows: it must not be answered.
			next := "GET /v1/x HTTP/1.1\r\nHost: x\r\nX-User-Id: KEY\r\n\r\n"
			_, err = io.WriteString(c, strings.ReplaceAll(tc.head+next, "KEY", key))
			must(t, err)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			must(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotImplemented {
				t.Fatalf("answered %s, want 400 or 501", resp.Status)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the refusal: %q %v (want the connection closed)", rest, err)
			}
		})
	}
	// The same connection still serves a plain request.
	if r := e.get("/v1/balance/"+key, nil); r.status != 200 {
		t.Fatalf("plain request: %d %s", r.status, r.body)
	}
}
