package signals_test

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair without making it anyone's
// controlling terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx") // non-blocking: Close ends a pending Read
	t.Cleanup(func() { _ = master.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { _ = slave.Close() })
	return master, slave
}

// A helper wrapper runs as a session leader on a fresh pty (so the pty is
// its controlling terminal and its group the foreground) and starts a child
// that reads the terminal.
func TestForeground_Terminal(t *testing.T) {
	run := func(t *testing.T, mode string) (master *os.File, lines <-chan string, child, fg, self int) {
		t.Helper()
		master, slave := openPTY(t)
		go func() { _, _ = io.Copy(io.Discard, master) }() // echo and such
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		wrapper := helperCmd(t, "tty-wrapper", mode)
		wrapper.Stdin, wrapper.Stdout = slave, w
		wrapper.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if err := wrapper.Start(); err != nil {
			t.Fatal(err)
		}
		_ = w.Close()
		_ = slave.Close()
		lines = lineReader(r)
		// The wrapper's "child ... fg ... self ..." and, when the child can
		// run at all, its "ready".
		for child == 0 {
			line := nextLine(t, lines)
			f := strings.Fields(line)
			if line == "ready" {
				continue
			}
			if len(f) != 6 || f[0] != "child" {
				t.Fatalf("wrapper: %q", line)
			}
			child, _ = strconv.Atoi(f[1])
			fg, _ = strconv.Atoi(f[3])
			self, _ = strconv.Atoi(f[5])
			t.Cleanup(func() { _ = unix.Kill(-child, syscall.SIGKILL) })
		}
		return master, lines, child, fg, self
	}
	// next skips the child's "ready", which may come at any point.
	next := func(t *testing.T, lines <-chan string) string {
		t.Helper()
		for {
			if line := nextLine(t, lines); line != "ready" {
				return line
			}
		}
	}
	expect := func(t *testing.T, lines <-chan string, want string) {
		t.Helper()
		if got := next(t, lines); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}

	t.Run("foreground: the child reads the terminal and gets Ctrl-C alone", func(t *testing.T) {
		master, lines, child, fg, self := run(t, "fg")
		if fg != child {
			t.Fatalf("terminal foreground group = %d, want the child's %d (wrapper's is %d)", fg, child, self)
		}
		if _, err := master.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		expect(t, lines, "read hello")
		if _, err := master.Write([]byte{3}); err != nil { // Ctrl-C
			t.Fatal(err)
		}
		expect(t, lines, "SIGINT")
		expect(t, lines, "exit 0")
		expect(t, lines, fmt.Sprint("fg-after ", self)) // given back when the child ended
		expect(t, lines, "wrapper-sigint false")
		expect(t, lines, fmt.Sprint("fg-final ", self))
		expect(t, lines, "done")
	})

	t.Run("no foreground: a background child is stopped by SIGTTIN", func(t *testing.T) {
		_, lines, child, fg, self := run(t, "nofg")
		if fg != self {
			t.Fatalf("terminal foreground group = %d, want the wrapper's %d (child %d)", fg, self, child)
		}
		expect(t, lines, "stopped")
		expect(t, lines, "exit 137")
		expect(t, lines, fmt.Sprint("fg-after ", self))
		expect(t, lines, "done")
	})

	t.Run("wrapper in the background: the terminal is left alone", func(t *testing.T) {
		_, lines, child, fg, self := run(t, "background")
		if fg == child || fg == self {
			t.Fatalf("terminal foreground group = %d, want the other group's (child %d, wrapper %d)", fg, child, self)
		}
		expect(t, lines, "stopped")
		expect(t, lines, "exit 137")
		expect(t, lines, fmt.Sprint("fg-after ", fg)) // Release did not take it back
		expect(t, lines, "done")
	})
}
