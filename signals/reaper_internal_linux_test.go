package signals

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The waits below give up after this long.
const internalWait = 10 * time.Second

// Where the kernel has no pidfds, the child is waited for by wait4(pid) in a
// goroutine of its own, and its end arrives all the same.
func TestSpawn_WithoutPidfd(t *testing.T) {
	saved := pidfdOpen
	calls := 0
	pidfdOpen = func(int, int) (int, error) { calls++; return -1, unix.ENOSYS }
	t.Cleanup(func() { pidfdOpen = saved })

	for i, tc := range []struct {
		argv []string
		want Exit
	}{
		{[]string{"sh", "-c", "exit 7"}, Exit{Code: 7}},
		{[]string{"sh", "-c", "kill -TERM $$"}, Exit{Code: 143, Signal: unix.SIGTERM}},
	} {
		c, err := Start(Options{Argv: tc.argv})
		if err != nil {
			t.Fatal(err)
		}
		// Not the reaper's: this start asked for a pidfd and got none.
		if calls != i+1 {
			t.Fatalf("%q: pidfd_open called %d times in %d starts", tc.argv, calls, i+1)
		}
		select {
		case got := <-c.Done():
			if got != tc.want {
				t.Errorf("%q: Exit = %+v, want %+v", tc.argv, got, tc.want)
			}
		case <-time.After(internalWait):
			_ = c.Kill()
			t.Fatalf("%q: no end within %v", tc.argv, internalWait)
		}
		c.Release()
	}
}

// sleeper starts `sleep 30` outside this package's bookkeeping and reaps it
// at cleanup if the test has not.
func sleeper(t *testing.T) int {
	t.Helper()
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exec sleep 30"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil) // ECHILD once the test has reaped it
	})
	return pid
}

// With pidfds, the child's end comes through the poller: waitPidfd parks in
// it (the goroutine is seen in IO wait) until the kill, then reaps the child.
func TestWaitPidfd(t *testing.T) {
	pid := sleeper(t)
	f := openPidfd(pid)
	if f == nil {
		t.Fatal("no pidfd for the child: this kernel has no pidfd_open(PIDFD_NONBLOCK) (Linux 5.10+)")
	}
	defer f.Close()
	type result struct {
		e   Exit
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := waitPidfd(f, pid)
		done <- result{e, err}
	}()
	deadline := time.Now().Add(internalWait)
	for !parkedInPoller("signals.waitPidfd") {
		select {
		case r := <-done:
			t.Fatalf("waitPidfd returned %+v, %v while the child runs", r.e, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waitPidfd not parked in the poller within %v", internalWait)
		}
		time.Sleep(time.Millisecond) // the poll's period
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("waitPidfd: %v", r.err)
		}
		if want := (Exit{Code: 143, Signal: unix.SIGTERM}); r.e != want {
			t.Errorf("Exit = %+v, want %+v", r.e, want)
		}
	case <-time.After(internalWait):
		t.Fatalf("no end within %v of the SIGTERM", internalWait)
	}
}

// Where the poller refuses the descriptor, waitPidfd says so and leaves the
// child unreaped, for poll's fallback to wait for.
func TestWaitPidfd_NotPollable(t *testing.T) {
	pid := sleeper(t)
	// A regular file, non-blocking: epoll refuses it, as it would a pidfd
	// on a kernel whose pidfds it cannot poll.
	fd, err := unix.Open(filepath.Join(t.TempDir(), "f"), unix.O_CREAT|unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "not-pollable")
	defer f.Close()
	if _, err := waitPidfd(f, pid); err == nil {
		t.Fatal("waitPidfd on a descriptor the poller refuses: no error")
	}
	var ws unix.WaitStatus
	if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got != 0 || err != nil {
		t.Fatalf("wait4(WNOHANG) after the refusal = %d, %v; want the child still running and unreaped", got, err)
	}
}

// parkedInPoller reports whether a goroutine running fn is parked in Go's
// poller ("IO wait").
func parkedInPoller(fn string) bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}
