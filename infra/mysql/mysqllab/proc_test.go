package mysqllab_test

import (
	"bufio"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellkit/cellkit/infra/mysql/mysqllab"
	"github.com/cellkit/cellkit/infra/mysql/mysqllab/mysqllabtest"
)

// helperDirEnv makes the test binary a process that starts a lab in the
// named directory and waits to be killed.
const helperDirEnv = "MYSQLLAB_TEST_HELPER_DIR"

// TestServersDieWithTheirStarter kills, with SIGKILL, a process that
// started an undetached lab: its servers must die with it, so that a
// crashed test leaves no server behind.
func TestServersDieWithTheirStarter(t *testing.T) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		lab, err := mysqllab.Start(testContext(t), mysqllab.Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		_ = lab
		os.Stdout.WriteString("READY\n")
		select {} // until killed
	}
	mysqllabtest.Require(t)
	dir := filepath.Join(t.TempDir(), "lab")
	t.Cleanup(func() {
		if lab, err := mysqllab.Attach(dir); err == nil {
			lab.Close()
		}
	})
	cmd := osexec.Command(os.Args[0], "-test.run=^TestServersDieWithTheirStarter$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "READY" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the helper exited before its lab was ready")
		}
	case <-time.After(testTimeout):
		t.Fatal("the helper's lab did not start in time")
	}
	lab, err := mysqllab.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range lab.Servers() {
		if !lab.Running(name) {
			t.Fatalf("%s not running in the helper's lab", name)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range lab.Servers() {
		for lab.Running(name) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d) outlived the process that started it", name, lab.PID(name))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
