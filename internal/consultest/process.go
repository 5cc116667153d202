package consultest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds each phase of a stop: SIGTERM, then SIGKILL.
const stopTimeout = 10 * time.Second

// errAddrInUse marks a start that failed because a port was taken, which a
// caller may retry on other ports (or, after a restart, a little later).
var errAddrInUse = errors.New("address already in use")

// process is one run of an agent binary. Its output is appended to a log file.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // valid after done
}

// startProcess starts bin with args, its output appended to logPath.
func startProcess(bin string, args []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open agent log: %w", err)
	}
	fmt.Fprintf(logFile, "==> consultest: %s %s\n", bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The kernel kills the agent if the test binary dies before its cleanups
	// run (go test -timeout, a crash), so no agent outlives its test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	onSpawnThread(func() { err = cmd.Start() })
	logFile.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}

	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

var (
	spawnOnce sync.Once
	spawnReq  = make(chan func())
)

// onSpawnThread runs f on one OS thread that lives as long as the process.
// The parent-death signal fires when the thread that forked the child exits,
// not the process, so agents must not be forked from a thread the Go runtime
// might retire.
func onSpawnThread(f func()) {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread is never retired
			for f := range spawnReq {
				f()
			}
		}()
	})
	done := make(chan struct{})
	spawnReq <- func() {
		defer close(done)
		f()
	}
	<-done
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an exit during start-up, with the log's last lines.
// It wraps errAddrInUse when the agent could not bind a port.
func (p *process) exitError() error {
	tail := logTail(p.logPath, 15)
	err := fmt.Errorf("consul agent exited during start-up (%v); last lines of %s:\n%s", p.waitErr, p.logPath, tail)
	if strings.Contains(tail, "address already in use") {
		return fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return err
}

// stop sends SIGTERM, waits, then SIGKILL, and waits for the exit. It returns
// an error only if the process survived SIGKILL for stopTimeout.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	// A paused agent (Agent.Pause) would not act on SIGTERM until continued.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("consul agent pid %d still running %s after SIGKILL", p.pid(), stopTimeout)
	}
}

// logTail returns the last n lines of the file at path, indented.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "    (no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    ")
		b.Write(l)
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}
