package signals

import (
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Where the kernel has no pidfds, the child is waited for by wait4(pid) in a
// goroutine of its own, and its end arrives all the same.
func TestSpawn_WithoutPidfd(t *testing.T) {
	saved := pidfdOpen
	pidfdOpen = func(int, int) (int, error) { return -1, unix.ENOSYS }
	t.Cleanup(func() { pidfdOpen = saved })

	for _, tc := range []struct {
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
		select {
		case got := <-c.Done():
			if got != tc.want {
				t.Errorf("%q: Exit = %+v, want %+v", tc.argv, got, tc.want)
			}
		case <-time.After(10 * time.Second):
			_ = c.Kill()
			t.Fatalf("%q: no end within 10s", tc.argv)
		}
		c.Release()
	}
}

// With pidfds, the child's end comes through the poller: waitPidfd parks
// until the pidfd is readable and reaps the child, with no fallback. The
// child runs until the test kills it, so the wait is the poller's.
func TestWaitPidfd(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exec sleep 30"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	f := openPidfd(pid)
	if f == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
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
	// An answer before this kill could not say SIGTERM.
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("waitPidfd: %v", r.err)
		}
		if want := (Exit{Code: 143, Signal: unix.SIGTERM}); r.e != want {
			t.Errorf("Exit = %+v, want %+v", r.e, want)
		}
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("no end within 10s of the SIGTERM")
	}
}
