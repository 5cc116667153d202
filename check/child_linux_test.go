//go:build linux

package check_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitLimit bounds every wait for a helper child; it is generous because the
// race detector and a loaded machine slow process start-up a lot.
const waitLimit = 15 * time.Second

// child is a running helper (see TestMain), stopped at the end of the test.
type child struct {
	tb    testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout, line by line; closed at EOF
	reap  chan struct{} // closed once the child may be reaped
	done  chan struct{} // closed once the child has been reaped

	closeStdin, allowReap sync.Once
}

// startChild starts the helper described by helper (see helperEnv) and
// registers its stop as a cleanup.
func startChild(tb testing.TB, helper ...string) *child {
	tb.Helper()
	c := startUnreapedChild(tb, helper...)
	c.letReap()
	return c
}

// startUnreapedChild is startChild for a child that stays a zombie once it
// exits, until wait or stop reaps it.
func startUnreapedChild(tb testing.TB, helper ...string) *child {
	tb.Helper()
	return startChildCmd(tb, helperCmd(helper...))
}

// helperCmd is the command that runs helper (see helperEnv) as a child.
func helperCmd(helper ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(helperEnviron(), helperEnv+"="+strings.Join(helper, " "))
	cmd.Stderr = os.Stderr
	// The child dies with the test binary, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// startChildCmd starts cmd, made by helperCmd, as an unreaped child.
func startChildCmd(tb testing.TB, cmd *exec.Cmd) *child {
	tb.Helper()
	stdin, err := cmd.StdinPipe()
	require.NoError(tb, err)
	// Our own pipe rather than StdoutPipe, so that reaping the child never
	// races with reading its last lines.
	r, w, err := os.Pipe()
	require.NoError(tb, err)
	cmd.Stdout = w
	require.NoError(tb, cmd.Start())
	w.Close()

	c := &child{
		tb:    tb,
		cmd:   cmd,
		stdin: stdin,
		lines: make(chan string, 16),
		reap:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go func() {
		defer r.Close()
		defer close(c.lines)
		in := bufio.NewScanner(r)
		for in.Scan() {
			c.lines <- in.Text()
		}
	}()
	go func() {
		defer close(c.done)
		<-c.reap
		_ = cmd.Wait()
	}()
	tb.Cleanup(c.stop)
	return c
}

// pid is the child's process ID.
func (c *child) pid() int { return c.cmd.Process.Pid }

// readLine returns the next line the child prints.
func (c *child) readLine() string {
	c.tb.Helper()
	select {
	case line, ok := <-c.lines:
		require.True(c.tb, ok, "helper child closed its stdout")
		return line
	case <-time.After(waitLimit):
		require.FailNow(c.tb, "helper child printed nothing", "waited %v", waitLimit)
		return ""
	}
}

// ready waits for the child's "ready" line and returns the port it names, or
// 0 if it names none.
func (c *child) ready() int {
	c.tb.Helper()
	fields := strings.Fields(c.readLine())
	require.NotEmpty(c.tb, fields)
	require.Equal(c.tb, "ready", fields[0])
	if len(fields) == 1 {
		return 0
	}
	port, err := strconv.Atoi(fields[1])
	require.NoError(c.tb, err)
	return port
}

// request sends a command to the child and returns its answer.
func (c *child) request(command string) string {
	c.tb.Helper()
	_, err := fmt.Fprintln(c.stdin, command)
	require.NoError(c.tb, err)
	return c.readLine()
}

// exit closes the child's stdin, which tells it to exit, without waiting.
func (c *child) exit() {
	c.closeStdin.Do(func() { c.stdin.Close() })
}

// letReap lets the child be reaped as soon as it exits.
func (c *child) letReap() {
	c.allowReap.Do(func() { close(c.reap) })
}

// wait waits until the child has exited and been reaped.
func (c *child) wait() {
	c.tb.Helper()
	c.letReap()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		require.FailNow(c.tb, "helper child did not exit", "waited %v", waitLimit)
	}
}

// stop makes the child exit, killing it if it does not exit in time, and reaps
// it. It is idempotent.
func (c *child) stop() {
	c.exit()
	c.letReap()
	select {
	case <-c.done:
		return
	case <-time.After(waitLimit):
	}
	c.tb.Errorf("helper child %d did not exit within %v of closing its stdin; killing it", c.pid(), waitLimit)
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		c.tb.Errorf("helper child %d survived SIGKILL for %v", c.pid(), waitLimit)
	}
}

// eventually polls cond until it holds, failing the test at the deadline.
func eventually(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNow(tb, "condition never held", "%s (waited %v)", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
