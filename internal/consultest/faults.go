package consultest

import (
	"fmt"
	"os"
	"strings"
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
//
// SIGSTOP takes effect asynchronously, so Pause waits until every thread of
// the agent is stopped: a request sent after Pause returns is never answered.
func (a *Agent) Pause(t testing.TB) {
	t.Helper()
	pid := a.PID()
	a.sendSignal(t, syscall.SIGSTOP)
	Eventually(t, 5*time.Second, func() (bool, string) { return allStopped(pid) }, "the agent's threads to be stopped")
}

// allStopped reports whether every thread of pid is stopped (state T or t in
// /proc/PID/task/TID/stat).
func allStopped(pid int) (bool, string) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false, err.Error()
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread ended
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) == 0 || (f[0] != "T" && f[0] != "t") {
			return false, fmt.Sprintf("thread %s of agent pid %d in state %v", task.Name(), pid, f[:min(1, len(f))])
		}
	}
	return true, ""
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
