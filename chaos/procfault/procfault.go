package procfault

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ErrNoProcess is returned for a pid that is not a running process.
var ErrNoProcess = errors.New("procfault: no such process")

func signal(pid int, sig syscall.Signal) error {
	if pid <= 1 {
		return fmt.Errorf("procfault: pid %d: %w", pid, ErrNoProcess)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("procfault: pid %d: %w", pid, ErrNoProcess)
		}
		return fmt.Errorf("procfault: %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// Kill sends SIGKILL: the process dies at once, without flushing or
// closing anything.
func Kill(pid int) error { return signal(pid, syscall.SIGKILL) }

// Stop sends SIGSTOP: the process freezes, its sockets stay open.
func Stop(pid int) error { return signal(pid, syscall.SIGSTOP) }

// Cont sends SIGCONT: a stopped process runs again.
func Cont(pid int) error { return signal(pid, syscall.SIGCONT) }

// Pulse stops a process for stopFor out of every period until End.
type Pulse struct {
	pid  int
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu     sync.Mutex
	pulses int
	err    error
}

// StartPulse starts pulsing pid. stopFor must be shorter than every.
func StartPulse(pid int, stopFor, every time.Duration) (*Pulse, error) {
	if stopFor <= 0 || every <= stopFor {
		return nil, fmt.Errorf("procfault: pulse stopFor %v every %v: want 0 < stopFor < every", stopFor, every)
	}
	if err := signal(pid, 0); err != nil {
		return nil, err
	}
	p := &Pulse{pid: pid, done: make(chan struct{})}
	p.wg.Add(1)
	go p.run(stopFor, every)
	return p, nil
}

func (p *Pulse) run(stopFor, every time.Duration) {
	defer p.wg.Done()
	defer Cont(p.pid) // never leave it stopped
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := Stop(p.pid); err != nil {
			p.fail(err)
			return
		}
		p.mu.Lock()
		p.pulses++
		p.mu.Unlock()
		select {
		case <-p.done:
			return
		case <-time.After(stopFor):
		}
		if err := Cont(p.pid); err != nil {
			p.fail(err)
			return
		}
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
}

func (p *Pulse) fail(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

// Count returns the number of stops sent so far.
func (p *Pulse) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pulses
}

// End stops pulsing and leaves the process running (SIGCONT). It returns
// the number of stops sent and the first error, if the process went away.
func (p *Pulse) End() (int, error) {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pulses, p.err
}
