package signals_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A helper wrapper starts a child from a goroutine whose thread then ends;
// the test SIGKILLs the wrapper. With a parent-death signal the child must
// die with the wrapper, not with the thread; without one it must live on.
func TestParentDeathSignal(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sig       syscall.Signal
		childDies bool
	}{
		{"SIGKILL", syscall.SIGKILL, true},
		{"none", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			wrapper := helperCmd(t, "pdeath", strconv.Itoa(int(tc.sig)))
			wrapper.Stdout = w // shared with the child, which inherits it
			if err := wrapper.Start(); err != nil {
				t.Fatal(err)
			}
			_ = w.Close()
			lines := lineReader(r)

			// The wrapper's "child <pid>" and the child's "ready", in any order.
			child, ready := 0, false
			for child == 0 || !ready {
				var line string
				select {
				case line = <-lines:
				case <-time.After(waitTimeout):
					if child != 0 && gone(child) {
						t.Fatalf("child %d died when the thread that called Start ended: it was not forked from a thread that lives as long as the process", child)
					}
					t.Fatalf("no child pid or no ready within %v (child %d, ready %v)", waitTimeout, child, ready)
				}
				switch f := strings.Fields(line); {
				case line == "ready":
					ready = true
				case len(f) == 2 && f[0] == "child":
					child, _ = strconv.Atoi(f[1])
					t.Cleanup(func() { _ = unix.Kill(-child, syscall.SIGKILL) })
				default:
					t.Fatalf("wrapper: %q", line)
				}
			}
			// The thread that called Start has ended, and the child lives.
			if err := unix.Kill(child, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			expectLine(t, lines, "SIGUSR1")

			// Kill the wrapper; after Wait all its threads are gone, so any
			// parent-death signal has been sent.
			if err := wrapper.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = wrapper.Wait()
			if tc.childDies {
				waitFor(t, fmt.Sprintf("child %d to die with its parent", child), func() bool { return gone(child) })
				return
			}
			if err := unix.Kill(child, syscall.SIGUSR1); err != nil {
				t.Fatalf("child gone with its parent: %v", err)
			}
			expectLine(t, lines, "SIGUSR1")
		})
	}
}

// ReapAll in a process of its own, not PID 1: the child subreaper path.
func TestReapAll_Subreaper(t *testing.T) {
	out, err := helperCmd(t, "reap").Output()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("reap helper: %v\n%s", err, out)
	}
}

// ReapAll as a true PID 1, in a new PID namespace.
func TestReapAll_PID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("this test needs unshare(1) from util-linux to run the helper as PID 1 in a new PID namespace: %v", err)
	}
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "--kill-child", testBin, "reap", "pid1")
	cmd.Env = helperEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t.Cleanup(func() {
		if cmd.ProcessState == nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	out, err := cmd.Output()
	if strings.TrimSpace(string(out)) == "OK" && err == nil {
		return
	}
	if len(out) == 0 {
		t.Fatalf("could not run the helper as PID 1 with `unshare --pid --fork --mount-proc` "+
			"(needs root or unprivileged user namespaces, and a kernel with PID and mount namespaces): %v\n%s",
			err, stderr.String())
	}
	t.Fatalf("reap helper as PID 1: %v\n%s%s", err, out, stderr.String())
}
