package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// Signals sent to svcwrap reach the child once each; a stop deregisters before
// the child hears of it; nothing of the child's group outlives svcwrap.

func TestSignals_ForwardedOnceEach(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"fwd", "--"}, helperArgv("signals")...)...)
	w.out.waitFor(t, "ready", wait)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGQUIT, syscall.SIGCONT, syscall.SIGALRM} {
		w.signal(sig)
		w.out.waitFor(t, "got "+sig.String(), wait)
	}
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 0, w.wait(wait), "the child exits 0 on SIGTERM")
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGQUIT, syscall.SIGALRM, syscall.SIGTERM} {
		assert.Equal(t, 1, w.out.count("got "+sig.String()), "%s must arrive exactly once:\n%s", sig, w.out)
	}
}

// The real-time signals are caught once the first registration has been
// answered (signals.Catch), before svcwrap says the status: from then on
// they reach the child once each, as the others do.
func TestSignals_RealTimeForwardedOnceRegistered(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"-v", "fwdrt", "--"}, helperArgv("signals")...)...)
	w.out.waitFor(t, "ready", wait)
	w.errOut.waitFor(t, "msg=status", wait)
	for _, sig := range []syscall.Signal{sigRTMin1, sigRTMax} {
		w.signal(sig)
		w.out.waitFor(t, "got "+sig.String(), wait)
	}
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 0, w.wait(wait), "the child exits 0 on SIGTERM")
	for _, sig := range []syscall.Signal{sigRTMin1, sigRTMax} {
		assert.Equal(t, 1, w.out.count("got "+sig.String()), "%s must arrive exactly once:\n%s", sig, w.out)
	}
}

// The drain ordering: when the child hears SIGTERM, the service is already gone.
func TestStop_DeregistersBeforeTheChildHearsIt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			agent := consultest.StartAgent(t)
			w := start(t, agent, append([]string{"--drain", "100ms", "drain", "--"}, helperArgv("signals", agent.HTTPAddr, "drain")...)...)
			w.out.waitFor(t, "ready", wait)
			consultest.WaitServiceStatus(t, agent.Client, "drain", api.HealthPassing, wait)
			w.signal(sig)
			w.out.waitFor(t, "registered-at-stop", wait)
			assert.Contains(t, w.out.String(), "registered-at-stop false <nil>")
			assert.Equal(t, 0, w.wait(wait))
		})
	}
}

func TestStop_KillTimeout(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"--kill-timeout", "300ms", "stubborn", "--"}, helperArgv("ignore-term")...)...)
	w.out.waitFor(t, "ready", wait)
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+9, w.wait(wait), "SIGKILLed after the kill timeout")
	consultest.WaitServiceGone(t, agent.Client, "stubborn", wait)
}

func TestStop_SecondSignalEscalates(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"--kill-timeout", "1h", "stubborn", "--"}, helperArgv("ignore-term")...)...)
	w.out.waitFor(t, "ready", wait)
	w.signal(syscall.SIGTERM)
	consultest.WaitServiceGone(t, agent.Client, "stubborn", wait)
	w.signal(syscall.SIGINT)
	assert.Equal(t, 128+9, w.wait(wait))
}

func TestStop_StopSignalMapped(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"--stop-signal", "QUIT", "--kill-timeout", "5s", "mapped", "--"}, helperArgv("signals")...)...)
	w.out.waitFor(t, "ready", wait)
	w.signal(syscall.SIGTERM)
	w.out.waitFor(t, "got quit", wait)
	// The helper does not exit on SIGQUIT; stop it for good.
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+9, w.wait(wait))
	assert.Zero(t, w.out.count("got terminated"), "SIGTERM must have become SIGQUIT:\n%s", w.out)
}

// Nothing of the child's process group survives svcwrap.
func TestStop_Grandchildren(t *testing.T) {
	agent := consultest.StartAgent(t)
	t.Run("stopped", func(t *testing.T) {
		w := start(t, agent, append([]string{"family", "--"}, helperArgv("grandchild")...)...)
		w.out.waitFor(t, "ready", wait)
		gpid := grandchildPid(t, w)
		w.signal(syscall.SIGTERM)
		w.wait(wait)
		waitGone(t, gpid)
	})
	t.Run("shell-background-wait", func(t *testing.T) {
		w := start(t, agent, "family", "--", "sh", "-c", "sleep 1000 & echo grandchild $!; echo ready; wait")
		w.out.waitFor(t, "ready", wait)
		gpid := grandchildPid(t, w)
		w.signal(syscall.SIGTERM)
		w.wait(wait)
		waitGone(t, gpid)
	})
	t.Run("leader-exits-first", func(t *testing.T) {
		// The group leader exits by itself and leaves a member behind.
		w := start(t, agent, "--kill-timeout", "200ms", "family", "--", "sh", "-c", "sleep 1000 & echo grandchild $!; exit 0")
		w.out.waitFor(t, "grandchild", wait)
		gpid := grandchildPid(t, w)
		assert.Equal(t, 0, w.wait(wait))
		waitGone(t, gpid)
	})
}

