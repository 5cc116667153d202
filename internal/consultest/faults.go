package consultest

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Faults a real agent produces on demand. A paused agent is the truest hang
// there is: the kernel still accepts connections on its ports (the listen
// backlog), but nothing reads or answers them, as with an agent stuck in a
// long GC pause, a full disk or a deadlock.

// Pause stops the agent's process with SIGSTOP. Every request to it then hangs
// until Resume. Stop and cleanup resume a paused agent before stopping it.
func (a *Agent) Pause(t testing.TB) {
	t.Helper()
	a.sendSignal(t, syscall.SIGSTOP)
}

// Resume continues an agent that Pause stopped.
func (a *Agent) Resume(t testing.TB) {
	t.Helper()
	a.sendSignal(t, syscall.SIGCONT)
}

// Kill kills the agent with SIGKILL, as a crash or the OOM killer would: no
// leave, no final sync. It waits until the process is gone. A cluster agent
// keeps its data directory, so Restart (or Cluster.StartAgent) brings back
// what it had.
func (a *Agent) Kill(t testing.TB) {
	t.Helper()
	p := a.current()
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("consultest: agent %s (pid %d) still running %s after SIGKILL", a.Node, p.pid(), stopTimeout)
	}
}

func (a *Agent) sendSignal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	p := a.current()
	if p == nil || p.exited() {
		t.Fatalf("consultest: %s to agent %s: not running", sig, a.Node)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("consultest: %s to agent %s: %v", sig, a.Node, err)
	}
}

// String names the agent in test messages.
func (a *Agent) String() string { return fmt.Sprintf("agent %s (%s)", a.Node, a.HTTPAddr) }
