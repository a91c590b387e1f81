package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// h1Pool is a lean HTTP/1.1 client for the common case: a request whose
// body is empty or already in memory. The handler's goroutine writes the
// request and reads the response itself on a pooled keep-alive connection,
// where http.Transport hands every exchange to two goroutines per
// connection; on a proxy's hot path those hand-offs cost about as much as
// the proxying. Everything else (streamed bodies, upgrades) goes through
// http.Transport.
type h1Pool struct {
	dialer  net.Dialer
	maxIdle int

	mu     sync.Mutex
	idle   map[string][]*h1Conn
	closed bool
}

type h1Conn struct {
	addr  string
	c     net.Conn
	raw   *rawIO        // nil when c is not a *net.TCPConn
	rw    io.ReadWriter // raw, or c
	br    *bufio.Reader
	wbuf  []byte // the request being sent
	rhead []byte // the last answer's head, when do returned it raw
	// send's state, kept here so that its callback is made once per
	// connection rather than per request.
	sendFn    func(fd uintptr) bool
	out       []byte
	werr      syscall.Errno
	started   bool
	idleSince time.Time
}

// maxIdleAge drops pooled connections idle this long: servers close idle
// connections too (Go's default IdleTimeout is as long as ReadTimeout).
const maxIdleAge = 30 * time.Second

// h1MaxBody is the largest in-memory body sent through the lean client: a
// cell that answers without reading the body (a guard refusal) must not
// leave the write blocked, so the body has to fit in the socket's buffer.
const h1MaxBody = 64 << 10

func newH1Pool(dialTimeout time.Duration, maxIdle int) *h1Pool {
	return &h1Pool{dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, maxIdle: maxIdle, idle: map[string][]*h1Conn{}}
}

// fits reports whether req can take the lean path.
func (p *h1Pool) fits(req *http.Request) bool {
	if firstValue(req.Header, "Upgrade") != "" {
		return false
	}
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.GetBody != nil && req.ContentLength >= 0 && req.ContentLength <= h1MaxBody
}

func (p *h1Pool) get(ctx context.Context, addr string) (*h1Conn, bool, error) {
	p.mu.Lock()
	list := p.idle[addr]
	for len(list) > 0 {
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if time.Since(pc.idleSince) < maxIdleAge {
			p.idle[addr] = list
			p.mu.Unlock()
			return pc, true, nil
		}
		pc.c.Close()
	}
	p.idle[addr] = list
	p.mu.Unlock()
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	pc := &h1Conn{addr: addr, c: c, raw: newRawIO(c)}
	pc.rw = pc.raw.readWriter(c)
	pc.br = bufio.NewReaderSize(pc.rw, 16<<10)
	if pc.raw != nil {
		pc.sendFn = pc.sendOnce
	}
	return pc, false, nil
}

func (p *h1Pool) put(pc *h1Conn) {
	pc.idleSince = time.Now()
	p.mu.Lock()
	if !p.closed && len(p.idle[pc.addr]) < p.maxIdle {
		p.idle[pc.addr] = append(p.idle[pc.addr], pc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	pc.c.Close()
}

func (p *h1Pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = map[string][]*h1Conn{}
	p.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.c.Close()
		}
	}
}

// roundTrip sends req to addr. A pooled connection the server closed while
// it sat idle is replaced once, when the request may be sent again (as
// http.Transport does: idempotent method or an idempotency key).
func (p *h1Pool) roundTrip(ctx context.Context, addr string, req *http.Request, raw bool) (*http.Response, error) {
	for try := 0; ; try++ {
		// context.AfterFunc runs its function on its own goroutine, so a
		// context canceled before the call would race the write: refuse it
		// here instead.
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		pc, reused, err := p.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		if try > 0 && req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				pc.c.Close()
				return nil, err
			}
		}
		resp, sent, err := pc.do(ctx, req, p, raw)
		if err == nil {
			return resp, nil
		}
		pc.c.Close()
		if reused && try == 0 && ctx.Err() == nil && (!sent || replayableMethod(req)) {
			continue
		}
		return nil, err
	}
}

func replayableMethod(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get(idemHeader) != ""
}

// do writes req and reads the response head. sent reports whether the
// request may have reached the server (false: the write failed). With raw
// set, a plain answer (scanRespHead, hop-by-hop headers known by name, not
// a refusal's 421 or 503) comes back without its header parsed: its head is
// in the body's raw field, for the caller to forward as it is.
func (pc *h1Conn) do(ctx context.Context, req *http.Request, p *h1Pool, raw bool) (_ *http.Response, sent bool, _ error) {
	stop := neverStop
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
	}
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, sent, err
	}
	buf, err := appendRequest(pc.wbuf[:0], req)
	if cap(buf) <= maxKeptWriteBuf {
		pc.wbuf = buf[:0]
	}
	if err != nil {
		return fail(err)
	}
	if sent, err = pc.send(buf); err != nil {
		return fail(err)
	}
	for {
		var resp *http.Response
		var err error
		body := &h1Body{pc: pc, p: p, stop: stop}
		if head := peekHead(pc.br, nil); head != nil {
			if rh, ok := scanRespHead(head, req.Method); ok && raw && rh.hopOnly && rh.code != http.StatusMisdirectedRequest && rh.code != http.StatusServiceUnavailable {
				pc.rhead = append(pc.rhead[:0], head...)
				body.raw, body.rh = pc.rhead, rh
				resp = &http.Response{StatusCode: rh.code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: rh.length, Close: rh.close}
			} else if ok {
				resp = buildRespHead(head, rh)
			}
			if resp != nil {
				_, _ = pc.br.Discard(len(head))
				resp.Request = req
				body.lr = io.LimitedReader{R: pc.br, N: resp.ContentLength}
			}
		}
		if resp == nil {
			if resp, err = http.ReadResponse(pc.br, req); err == nil {
				body.rc = resp.Body
			}
		}
		if err != nil {
			// Written, but no answer: the server may have run it (only a
			// replayable request is sent again, as http.Transport does).
			return fail(err)
		}
		sent = true
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // interim answers (100 Continue, 103 Early Hints) are dropped
		}
		body.keep = !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1) && resp.StatusCode != http.StatusSwitchingProtocols
		resp.Body = body
		return resp, true, nil
	}
}

