package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
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
	addr      string
	c         net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
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
	if req.Header.Get("Upgrade") != "" {
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
	return &h1Conn{addr: addr, c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10)}, false, nil
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
func (p *h1Pool) roundTrip(ctx context.Context, addr string, req *http.Request) (*http.Response, error) {
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
		resp, sent, err := pc.do(ctx, req, p)
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
// request may have reached the server (false: the write failed, or the
// server closed the connection without a byte of answer).
func (pc *h1Conn) do(ctx context.Context, req *http.Request, p *h1Pool) (_ *http.Response, sent bool, _ error) {
	stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, sent, err
	}
	if err := writeRequest(pc.bw, req); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	for {
		var resp *http.Response
		var err error
		if head := peekHead(pc.br); head != nil {
			if r, ok := parseRespHead(head, req.Method); ok {
				_, _ = pc.br.Discard(len(head))
				r.Request = req
				r.Body = &fixedBody{r: io.LimitedReader{R: pc.br, N: r.ContentLength}}
				resp = r
			}
		}
		if resp == nil {
			resp, err = http.ReadResponse(pc.br, req)
		}
		if err != nil {
			sent = !errors.Is(err, io.EOF) // io.EOF: not a byte of answer
			return fail(err)
		}
		sent = true
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // interim answers (100 Continue, 103 Early Hints) are dropped
		}
		keep := !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1) && resp.StatusCode != http.StatusSwitchingProtocols
		resp.Body = &h1Body{rc: resp.Body, pc: pc, p: p, stop: stop, keep: keep}
		return resp, true, nil
	}
}

// h1Body returns the connection to the pool once the body was read to its
// end, and closes it if the body is closed early.
type h1Body struct {
	rc   io.ReadCloser
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
	n, err := b.rc.Read(buf)
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

// writeRequest writes req as HTTP/1.1 (what req.Write does, without sorting
// the headers). The body, if any, is in memory with a known length (fits).
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(headerValue(host))
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		for _, v := range vv {
			if v == "" && k == "User-Agent" {
				continue
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(headerValue(v))
			bw.WriteString("\r\n")
		}
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case hasBody:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n\r\n")
		n, err := io.Copy(bw, req.Body)
		if err != nil {
			return err
		}
		if n != req.ContentLength {
			return fmt.Errorf("cellrouter: request body has %d bytes, Content-Length %d", n, req.ContentLength)
		}
		return nil
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}
