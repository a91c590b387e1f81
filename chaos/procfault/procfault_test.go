package procfault_test

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/chaos/procfault"
)

// state reads a process's state letter from /proc (R, S, T, Z...).
func state(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestSignals(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	if err := procfault.Stop(pid); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, "T")
	if err := procfault.Cont(pid); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, "S")

	p, err := procfault.StartPulse(pid, 30*time.Millisecond, 60*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Count() < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d stops in 5s", p.Count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	n, err := p.End()
	if err != nil || n < 2 {
		t.Fatalf("pulse: %d stops, %v", n, err)
	}
	waitState(t, pid, "S") // left running

	if err := procfault.Kill(pid); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("wait: %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not killed")
	}
	if err := procfault.Kill(pid); !errors.Is(err, procfault.ErrNoProcess) {
		t.Fatalf("kill of a dead pid: %v", err)
	}
	if _, err := procfault.StartPulse(pid, time.Second, time.Second); err == nil {
		t.Fatal("stopFor == every accepted")
	}
	if err := procfault.Kill(1); !errors.Is(err, procfault.ErrNoProcess) {
		t.Fatalf("pid 1: %v", err)
	}
}

func waitState(t *testing.T, pid int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for state(t, pid) != want {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d state %s, want %s", pid, state(t, pid), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
