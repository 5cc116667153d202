package main

// End-to-end tests of the svcwrap binary: built once in TestMain, run against a
// real dev Consul agent, wrapping real children. The children are nc, sh, and
// this test binary itself re-executed in a helper mode (see helper_test.go).

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// svcwrapBin is the binary under test, built by TestMain.
var svcwrapBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	// The test binary is package main, so internal/oneproc gave it one P,
	// and -test.parallel took that one as its default: the parallel tests
	// (the reaper's, a minute and more each) would run one after another.
	// A -test.parallel on the command line still wins (flags are parsed
	// by m.Run).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.NumCPU())
		if f := flag.Lookup("test.parallel"); f != nil {
			_ = f.Value.Set(strconv.Itoa(runtime.NumCPU()))
		}
	}
	dir, err := os.MkdirTemp("", "svcwrap-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	svcwrapBin = filepath.Join(dir, "svcwrap")
	build := exec.Command("go", "build", "-race", "-o", svcwrapBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build svcwrap:", err)
		os.Exit(1)
	}
	// The race detector sleeps a second before a process exits 0
	// (atexit_sleep_ms): svcwrap and the helper children are -race builds,
	// and every test that waits for one to exit would wait that second.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// wrapped is one svcwrap process under test, its output collected line by
// line so tests can wait for a line instead of sleeping.
type wrapped struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *lines
	errOut *lines
	done   chan struct{}
	code   int
}

// lines collects a stream and lets a test wait for a line that contains s.
type lines struct {
	mu   sync.Mutex
	all  []string
	cond *sync.Cond
	eof  bool
}

func newLines(r io.Reader) *lines {
	l := &lines{}
	l.cond = sync.NewCond(&l.mu)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.cond.Broadcast()
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.eof = true
		l.cond.Broadcast()
		l.mu.Unlock()
	}()
	return l
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

func (l *lines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.all {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// waitEOF blocks until every writer has closed the stream.
func (l *lines) waitEOF(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		eof := l.eof
		l.mu.Unlock()
		if eof {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream still open after %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor blocks until a line contains s, the stream ends, or the deadline.
func (l *lines) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	timer := time.AfterFunc(timeout, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		for _, line := range l.all {
			if strings.Contains(line, s) {
				return
			}
		}
		if l.eof || time.Now().After(deadline) {
			t.Fatalf("no line with %q in output:\n%s", s, strings.Join(l.all, "\n"))
		}
		l.cond.Wait()
	}
}

// start runs svcwrap with args against agent (nil: no --consul flag).
func start(t *testing.T, agent *consultest.Agent, args ...string) *wrapped {
	t.Helper()
	if agent != nil {
		args = append([]string{"--consul", agent.HTTPAddr}, args...)
	}
	cmd := exec.Command(svcwrapBin, args...)
	cmd.Env = os.Environ()
	return launch(t, cmd)
}

// launch starts cmd, a svcwrap (perhaps behind a shell), with its output
// collected line by line, and kills it at the end of the test if it still
// runs.
func launch(t *testing.T, cmd *exec.Cmd) *wrapped {
	t.Helper()
	// Our own pipes, not StdoutPipe: Wait would close those as soon as
	// svcwrap exits, possibly before its last lines were read.
	stdout, outW, err := os.Pipe()
	require.NoError(t, err)
	stderr, errW, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = outW, errW
	require.NoError(t, cmd.Start())
	outW.Close()
	errW.Close()
	t.Cleanup(func() { stdout.Close(); stderr.Close() })
	w := &wrapped{t: t, cmd: cmd, out: newLines(stdout), errOut: newLines(stderr), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		w.code = exitCode(err)
		close(w.done)
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-w.done
		}
		if t.Failed() { // what svcwrap said is what explains a failure
			t.Logf("svcwrap %q exited %d\nstderr:\n%s", cmd.Args[1:], w.code, w.errOut)
		}
	})
	return w
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errorsAs(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

// wait returns svcwrap's exit code, failing the test if it does not exit.
func (w *wrapped) wait(timeout time.Duration) int {
	w.t.Helper()
	select {
	case <-w.done:
		return w.code
	case <-time.After(timeout):
		w.t.Fatalf("svcwrap did not exit within %s\nstdout:\n%s\nstderr:\n%s", timeout, w.out, w.errOut)
		return -1
	}
}

func (w *wrapped) signal(sig syscall.Signal) {
	w.t.Helper()
	require.NoError(w.t, w.cmd.Process.Signal(sig))
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// need fails the test when a program it uses is missing: `make deps`
// installs them.
func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed: run `make deps` (scripts/deps.sh)", p)
		}
	}
}

func checkStatus(t *testing.T, c *api.Client, id string) (string, string) {
	checks, err := c.Agent().Checks()
	if err != nil {
		return "", err.Error()
	}
	chk, ok := checks["service:"+id]
	if !ok {
		return "", "absent"
	}
	return chk.Status, chk.Output
}

// neverStarted is a command that leaves a mark if it ever runs.
func neverStarted(t *testing.T) (argv []string, ran func() bool) {
	mark := filepath.Join(t.TempDir(), "ran")
	return []string{"sh", "-c", "touch " + mark}, func() bool {
		_, err := os.Stat(mark)
		return err == nil
	}
}

func noServices(t *testing.T, c *api.Client) {
	t.Helper()
	svcs, err := c.Agent().Services()
	require.NoError(t, err)
	require.Empty(t, svcs, "nothing may be registered")
}

func runOnce(t *testing.T, args ...string) (code int, stderr string) {
	t.Helper()
	cmd := exec.Command(svcwrapBin, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err), errb.String()
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("svcwrap %q did not exit", args)
		return 0, ""
	}
}
