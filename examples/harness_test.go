package examples_test

// Running things: processes the test starts, supervisord, the process table,
// and the "web" the examples wrap.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// childEnv is the environment of everything the tests start: this process's,
// without the CONSUL_* and SVCWRAP_* settings of whoever runs the tests, and
// with the race detector's exit delay off (children may be race-built).
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "SVCWRAP_") || strings.HasPrefix(kv, "GORACE=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GORACE=atexit_sleep_ms=0")
	return append(env, extra...)
}

// withAgent is childEnv plus an example's environment, its CONSUL_HTTP_ADDR
// pointed at the test's agent.
func withAgent(t *testing.T, example map[string]string, agentAddr string) []string {
	t.Helper()
	require.Contains(t, example, "CONSUL_HTTP_ADDR", "the example names the agent")
	var extra []string
	for k, v := range example {
		if k == "CONSUL_HTTP_ADDR" {
			v = agentAddr
		}
		extra = append(extra, k+"="+v)
	}
	sort.Strings(extra)
	return childEnv(extra...)
}

// process is one process the test started, its output collected.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed once it has exited and been reaped
}

// startProcess starts argv the way a manager starts a service: in a session
// of its own, stdin /dev/null. It is killed on cleanup if still running, and
// by the kernel if the test binary dies first: with SIGKILL, or deathSig.
func startProcess(t *testing.T, argv []string, env []string, deathSig ...syscall.Signal) *process {
	t.Helper()
	sig := syscall.SIGKILL
	if len(deathSig) > 0 {
		sig = deathSig[0]
	}
	p := &process{cmd: exec.Command(argv[0], argv[1:]...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: sig}
	var err error
	onSpawnThread(func() { err = p.cmd.Start() })
	require.NoError(t, err, "start %q", argv)
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.exited() {
			return
		}
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(wait):
			t.Errorf("%s (pid %d) still running %s after SIGKILL", argv[0], p.pid(), wait)
		}
	})
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// wait waits for the exit and returns the status, 128+N for death by
// signal N (which the test reports: svcwrap itself should always exit).
func (p *process) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(wait):
		t.Fatalf("%s (pid %d) still running after %s; output:\n%s", p.cmd.Path, p.pid(), wait, p.out)
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		t.Errorf("%s was killed by %s; output:\n%s", p.cmd.Path, ws.Signal(), p.out)
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

var (
	spawnOnce sync.Once
	spawnReq  = make(chan func())
)

