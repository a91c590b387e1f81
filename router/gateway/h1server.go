package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1Server serves the proxy's HTTP/1.1 connections itself for plain
// requests: HTTP/1.1, a head that fits in the read buffer, no Upgrade, no
// Expect, no Transfer-Encoding and a body of at most h1MaxBody bytes. The
// first request that is anything else makes it hand the connection, with
// the bytes already read, to a net/http server, which serves it from then
// on. net/http's server spends, per request, a background read, a
// cancelable context and a goroutine hand-off that cost a proxy about a
// third of its throughput; the plain path reads, routes and answers on the
// connection's own goroutine. HTTPConfig.StdServer turns it off.
//
// Requests on the plain path carry no cancelable context (that is part of
// what it saves): a client that leaves while its request is held or in
// flight is noticed when the answer is written.
type h1Server struct {
	g        *Gateway
	std      *http.Server // serves handed-over connections
	handoff  *chanListener
	stdDone  chan struct{}
	idleTime time.Duration
	headTime time.Duration

	closing atomic.Bool

	mu    sync.Mutex
	l     net.Listener
	conns map[*srvConn]struct{}
	wg    sync.WaitGroup
}

type srvConn struct {
	c    net.Conn
	idle atomic.Bool // between requests: Shutdown closes it
}

func newH1Server(g *Gateway, std *http.Server, addr net.Addr) *h1Server {
	s := &h1Server{g: g, std: std, idleTime: g.cfg.HTTP.IdleTimeout.D(), headTime: g.cfg.HTTP.ReadHeaderTimeout.D(),
		conns: map[*srvConn]struct{}{}, stdDone: make(chan struct{})}
	s.handoff = newChanListener(addr)
	go func() {
		defer close(s.stdDone)
		_ = std.Serve(s.handoff)
	}()
	return s
}

// Serve accepts connections until Shutdown (which closes l).
func (s *h1Server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.l = l
	closing := s.closing.Load()
	s.mu.Unlock()
	if closing {
		l.Close()
		return nil
	}
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		sc := &srvConn{c: c}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			continue
		}
		sc.idle.Store(true)
		s.conns[sc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(sc)
	}
}

func (s *h1Server) isClosing() bool { return s.closing.Load() }

// setIdle marks sc between requests (true) or busy; it reports false when
// the server is shutting down and sc should close instead. Shutdown sets
// closing before it looks at idle, and setIdle stores idle before it looks
// at closing, so a connection is either closed by Shutdown while idle or
// sees closing itself, never neither.
func (s *h1Server) setIdle(sc *srvConn, idle bool) bool {
	sc.idle.Store(idle)
	return !s.closing.Load()
}

func (s *h1Server) serveConn(sc *srvConn) {
	handedOff := false
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
		if !handedOff {
			sc.c.Close()
		}
		s.wg.Done()
	}()
	c := sc.c
	rw := newRawIO(c).readWriter(c)
	br := bufio.NewReaderSize(rw, 16<<10)
	bw := bufio.NewWriterSize(rw, 16<<10)
	remote := c.RemoteAddr().String()
	w := &h1Writer{bw: bw, header: make(http.Header, 8)}
	// The request, its URL and header map are reused from one request to
	// the next: nothing holds them once serveOne returned (a retry or the
	// ReverseProxy path works on copies).
	scratch := &headScratch{}
	headTimed := false
	headTimer := func() { // once per request, before the first read that waits
		if !headTimed {
			headTimed = true
			_ = c.SetReadDeadline(time.Now().Add(s.headTime))
		}
	}
	for {
		if !s.setIdle(sc, true) {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(s.idleTime))
		if _, err := br.Peek(1); err != nil {
			return
		}
		if !s.setIdle(sc, false) {
			return
		}
		// The rest of the request is read under the head timeout, set only
		// when a read has to wait (usually one read brought it all).
		headTimed = false
		req, ok := s.readHead(br, scratch, headTimer)
		if req != nil && req.ContentLength != 0 && (req.ContentLength < 0 || req.ContentLength > int64(br.Buffered())) {
			headTimer() // for the body
		}
		if req == nil {
			if !ok {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\n\r\nbad request")
				return
			}
			buffered, _ := br.Peek(br.Buffered())
			_ = c.SetReadDeadline(time.Time{})
			handedOff = s.handoff.give(&prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), c)})
			return
		}
		req.RemoteAddr = remote
		clear(w.header)
		*w = h1Writer{bw: bw, header: w.header, method: req.Method, close: req.Close || s.isClosing()}
		if !s.serveOne(w, req) {
			return
		}
		// Read what is left of the body so the next request starts clean.
		if _, err := io.Copy(io.Discard, req.Body); err != nil || w.close {
			return
		}
	}
}

