package mysqllab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// binaries finds mariadbd and mariadb-install-db and checks the server is
// MariaDB 10.3 or newer (semi-sync built in, multi-source replication,
// MASTER_GTID_WAIT). It returns the server's version line.
func binaries(mariadbd, installDB string) (server, install, version string, err error) {
	server, err = findBinary(mariadbd, "mariadbd", "mysqld")
	if err != nil {
		return "", "", "", err
	}
	install, err = findBinary(installDB, "mariadb-install-db", "mysql_install_db")
	if err != nil {
		return "", "", "", err
	}
	out, err := exec.Command(server, "--version").CombinedOutput()
	if err != nil {
		return "", "", "", fmt.Errorf("%w: %s --version: %v: %s", ErrNotInstalled, server, err, bytes.TrimSpace(out))
	}
	version = strings.TrimSpace(string(out))
	if !supported(version) {
		return "", "", "", fmt.Errorf("%w: %s is %q; the lab needs MariaDB 10.3 or newer", ErrNotInstalled, server, version)
	}
	return server, install, version, nil
}

// Installed reports whether the lab can start servers on this machine: a
// MariaDB 10.3+ server and its install script are found. The error says
// what is missing.
func Installed() error {
	_, _, _, err := binaries("", "")
	return err
}

var versionRE = regexp.MustCompile(`Ver (\d+)\.(\d+)\.\d+-MariaDB`)

func supported(version string) bool {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 10 || (major == 10 && minor >= 3)
}

// findBinary returns explicit if set, else the first of names found on PATH
// or in the system directories Debian and RPM distributions use (mariadbd
// lives in /usr/sbin, which a non-root PATH often lacks).
func findBinary(explicit string, names ...string) (string, error) {
	if explicit != "" {
		p, err := exec.LookPath(explicit)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNotInstalled, err)
		}
		return p, nil
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/usr/libexec", "/usr/bin", "/usr/local/mysql/bin"} {
			p := filepath.Join(dir, n)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%w: none of %s found on PATH or in /usr/sbin", ErrNotInstalled, strings.Join(names, ", "))
}

// pidAlive reports whether pid is a live (not zombie) mariadbd serving
// datadir. The datadir check guards against a recycled pid: lab.json can
// outlive its servers by days.
func pidAlive(pid int, datadir string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		// No /proc (not Linux): trust kill(0).
		return !os.IsNotExist(err) || !procMounted()
	}
	// Field 3, after "pid (comm)", is the state; Z is a zombie, X dead.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		if s := stat[i+2]; s == 'Z' || s == 'X' {
			return false
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return true
	}
	return bytes.Contains(cmdline, []byte("--datadir="+datadir+"\x00"))
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// waitGone polls until alive reports false or timeout passes.
func waitGone(alive func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// logTail returns the last n lines of a log file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
