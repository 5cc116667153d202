package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables the harness gives every process it starts.
const (
	// envChild makes this binary run as the benchmark child (see child.go)
	// when a wrapper starts it.
	envChild = "SVCBENCH_CHILD"
	// envRun marks every process of one harness run, wrappers and their
	// children alike, so that cleanup finds even a child a wrapper left
	// behind (see procs.sweep).
	envRun = "SVCBENCH_RUN"
)

// errClosed is returned by procs.start once cleanup has begun: nothing new
// may be started while everything is being killed.
var errClosed = errors.New("harness is shutting down")

// procs starts processes and guarantees that none outlives the harness:
// each runs in its own process group with a parent-death signal, every one is
// killed by close, and close then sweeps /proc for any process carrying this
// run's mark (a wrapper's child, a grandchild).
type procs struct {
	token string // the value of envRun for this run

	mu     sync.Mutex
	closed bool
	all    []*proc
}

func newProcs() *procs {
	return &procs{token: fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())}
}

// proc is one process the harness started.
type proc struct {
	cmd     *exec.Cmd
	argv    []string
	started time.Time // just before the fork

	// stdin writes to the process's standard input (nil: /dev/null). The
	// benchmark child reads its commands there.
	stdin *os.File
	// events are the lines the benchmark child printed, in order; closed at
	// EOF. nil when stdout was not captured.
	events <-chan event

	done     chan struct{} // closed once the process has exited and been reaped
	exitedAt time.Time     // when the harness saw the exit; valid after done
	state    *os.ProcessState
}

// startOpts says how to wire a process's standard streams.
type startOpts struct {
	env    []string // added to the harness's environment
	events bool     // capture stdout as benchmark-child events
	stdin  bool     // give it a pipe as stdin (proc.stdin)
	output *os.File // stdout and stderr when events is false; nil: /dev/null
	errlog *os.File // stderr when events is true; nil: /dev/null
}

// spawnThread runs every fork on one OS thread that lives as long as the
// harness. The parent-death signal fires when the thread that forked the
// child exits, not the process, and the Go runtime may retire threads.
var (
	spawnOnce sync.Once
	spawnReq  = make(chan func())
)

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
	spawnReq <- func() { defer close(done); f() }
	<-done
}