// serveOne runs the gateway on one request; false means close the
// connection (the handler aborted, or writing failed).
func (s *h1Server) serveOne(w *h1Writer, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				s.g.log.Error("panic serving a request", "panic", p, "path", req.URL.Path)
			}
			ok = false
		}
	}()
	s.g.ServeHTTP(w, req)
	return w.finish() == nil
}

// readHead reads the next request on the plain path. nil and true: hand
// the connection to net/http (the request is not plain, or its head does
// not fit in the buffer); nil and false: answer 400 and close.
func (s *h1Server) readHead(br *bufio.Reader, sc *headScratch, beforeWait func()) (*http.Request, bool) {
	head := peekHead(br, beforeWait)
	if head == nil {
		return nil, true // an oversize or broken head: net/http answers it
	}
	req, v := parseHead(head, sc)
	switch v {
	case headFast:
		_, _ = br.Discard(len(head))
		if req.ContentLength > 0 {
			req.Body = &fixedBody{r: io.LimitedReader{R: br, N: req.ContentLength}}
		}
		return req, true
	case headBad:
		return nil, false
	case headStd:
		return nil, !ambiguousFraming(head)
	}
	if !plainRequest(head) {
		return nil, true
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	// What net/http's server checks beyond http.ReadRequest: a Host in
	// HTTP/1.1, valid header names and values.
	if req.Host == "" {
		return nil, false
	}
	for k, vv := range req.Header {
		if !validFieldName(k) {
			return nil, false
		}
		for _, v := range vv {
			if !validFieldValue(v) {
				return nil, false
			}
		}
	}
	return req, true
}

// peekHead returns the buffered head of a message, through its empty line,
// waiting for more bytes only while it is not complete in the buffer; nil
// when it does not fit in the buffer or the connection broke.
//
// beforeWait, if not nil, runs before each read that may wait.
func peekHead(br *bufio.Reader, beforeWait func()) []byte {
	from := 0
	for n := max(br.Buffered(), 1); ; {
		if n > br.Buffered() && beforeWait != nil {
			beforeWait()
		}
		b, err := br.Peek(n)
		if end := headEnd(b, from); end > 0 {
			return b[:end]
		}
		if err != nil || len(b) == br.Size() {
			return nil
		}
		from = max(len(b)-3, 0)
		// Take what is buffered already; else wait for one more byte
		// (which brings whatever else has arrived).
		n = max(br.Buffered(), len(b)+1)
	}
}

// headEnd returns the length of the head in b (through its empty line,
// which ends in CRLF or, for net/http's sake, in LF alone), searching from
// from on; 0 when b holds no complete head.
func headEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// fixedBody is the body of a request parsed by parseHead.
type fixedBody struct{ r io.LimitedReader }

func (b *fixedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.r.N > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }

// plainRequest reports whether a request head that parseHead left to
// net/http is one the plain path serves (http.ReadRequest parses it).
func plainRequest(head []byte) bool {
	head = head[:len(head)-2]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return false
	}
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return false
		}
		switch {
		case equalFold(name, "upgrade"), equalFold(name, "expect"), equalFold(name, "transfer-encoding"):
			return false
		case equalFold(name, "content-length"):
			n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
			if err != nil || n > h1MaxBody {
				return false
			}
		}
	}
	return true
}

