package gateway

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP connection's non-blocking socket with raw
// system calls, inside syscall.RawConn's Read and Write (which lock the
// descriptor and wait for readiness, deadlines and Close included).
//
// Go's own reads and writes enter the scheduler's syscall state, and on a
// busy proxy that state costs more than the calls: sysmon, which looks for
// Ps stuck in system calls every 20 µs, keeps finding some (a loopback
// write runs the receiver's TCP input and wakes it; on shared cores the
// thread is often descheduled meanwhile), hands their P to another thread
// and never backs off to its longer sleeps. A profile of cellrouter under
// load put ~10 % of its CPU in sysmon's sleeps and the thread hand-offs.
// A read or write of a non-blocking socket returns at once (EAGAIN instead
// of waiting; a loopback write does its work and returns), so it can run
// as a raw call that keeps its P. The buffers are annotated for neither the
// race detector nor the sanitizers (syscall.Read would be).
type rawIO struct {
	c              net.Conn
	rc             syscall.RawConn
	readFn         func(fd uintptr) bool
	writeFn        func(fd uintptr) bool
	rbuf, wbuf     []byte
	rn, wn         int
	rerrno, werrno syscall.Errno
}

// newRawIO returns c's rawIO, or nil when c is not a TCP connection.
func newRawIO(c net.Conn) *rawIO {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{c: c, rc: rc}
	r.readFn, r.writeFn = r.readOnce, r.writeAll
	return r
}

// readWriter returns r, or c itself when r is nil.
func (r *rawIO) readWriter(c net.Conn) io.ReadWriter {
	if r == nil {
		return c
	}
	return r
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	n, errno := r.rn, r.rerrno
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, err // a deadline, or the connection closed
	case errno != 0:
		return 0, r.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		default:
			r.rerrno = e
			return true
		}
	}
}

func (r *rawIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wbuf, r.wn, r.werrno = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n, errno := r.wn, r.werrno
	r.wbuf = nil
	switch {
	case errno != 0:
		return n, r.opError("write", errno)
	case err != nil:
		return n, err
	}
	return n, nil
}

// writeAll writes r.wbuf[r.wn:], waiting for room when the socket's buffer
// is full.
func (r *rawIO) writeAll(fd uintptr) bool {
	n, e := rawWrite(fd, r.wbuf[r.wn:])
	r.wn += n
	switch e {
	case 0:
		return true
	case syscall.EAGAIN:
		return false // wait until writable
	}
	r.werrno = e
	return true
}

// rawWrite writes what it can of b to fd without waiting: the bytes
// written, and the error (EAGAIN: the socket's buffer is full).
func rawWrite(fd uintptr, b []byte) (int, syscall.Errno) {
	w := 0
	for w < len(b) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[w])), uintptr(len(b)-w))
		switch e {
		case 0:
			w += int(n)
		case syscall.EINTR:
		default:
			return w, e
		}
	}
	return w, 0
}

func (r *rawIO) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