// start starts argv. The process gets its own process group (so a terminal's
// Ctrl-C reaches only the harness, which then stops everything in order) and
// SIGKILL as its parent-death signal (so that even a SIGKILLed harness leaves
// nothing behind).
func (r *procs) start(argv []string, o startOpts) (*proc, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args = argv
	cmd.Env = append(cleanEnv(), o.env...)
	cmd.Env = append(cmd.Env, envRun+"="+r.token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	p := &proc{cmd: cmd, argv: argv, done: make(chan struct{})}
	var parentEnds []*os.File // the child's ends, closed here once it has them
	defer func() {
		for _, f := range parentEnds {
			f.Close()
		}
	}()
	if o.stdin {
		rd, wr, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmd.Stdin, p.stdin = rd, wr
		parentEnds = append(parentEnds, rd)
	}
	var eventsR *os.File
	if o.events {
		rd, wr, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		// An *os.File, not an io.Writer: Wait then returns the moment the
		// process exits instead of waiting for a copying goroutine.
		cmd.Stdout, eventsR = wr, rd
		parentEnds = append(parentEnds, wr)
		if o.errlog != nil {
			cmd.Stderr = o.errlog
		}
	} else if o.output != nil {
		cmd.Stdout, cmd.Stderr = o.output, o.output
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		closeAll(p.stdin, eventsR)
		return nil, errClosed
	}
	onSpawnThread(func() {
		p.started = time.Now()
		err = cmd.Start()
	})
	if err == nil {
		r.all = append(r.all, p)
	}
	r.mu.Unlock()
	if err != nil {
		closeAll(p.stdin, eventsR)
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}

	if eventsR != nil {
		p.events = readEvents(eventsR)
	}
	go func() {
		_ = cmd.Wait() // the status is in cmd.ProcessState
		p.exitedAt = time.Now()
		p.state = cmd.ProcessState
		if p.stdin != nil {
			p.stdin.Close()
		}
		close(p.done)
	}()
	return p, nil
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// cleanEnv is the harness's environment without the variables that would
// change how a wrapper or the agent behaves (an agent address, a token, TLS,
// svcwrap's own settings), so every run is configured by flags alone.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "SVCWRAP_") ||
			strings.HasPrefix(kv, envChild+"=") || strings.HasPrefix(kv, envRun+"=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// pid is the process's ID.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process (not its group). A process that has
// already exited is not an error.
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	err := syscall.Kill(p.pid(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// waitExit waits up to timeout for the process to exit.
func (p *proc) waitExit(timeout time.Duration) error {
	if p.exited() {
		return nil // select would pick at random were the timer also ready
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running after %s", filepath.Base(p.argv[0]), p.pid(), timeout)
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs the process group and
// waits for the exit. It is how the harness ends a process whose ending is
// not being measured.
func (p *proc) stop(grace time.Duration) {
	_ = p.signal(syscall.SIGTERM)
	if p.waitExit(grace) == nil {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	_ = p.waitExit(10 * time.Second)
}

// exitCode is the process's exit code, or 128+N when signal N killed it.
func (p *proc) exitCode() int {
	ws, ok := p.state.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return p.state.ExitCode()
}

// send writes one command line to the process's stdin.
func (p *proc) send(line string) error {
	if p.stdin == nil {
		return errors.New("no stdin pipe")
	}
	_, err := p.stdin.WriteString(line + "\n")
	return err
}

// waitEvent returns the next event of kind the child prints, skipping any
// other, or an error after timeout or when the child's output ends.
func (p *proc) waitEvent(kind string, timeout time.Duration) (event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				return event{}, fmt.Errorf("no %q event: the child's output ended", kind)
			}
			if ev.kind == kind {
				return ev, nil
			}
		case <-t.C:
			return event{}, fmt.Errorf("no %q event within %s", kind, timeout)
		}
	}
}

// close kills every process the harness started, then every process left
// with this run's mark. It may be called more than once, from a signal
// handler too.
func (r *procs) close() {
	r.mu.Lock()
	r.closed = true
	all := r.all
	r.mu.Unlock()

	// Each is the leader of its own group: SIGKILL the group, which holds
	// the wrapper (its child has a group of its own and is swept below, or
	// dies by its parent-death signal).
	for _, p := range all {
		if !p.exited() {
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		}
	}
	for _, p := range all {
		_ = p.waitExit(10 * time.Second)
	}
	r.sweep()
}

// sweep SIGKILLs every process whose environment carries this run's mark,
// until none is left or a few rounds have passed (a dying wrapper may still
// be starting a child).
func (r *procs) sweep() {
	for round := 0; round < 5; round++ {
		left := r.marked()
		if len(left) == 0 {
			return
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // let the kernel finish the kills before looking again
	}
}

// marked returns the processes, other than the harness, whose environment
// carries this run's mark. A zombie has no environment left to read: it is
// dead, only not yet reaped, and is not counted.
func (r *procs) marked() []int {
	mark := []byte(envRun + "=" + r.token + "\x00")
	var pids []int
	for _, pid := range allPIDs() {
		if pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err == nil && bytes.Contains(env, mark) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// allPIDs lists the processes in /proc.
func allPIDs() []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// event is one line the benchmark child printed: "svcbench KIND UNIXNANO [ARGS...]".
type event struct {
	kind string
	at   time.Time // the child's wall clock when it happened
	args []string
}

// eventPrefix starts every line the benchmark child prints; other lines (a
// wrapper's own output on the same stdout) are ignored.
const eventPrefix = "svcbench "

// readEvents parses the child's lines from r until EOF.
func readEvents(r *os.File) <-chan event {
	ch := make(chan event, 4096)
	go func() {
		defer close(ch)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if ev, ok := parseEvent(sc.Text()); ok {
				ch <- ev
			}
		}
	}()
	return ch
}

func parseEvent(line string) (event, bool) {
	rest, ok := strings.CutPrefix(line, eventPrefix)
	if !ok {
		return event{}, false
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return event{}, false
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return event{}, false
	}
	return event{kind: f[0], at: time.Unix(0, ns), args: f[2:]}, true
}