// onSpawnThread runs f on one OS thread that lives as long as the test
// binary: the parent-death signal fires when the thread that forked the
// child exits, and the Go runtime may retire other threads.
func onSpawnThread(f func()) {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked, so the thread is never retired
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

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// supervisor is a supervisord run by the test, in the foreground, with its
// socket, pid file and logs in a temporary directory, and one program: the
// example's [program:web].
type supervisor struct {
	conf, logPath string
	proc          *process
	seen          map[int]proc // every process seen under it, checked at the end
}

// startSupervisord writes a configuration of supervisord's own sections and
// the example's program section (see localSupervisordProgram) into dir, runs
// supervisord on it, and waits until supervisorctl gets answers. It is
// stopped on cleanup, and nothing it started may outlive it.
func startSupervisord(t *testing.T, dir, agentAddr string, port int, web []string) *supervisor {
	t.Helper()
	need(t, "supervisord", "supervisorctl")
	sock := filepath.Join(dir, "supervisor.sock")
	require.Less(t, len(sock), 100, "socket path too long for a unix socket (set a shorter TMPDIR): %s", sock)
	s := &supervisor{
		conf:    filepath.Join(dir, "supervisord.conf"),
		logPath: filepath.Join(dir, "supervisord.log"),
		seen:    map[int]proc{},
	}
	header := fmt.Sprintf(`; Written by examples_test.go: supervisord's own sections, then the example.
[unix_http_server]
file=%[1]s

[supervisord]
nodaemon=true
logfile=%[2]s
pidfile=%[3]s
childlogdir=%[4]s

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[1]s

`, sock, s.logPath, filepath.Join(dir, "supervisord.pid"), dir)
	program := localSupervisordProgram(t, dir, agentAddr, port, web)
	require.NoError(t, os.WriteFile(s.conf, []byte(header+program), 0o644))

	// SIGTERM if the test binary dies: supervisord then stops web properly.
	s.proc = startProcess(t, []string{"supervisord", "-c", s.conf}, childEnv(), syscall.SIGTERM)
	t.Cleanup(func() { s.stop(t) })
	consultest.Eventually(t, wait, func() (bool, string) {
		if s.proc.exited() {
			return true, ""
		}
		out := s.ctl(t, "status", "web")
		return strings.HasPrefix(out, "web "), out
	}, "supervisord to answer")
	require.False(t, s.proc.exited(), "supervisord exited:\n%s", s.proc.out)
	return s
}

// ctl runs supervisorctl and returns its output. Its exit status is ignored:
// `status` is non-zero whenever a program is not running.
func (s *supervisor) ctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, "supervisorctl", append([]string{"-c", s.conf}, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("supervisorctl %s: %v", strings.Join(args, " "), ctx.Err())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("supervisorctl %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// state returns web's state as supervisorctl reports it (RUNNING, EXITED...).
func (s *supervisor) state(t *testing.T) string {
	t.Helper()
	fields := strings.Fields(s.ctl(t, "status", "web"))
	if len(fields) < 2 || fields[0] != "web" {
		return ""
	}
	return fields[1]
}

func (s *supervisor) waitState(t *testing.T, want string) {
	t.Helper()
	consultest.Eventually(t, wait, func() (bool, string) {
		got := s.state(t)
		return got == want, got + "; supervisord log:\n" + s.log()
	}, "web to be "+want+" in supervisord")
}

// pid returns the pid supervisord knows for web: svcwrap's.
func (s *supervisor) pid(t *testing.T) int {
	t.Helper()
	out := strings.TrimSpace(s.ctl(t, "pid", "web"))
	pid, err := strconv.Atoi(out)
	require.NoError(t, err, "supervisorctl pid web: %q", out)
	require.Positive(t, pid, "supervisorctl pid web")
	return pid
}

func (s *supervisor) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// track records processes to check at the end.
func (s *supervisor) track(ps ...proc) {
	for _, p := range ps {
		s.seen[p.pid] = p
	}
}

// trackTree records svcwrap (as supervisord knows it) and its descendants,
// once web is among them.
func (s *supervisor) trackTree(t *testing.T) {
	t.Helper()
	wrapper := s.pid(t)
	self, ok := readProc(wrapper)
	require.True(t, ok, "svcwrap pid %d", wrapper)
	s.track(self)
	s.track(values(waitDescendants(t, wrapper))...)
}

// stop stops supervisord as an init system would (SIGTERM: it stops its
// programs first), then checks that nothing it ever ran is left.
func (s *supervisor) stop(t *testing.T) {
	if !s.proc.exited() {
		_ = s.proc.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.proc.done:
		case <-time.After(2 * wait):
			t.Errorf("supervisord still running %s after SIGTERM; log:\n%s", 2*wait, s.log())
			return // startProcess's cleanup kills it
		}
	}
	if ok, state := poll(wait, func() (bool, string) { return noneAlive(values(s.seen)) }); !ok {
		t.Errorf("left behind after supervisord exited: %s", state)
	}
}

// proc is one line of the process table.
type proc struct {
	pid, ppid, pgid int
	state           string // R, S, Z...
	comm            string
	start           uint64 // clock ticks after boot: tells a reused pid apart
}

// readProc reads /proc/pid/stat.
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	// comm is in parentheses and may hold anything; the fields after it
	// are fixed: state is the 3rd field of the line, starttime the 22nd.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return proc{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid, comm: s[open+1 : end], state: f[0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgid, _ = strconv.Atoi(f[2])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}

// alive reports whether p still runs: the same process (not a reused pid)
// and not a zombie.
func (p proc) alive() bool {
	now, ok := readProc(p.pid)
	return ok && now.start == p.start && now.state != "Z"
}

func (p proc) String() string {
	return fmt.Sprintf("%d(%s ppid %d pgid %d %s)", p.pid, p.comm, p.ppid, p.pgid, p.state)
}

// descendants returns every process below root in the process table.
func descendants(root int) map[int]proc {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			children[p.ppid] = append(children[p.ppid], p)
		}
	}
	out := map[int]proc{}
	queue := []int{root}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out[c.pid] = c
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}

// waitDescendants waits until root has descendants, among them every pid
// in want, and returns them.
func waitDescendants(t *testing.T, root int, want ...int) map[int]proc {
	t.Helper()
	var tree map[int]proc
	consultest.Eventually(t, wait, func() (bool, string) {
		tree = descendants(root)
		if len(tree) == 0 {
			return false, "none"
		}
		for _, pid := range want {
			if _, ok := tree[pid]; !ok {
				return false, fmt.Sprintf("%v, not %d", values(tree), pid)
			}
		}
		return true, ""
	}, fmt.Sprintf("the processes under %d", root))
	return tree
}

// waitAllGone waits until none of ps runs any more.
func waitAllGone(t *testing.T, ps []proc) {
	t.Helper()
	consultest.Eventually(t, wait, func() (bool, string) { return noneAlive(ps) }, "every process to be gone")
}

func noneAlive(ps []proc) (bool, string) {
	var left []string
	for _, p := range ps {
		if p.alive() {
			now, _ := readProc(p.pid)
			left = append(left, now.String())
		}
	}
	return len(left) == 0, "still running: " + strings.Join(left, ", ")
}