func equalFold[T ~string | ~[]byte](b T, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Shutdown stops serving: idle connections close at once, busy ones after
// their request; handed-over connections drain through net/http. When ctx
// ends first, every connection is closed.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	if s.l != nil {
		s.l.Close()
	}
	for sc := range s.conns {
		if sc.idle.Load() {
			sc.c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for sc := range s.conns {
			sc.c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	if serr := s.std.Shutdown(ctx); serr != nil {
		s.std.Close()
		err = errors.Join(err, serr)
	}
	<-s.stdDone
	return err
}

// h1Writer is an http.ResponseWriter that writes HTTP/1.1 straight to the
// connection's buffer: a fixed-length body when the handler set
// Content-Length, else chunked.
type h1Writer struct {
	bw      *bufio.Writer
	header  http.Header
	method  string
	close   bool
	wrote   bool
	chunked bool
	nobody  bool
	status  int
}

func (w *h1Writer) Header() http.Header { return w.header }

func (w *h1Writer) WriteHeader(code int) {
	if w.wrote {
		return
	}
	if code < 200 && code >= 100 {
		return // interim answers are not passed on
	}
	w.wrote, w.status = true, code
	h := w.header
	w.nobody = w.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if _, ok := h["Content-Length"]; !ok && !w.nobody {
		w.chunked = true
		h["Transfer-Encoding"] = []string{"chunked"}
	}
	if w.close {
		h["Connection"] = []string{"close"}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{httpDate()}
	}
	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	for k, vv := range h {
		if k == "Trailer" && !w.chunked {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(headerValue(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
}

// writeRawHead writes a cell's answer head as it came, less its hop-by-hop
// headers: the head passed scanRespHead with hopOnly set (so every header
// to drop is known by name, and the answer has a Content-Length). It does
// what copying the head through an http.Header and WriteHeader would do,
// without building either, except that the status line passes as the cell
// wrote it, reason phrase included, and header names keep the cell's case.
func (w *h1Writer) writeRawHead(head []byte, rh respHead) {
	w.wrote, w.status = true, rh.code
	bw := w.bw
	eol := bytes.Index(head, crlf)
	bw.Write(head[:eol+2]) // the status line
	b := head[eol+2 : len(head)-2]
	for len(b) > 0 {
		eol := bytes.Index(b, crlf)
		hl := b[:eol+2]
		b = b[eol+2:]
		name, _, _ := bytes.Cut(hl, []byte(":"))
		if !hopByHop(name) {
			bw.Write(hl)
		}
	}
	if w.close {
		bw.WriteString("Connection: close\r\n")
	}
	if !rh.date {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// hopByHop reports whether a header name, in any case, is one of the
// hop-by-hop headers a proxy always drops (RFC 9110 section 7.6.1, and the
// ones net/http's ReverseProxy drops besides).
func hopByHop[T ~string | ~[]byte](name T) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "te")
	case 7:
		return equalFold(name, "trailer") || equalFold(name, "upgrade")
	case 10:
		return equalFold(name, "connection") || equalFold(name, "keep-alive")
	case 16:
		return equalFold(name, "proxy-connection")
	case 17:
		return equalFold(name, "transfer-encoding")
	case 18:
		return equalFold(name, "proxy-authenticate")
	case 19:
		return equalFold(name, "proxy-authorization")
	}
	return false
}

// headerValue keeps a header value from splitting the response.
func headerValue(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	b := []byte(v)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.nobody || len(p) == 0 {
		return len(p), nil
	}
	if w.chunked {
		fmt.Fprintf(w.bw, "%x\r\n", len(p))
		n, err := w.bw.Write(p)
		w.bw.WriteString("\r\n")
		return n, err
	}
	return w.bw.Write(p)
}

// Flush sends what is buffered (http.Flusher, for streamed answers).
func (w *h1Writer) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	_ = w.bw.Flush()
}

func (w *h1Writer) finish() error {
	if !w.wrote {
		if _, ok := w.header["Content-Length"]; !ok {
			w.header["Content-Length"] = []string{"0"}
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		for _, k := range w.header["Trailer"] {
			for _, v := range w.header[k] {
				w.bw.WriteString(k + ": " + headerValue(v) + "\r\n")
			}
		}
		w.bw.WriteString("\r\n")
	}
	return w.bw.Flush()
}

var dateCache atomic.Pointer[[2]string] // unix second, formatted

func httpDate() string {
	now := time.Now()
	sec := strconv.FormatInt(now.Unix(), 10)
	if d := dateCache.Load(); d != nil && d[0] == sec {
		return d[1]
	}
	d := [2]string{sec, now.UTC().Format(http.TimeFormat)}
	dateCache.Store(&d)
	return d[1]
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener hands connections to a net/http server.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