func neverStop() bool { return true }

// h1Body returns the connection to the pool once the body was read to its
// end, and closes it if the body is closed early.
type h1Body struct {
	rc   io.ReadCloser    // the body http.ReadResponse made, or nil:
	lr   io.LimitedReader // the Content-Length body of a head read by scanRespHead
	raw  []byte           // the head, when do returned it unparsed
	rh   respHead
	pc   *h1Conn
	p    *h1Pool
	stop func() bool
	keep bool
	done bool
}

func (b *h1Body) Read(buf []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	var n int
	var err error
	if b.rc != nil {
		n, err = b.rc.Read(buf)
	} else {
		n, err = b.lr.Read(buf)
		if err == io.EOF && b.lr.N > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(eof bool) {
	b.done = true
	// A deadline set by a cancellation that raced with the end of the
	// body would poison the next request: then the connection is closed.
	if b.stop() && eof && b.keep {
		b.p.put(b.pc)
		return
	}
	b.pc.c.Close()
}

// maxKeptWriteBuf bounds the request buffer a pooled connection keeps
// between requests.
const maxKeptWriteBuf = 16 << 10

// send writes a whole request. When nothing from the server is waiting to
// be read, it writes from inside a RawConn read and then waits there for
// the answer to arrive: Go's net.Conn.Read tries the read(2) before it
// waits, and right after a request that first read always finds nothing
// (EAGAIN), a wasted system call per request. The readiness wait is armed
// before the request is written, so the answer's arrival cannot be missed.
// sent reports whether the request may have reached the server.
func (pc *h1Conn) send(b []byte) (sent bool, err error) {
	if pc.raw == nil || pc.br.Buffered() > 0 {
		_, err := pc.rw.Write(b)
		return err == nil, err
	}
	pc.out, pc.werr, pc.started = b, 0, false
	rerr := pc.raw.rc.Read(pc.sendFn)
	b, werr := pc.out, pc.werr
	pc.out, pc.werr = nil, 0
	switch {
	case werr != 0:
		return false, pc.raw.opError("write", werr)
	case !pc.started:
		return false, rerr // failed before writing anything (closed, deadline)
	case len(b) > 0:
		_, err := pc.rw.Write(b)
		return err == nil, err
	}
	// A wait that failed (deadline, cancellation, close) after the request
	// was written is the read's error: the request may have been served.
	return true, rerr
}

// sendOnce is send's RawConn read callback (pc.sendFn): the first call
// writes pc.out and asks to wait for readability, the next one ends the
// wait.
func (pc *h1Conn) sendOnce(fd uintptr) bool {
	if pc.started {
		return true // readable: the caller reads through pc.br
	}
	pc.started = true
	n, errno := rawWrite(fd, pc.out)
	pc.out = pc.out[n:]
	switch errno {
	case 0:
		return false // all written: wait for the answer
	case syscall.EAGAIN:
		return true // the socket buffer is full: send writes the rest through pc.rw
	}
	pc.werr = errno
	return true
}

// appendRequest appends req as HTTP/1.1 to buf (what req.Write writes,
// without sorting the headers). The body, if any, is in memory with a
// known length (fits).
func appendRequest(buf []byte, req *http.Request) ([]byte, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	buf = append(buf, req.Method...)
	buf = append(buf, ' ')
	if req.URL.Opaque == "" && req.URL.RawPath == "" && req.URL.Path != "" && req.URL.Path[0] == '/' && !req.URL.ForceQuery {
		buf = append(buf, req.URL.Path...) // RequestURI, without its allocation
		if req.URL.RawQuery != "" {
			buf = append(buf, '?')
			buf = append(buf, req.URL.RawQuery...)
		}
	} else {
		buf = append(buf, req.URL.RequestURI()...)
	}
	buf = append(buf, " HTTP/1.1\r\nHost: "...)
	buf = append(buf, headerValue(host)...)
	buf = append(buf, "\r\n"...)
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		for _, v := range vv {
			if v == "" && k == "User-Agent" {
				continue
			}
			buf = append(buf, k...)
			buf = append(buf, ": "...)
			buf = append(buf, headerValue(v)...)
			buf = append(buf, "\r\n"...)
		}
	}
	if req.Close {
		buf = append(buf, "Connection: close\r\n"...)
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case hasBody:
		buf = append(buf, "Content-Length: "...)
		buf = strconv.AppendInt(buf, req.ContentLength, 10)
		buf = append(buf, "\r\n\r\n"...)
		if req.ContentLength > h1MaxBody {
			return buf, fmt.Errorf("cellrouter: request body of %d bytes on the lean path", req.ContentLength)
		}
		start := len(buf)
		buf = slices.Grow(buf, int(req.ContentLength)+1)
		n, err := io.ReadFull(req.Body, buf[start:start+int(req.ContentLength)+1])
		buf = buf[:start+n]
		if err != io.ErrUnexpectedEOF && err != io.EOF && err != nil {
			return buf, err
		}
		if int64(n) != req.ContentLength {
			return buf, fmt.Errorf("cellrouter: request body has %d bytes or more, Content-Length %d", n, req.ContentLength)
		}
		return buf, nil
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		buf = append(buf, "Content-Length: 0\r\n"...)
	}
	return append(buf, "\r\n"...), nil
}