// nsPids returns pid's ids in its PID namespace and those above it, from
// the outermost: the NSpid line of /proc/pid/status.
func nsPids(t *testing.T, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			var ids []int
			for _, f := range strings.Fields(rest) {
				n, err := strconv.Atoi(f)
				require.NoError(t, err)
				ids = append(ids, n)
			}
			return ids
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return nil
}

// poll calls cond until it reports ok or timeout passes, and returns its last
// answer; for cleanups, which should not stop at the first failure.
func poll(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok || time.Now().After(deadline) {
			return ok, state
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// report is the file web appends one line to per event, across restarts.
type report string

func (r report) String() string {
	b, _ := os.ReadFile(string(r))
	return string(b)
}

func (r report) lines() []string {
	return strings.Split(strings.TrimSpace(r.String()), "\n")
}

// count returns how many lines start with prefix.
func (r report) count(prefix string) int {
	n := 0
	for _, l := range r.lines() {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func (r report) waitFor(t *testing.T, prefix string) {
	t.Helper()
	consultest.Eventually(t, wait, func() (bool, string) {
		return r.count(prefix) > 0, r.String()
	}, fmt.Sprintf("web to report %q", prefix))
}

// pid returns the pid of the web that started last, once it listens.
func (r report) pid(t *testing.T) int {
	t.Helper()
	r.waitFor(t, "listening")
	pid := 0
	for _, l := range r.lines() {
		if rest, ok := strings.CutPrefix(l, "start "); ok {
			pid, _ = strconv.Atoi(rest)
		}
	}
	require.Positive(t, pid, "no start line:\n%s", r)
	return pid
}

// helperEnv, set to "web", makes the test binary act as web (webMain)
// instead of running tests.
const helperEnv = "EXAMPLES_TEST_HELPER"

// webArgv is the command line that runs this test binary as web.
func webArgv(args ...string) []string {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return append([]string{"env", helperEnv + "=web", exe}, args...)
}

// webMain stands in for /usr/bin/web. It listens on -listen and appends one
// line per event to -report ("start PID", "listening", ...). Then:
//
//   - SIGTERM: it reports whether -service is registered with -agent at that
//     moment ("term registered=false" when svcwrap deregistered first), then
//     exits with -term-exit, or, if that is -1, dies of the signal;
//   - SIGUSR1: exits 3, a crash; SIGUSR2: exits 0, a clean stop of its own.
//
// With -orphan it first leaves a sleep behind, which goes to whoever reaps
// orphans: PID 1, in a container.
func webMain(args []string) int {
	fs := flag.NewFlagSet("web", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	reportPath := fs.String("report", "", "file to append events to")
	agent := fs.String("agent", "", "Consul agent to ask on SIGTERM")
	service := fs.String("service", "", "service ID to look for on SIGTERM")
	termExit := fs.Int("term-exit", 0, "exit status on SIGTERM; -1: die of it")
	orphan := fs.Bool("orphan", false, "leave an orphaned sleep behind")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	say := func(format string, a ...any) {
		f, err := os.OpenFile(*reportPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "web:", err)
			return
		}
		fmt.Fprintf(f, format+"\n", a...)
		f.Close()
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2)
	say("start %d", os.Getpid())
	if *orphan {
		if err := exec.Command("sh", "-c", "sleep 1000 &").Run(); err != nil {
			say("orphan error %v", err)
			return 1
		}
		say("orphaned")
	}
	l, err := listenRetry(*listen)
	if err != nil {
		say("listen error %v", err)
		return 1
	}
	defer l.Close()
	say("listening")
	// The examples' --check http://…/health: every path answers 200.
	go func() { _ = http.Serve(l, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()

	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR1:
			say("exit 3")
			return 3
		case syscall.SIGUSR2:
			say("exit 0")
			return 0
		case syscall.SIGTERM:
			say("term registered=%s", registered(*agent, *service))
			if *termExit >= 0 {
				return *termExit
			}
			signal.Reset(syscall.SIGTERM)
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			time.Sleep(wait)
			return 1
		}
	}
	return 1
}

// listenRetry listens on addr, retrying briefly: the web that ran before may
// still be closing its listener.
func listenRetry(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// registered asks the agent whether it has the service: "true", "false", or
// the error.
func registered(agent, service string) string {
	if agent == "" {
		return "unknown"
	}
	client, err := api.NewClient(&api.Config{
		Address:    agent,
		Scheme:     "http",
		HttpClient: &http.Client{Timeout: 5 * time.Second},
	})
	if err != nil {
		return "error: " + err.Error()
	}
	services, err := client.Agent().Services()
	if err != nil {
		return "error: " + err.Error()
	}
	_, ok := services[service]
	return strconv.FormatBool(ok)
}
