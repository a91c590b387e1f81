package gateway

import (
	"bufio"
	"bytes"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// stdRequest reads head as net/http's server does: http.ReadRequest and
// the server's own checks (a Host for HTTP/1.1, one valid Host, valid
// header names and values); the server then takes Host out of the header.
func stdRequest(head []byte) (*http.Request, bool) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return nil, false
	}
	// http.ReadRequest takes Host out of the header; the server checks
	// the header as read, before that.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, false
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, false
	}
	hosts, ok := mh["Host"]
	if req.ProtoAtLeast(1, 1) && (!ok || len(hosts) == 0) && req.Method != "CONNECT" {
		return nil, false
	}
	if len(hosts) == 1 && !validHostHeader(hosts[0]) {
		return nil, false
	}
	return req, true
}

// validHostHeader is httpguts.ValidHostHeader (net/http's server).
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'()*+,-./:;=?@[]_~", c) >= 0 || c >= 0x80
		if !ok {
			return false
		}
	}
	return true
}

var headSeeds = []string{
	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a/b;c=d?x=1&y=%20#f HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: wrk\r\nX-Route-Key: u42\r\n\r\n",
	"POST /v1/credit/u1?amount=2 HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\nconnection: keep-alive, Close\r\n\r\nhello",
	"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: x\n\n",
	"GET http://a/b HTTP/1.1\r\nHost: y\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET /%41 HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX y: z\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
}

// FuzzHeadParser feeds request heads to parseHead and to net/http: what
// parseHead accepts, net/http must accept with the same method, target,
// Host, headers, Content-Length and framing.
func FuzzHeadParser(f *testing.F) {
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		i := bytes.Index(data, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		head := data[:i+4]
		req, v := parseHead(head, nil)
		if v != headFast {
			return
		}
		std, ok := stdRequest(head)
		if !ok {
			t.Fatalf("parseHead accepts what net/http refuses: %q", head)
		}
		switch {
		case req.Method != std.Method,
			req.RequestURI != std.RequestURI,
			req.URL.String() != std.URL.String(),
			req.URL.Path != std.URL.Path,
			req.URL.RawPath != std.URL.RawPath,
			req.URL.RawQuery != std.URL.RawQuery,
			req.Host != std.Host,
			req.ContentLength != std.ContentLength,
			len(std.TransferEncoding) != 0,
			req.Close != std.Close,
			req.ProtoMajor != std.ProtoMajor || req.ProtoMinor != std.ProtoMinor,
			!maps.EqualFunc(req.Header, std.Header, slices.Equal[[]string]):
			t.Fatalf("parseHead and net/http disagree on %q:\nfast %s %q host %q cl %d close %v %v\nstd  %s %q host %q cl %d close %v te %v %v",
				head, req.Method, req.URL, req.Host, req.ContentLength, req.Close, req.Header,
				std.Method, std.URL, std.Host, std.ContentLength, std.Close, std.TransferEncoding, std.Header)
		}
	})
}

var respSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n\r\n",
	"HTTP/1.1 404\r\ncontent-length: 0\r\nConnection: close\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nDate: Sat, 21 Nov 2026 12:00:00 GMT\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 201 Created\r\nconnection: close, keep-alive\r\nte: x\r\nUPGRADE: h2c\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\n",
}

// FuzzRespHeadParser: what parseRespHead accepts, http.ReadResponse reads
// the same way.
func FuzzRespHeadParser(f *testing.F) {
	for _, s := range respSeeds {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		i := bytes.Index(data, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		h := data[:i+4]
		resp, ok := parseRespHead(h, method)
		if !ok {
			return
		}
		std, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(h)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("parseRespHead accepts what net/http refuses (%v): %q", err, h)
		}
		if resp.StatusCode != std.StatusCode || resp.Status != std.Status || resp.ContentLength != std.ContentLength ||
			len(std.TransferEncoding) != 0 || resp.Close != std.Close || std.ProtoMajor != 1 || std.ProtoMinor != 1 ||
			!maps.EqualFunc(resp.Header, std.Header, slices.Equal[[]string]) {
			t.Fatalf("parseRespHead and net/http disagree on %q:\nfast %q cl %d close %v %v\nstd  %q cl %d close %v te %v %v",
				h, resp.Status, resp.ContentLength, resp.Close, resp.Header, std.Status, std.ContentLength, std.Close, std.TransferEncoding, std.Header)
		}
	})
}

// FuzzRawRespHead: a head forwarded raw (writeRawHead) reads, at the
// client, as the same head copied through an http.Header and WriteHeader
// (the path every other answer takes), but for the reason phrase.
func FuzzRawRespHead(f *testing.F) {
	for _, s := range respSeeds {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, closing bool) {
		i := bytes.Index(data, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		h := data[:i+4]
		rh, ok := scanRespHead(h, http.MethodGet)
		if !ok || !rh.hopOnly {
			return
		}
		var raw, std bytes.Buffer
		wr := &h1Writer{bw: bufio.NewWriter(&raw), header: http.Header{}, method: http.MethodGet, close: closing}
		wr.writeRawHead(h, rh)
		wr.bw.Flush()
		resp, ok := parseRespHead(h, http.MethodGet)
		if !ok {
			t.Fatalf("scanRespHead accepts %q, parseRespHead does not", h)
		}
		removeHopByHop(resp.Header)
		ws := &h1Writer{bw: bufio.NewWriter(&std), header: http.Header{}, method: http.MethodGet, close: closing}
		maps.Copy(ws.header, resp.Header)
		ws.WriteHeader(resp.StatusCode)
		ws.bw.Flush()
		if wr.status != ws.status || wr.chunked || ws.chunked {
			t.Fatalf("status %d chunked %v, want %d chunked %v", wr.status, wr.chunked, ws.status, ws.chunked)
		}
		read := func(b []byte) *http.Response {
			r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("client cannot read %q: %v", b, err)
			}
			if !rh.date {
				r.Header.Del("Date") // written by each path at its own instant
			}
			return r
		}
		a, b := read(raw.Bytes()), read(std.Bytes())
		// The status line passes as the cell wrote it (the parsed path
		// writes Go's reason phrase): only the code has to match.
		if a.StatusCode != b.StatusCode || a.ContentLength != b.ContentLength || a.Close != b.Close || !maps.EqualFunc(a.Header, b.Header, slices.Equal[[]string]) {
			t.Fatalf("raw and parsed forwarding disagree on %q:\nraw %q cl %d close %v %v\nstd %q cl %d close %v %v",
				h, a.Status, a.ContentLength, a.Close, a.Header, b.Status, b.ContentLength, b.Close, b.Header)
		}
	})
}