func grandchildPid(t *testing.T, w *wrapped) int {
	t.Helper()
	for _, line := range strings.Split(w.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "grandchild "); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(rest))
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatalf("no grandchild pid in:\n%s", w.out)
	return 0
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	consultest.Eventually(t, wait, func() (bool, string) {
		return !alive(pid), fmt.Sprintf("pid %d alive", pid)
	}, fmt.Sprintf("process %d to be gone", pid))
}

// svcwrap killed with SIGKILL: the kernel kills the child (parent-death
// signal), and Consul, once the TTL lapses and the check has been critical
// for DeregisterCriticalServiceAfter (1m, Consul's minimum), removes the
// service by itself. This takes up to 1m30s: the reaper runs every 30s.
func TestSIGKILL_ChildDiesAndConsulCleansUp(t *testing.T) {
	t.Parallel()
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"--ttl", "1s", "--deregister-after", "1m", "orphan", "--"}, helperArgv("pid")...)...)
	w.out.waitFor(t, "ready", wait)
	consultest.WaitServiceStatus(t, agent.Client, "orphan", api.HealthPassing, wait)
	pid := childPid(t, w)

	w.signal(syscall.SIGKILL)
	w.wait(wait)
	waitGone(t, pid)
	consultest.WaitServiceStatus(t, agent.Client, "orphan", api.HealthCritical, wait)
	consultest.WaitServiceGone(t, agent.Client, "orphan", 2*time.Minute)
}

func TestSIGKILL_KeepChild(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"--keep-child", "survivor", "--"}, helperArgv("pid")...)...)
	w.out.waitFor(t, "ready", wait)
	pid := childPid(t, w)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	w.signal(syscall.SIGKILL)
	w.wait(wait)
	// Bounded check that it stays: the parent-death signal is immediate, so
	// a child still alive after svcwrap's exit has been reaped was spared.
	consultest.Eventually(t, wait, func() (bool, string) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err == nil && !strings.Contains(string(b), fmt.Sprintf(" %d ", w.cmd.Process.Pid)), "still parented by svcwrap"
	}, "the child to be reparented")
	assert.True(t, alive(pid), "--keep-child: the child outlives svcwrap")
}

func childPid(t *testing.T, w *wrapped) int {
	t.Helper()
	for _, line := range strings.Split(w.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "pid "); ok {
			pid, err := strconv.Atoi(rest)
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatalf("no pid line in:\n%s", w.out)
	return 0
}

func TestDeregisterPolicy_OnSuccess(t *testing.T) {
	agent := consultest.StartAgent(t)
	t.Run("failure-stays-critical", func(t *testing.T) {
		w := start(t, agent, "--deregister", "on-success", "flaky", "--", "sh", "-c", "sleep 0.5; exit 3")
		consultest.WaitServicePresent(t, agent.Client, "flaky", wait)
		assert.Equal(t, 3, w.wait(wait))
		status, output := checkStatus(t, agent.Client, "flaky")
		assert.Equal(t, api.HealthCritical, status)
		assert.Contains(t, output, "exit status 3")
	})
	t.Run("success-deregisters", func(t *testing.T) {
		w := start(t, agent, "--deregister", "on-success", "fine", "--", "sh", "-c", "sleep 0.5; exit 0")
		consultest.WaitServicePresent(t, agent.Client, "fine", wait)
		assert.Equal(t, 0, w.wait(wait))
		consultest.WaitServiceGone(t, agent.Client, "fine", wait)
	})
	t.Run("never", func(t *testing.T) {
		w := start(t, agent, "--deregister", "never", "kept", "--", "sh", "-c", "sleep 0.5; exit 0")
		consultest.WaitServicePresent(t, agent.Client, "kept", wait)
		assert.Equal(t, 0, w.wait(wait))
		status, _ := checkStatus(t, agent.Client, "kept")
		assert.Equal(t, api.HealthCritical, status)
	})
}

// As PID 1 of a new PID namespace, svcwrap reaps the orphans its child leaves
// behind without losing the child's exit status.
func TestPID1_ReapsOrphans(t *testing.T) {
	need(t, "unshare")
	agent := consultest.StartAgent(t)
	// The child orphans a short sleep (its subshell exits at once), waits
	// until it has been reparented and has exited, then exits 5.
	script := `(sleep 0.2 &) ; sleep 1; ps -o stat=,comm= -e > "$OUT"; exit 5`
	out := t.TempDir() + "/ps"
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", svcwrapBin,
		"--consul", agent.HTTPAddr, "pid1", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "OUT="+out)
	b, err := cmd.CombinedOutput()
	require.Equal(t, 5, exitCode(err), "unshare/svcwrap output: %s", b)
	ps, err := os.ReadFile(out)
	require.NoError(t, err)
	for _, line := range strings.Split(strings.TrimSpace(string(ps)), "\n") {
		assert.False(t, strings.HasPrefix(strings.TrimSpace(line), "Z"), "zombie left unreaped by PID 1: %q\n%s", line, ps)
	}
	consultest.WaitServiceGone(t, agent.Client, "pid1", wait)
}
