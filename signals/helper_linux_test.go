package signals_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svcwrap/svcwrap/signals"
)

// The test binary is its own helper child, as in Go's os/exec tests: with
// helperVar=1 in its environment, TestMain runs the helper mode named in
// argv[1] instead of the tests.
const helperVar = "SIGNALS_TEST_HELPER"

// waitTimeout bounds every wait in these tests and helpers. It is generous
// because it only matters when something is broken; on this machine even the
// slowest event waited for (PID 1 of the host reaping an orphan) takes ~2s.
const waitTimeout = 20 * time.Second

var testBin string

func TestMain(m *testing.M) {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "os.Executable:", err)
		os.Exit(2)
	}
	testBin = exe
	if os.Getenv(helperVar) == "1" {
		os.Exit(runHelper(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// helperArgv is the command line that runs helper mode args[0].
func helperArgv(args ...string) []string { return append([]string{testBin}, args...) }

// helperEnv is the environment that makes the test binary a helper. Under
// -race, a helper exiting 0 would otherwise sleep a second at exit.
func helperEnv() []string {
	return append(os.Environ(), helperVar+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// helperCmd is an exec.Cmd running a helper mode, killed at cleanup.
func helperCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(testBin, args...)
	cmd.Env = helperEnv()
	cmd.Stderr = os.Stderr
	t.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// ---- helper modes ----

func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		return 2
	}
	mode, args := args[0], args[1:]
	switch mode {
	case "exit": // exit N
		n, _ := strconv.Atoi(args[0])
		return n
	case "sleep": // block forever, silently
		blockForever()
	case "ready-block": // say ready, block forever, no signal handlers
		fmt.Println("ready")
		blockForever()
	case "block-stdin": // read stdin to EOF, then exit 0
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	case "env": // print the value of one variable
		v, ok := os.LookupEnv(args[0])
		if !ok {
			v = "<unset>"
		}
		fmt.Println(v)
		return 0
	case "signals":
		return helperSignals()
	case "ignore-term":
		return helperIgnoreTerm()
	case "grandchild":
		return helperGrandchild()
	case "spawn-orphans":
		return helperSpawnOrphans(args)
	case "forwardable":
		return helperForwardable(args)
	case "exec-ignoring-hup":
		signal.Ignore(syscall.SIGHUP)
		err := syscall.Exec(testBin, helperArgv(args...), os.Environ())
		fmt.Fprintln(os.Stderr, "exec:", err)
		return 2
	case "catch-self":
		return helperCatchSelf()
	case "catch-cancelled":
		return helperCatchCancelled()
	case "pdeath":
		return helperParentDeath(args)
	case "reap":
		return helperReap(args)
	case "tty-wrapper":
		return helperTTYWrapper(args[0])
	case "tty-child":
		return helperTTYChild()
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
	return 2
}

func blockForever() {
	for {
		time.Sleep(time.Hour)
	}
}

// helperSignals catches every signal it can, says "ready", then prints one
// line per signal received; it exits 0 after printing SIGTERM.
func helperSignals() int {
	var sigs []os.Signal
	for n := 1; n <= 64; n++ {
		switch s := syscall.Signal(n); s {
		case syscall.SIGKILL, syscall.SIGSTOP, // uncatchable
			syscall.SIGURG, syscall.SIGPROF, 32, 33, 34, // the Go runtime's
			syscall.SIGCHLD, syscall.SIGPIPE: // about this process itself
		default:
			sigs = append(sigs, s)
		}
	}
	c := make(chan os.Signal, 64)
	signal.Notify(c, sigs...)
	fmt.Println("ready")
	for s := range c {
		if _, err := fmt.Println(signals.Name(s.(syscall.Signal))); err != nil {
			return 1
		}
		if s == syscall.SIGTERM {
			return 0
		}
	}
	return 1
}

// helperIgnoreTerm ignores SIGTERM and prints SIGUSR1 when it gets one, so the
// test can prove it outlived the SIGTERM.
func helperIgnoreTerm() int {
	signal.Ignore(syscall.SIGTERM)
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	fmt.Println("ready")
	for range c {
		fmt.Println("SIGUSR1")
	}
	return 1
}

// helperGrandchild starts a grandchild in its own process group and prints
// "pids <self> <grandchild>".
func helperGrandchild() int {
	cmd := exec.Command(testBin, "sleep")
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("pids", os.Getpid(), cmd.Process.Pid)
	blockForever()
	return 1
}

// helperSpawnOrphans K CODE starts one grandchild that lives until its stdin
// (inherited) reaches EOF and K that exit at once, waits for none of them,
// prints "orphans <long> <quick>...", and exits CODE, orphaning them all.
func helperSpawnOrphans(args []string) int {
	k, _ := strconv.Atoi(args[0])
	code, _ := strconv.Atoi(args[1])
	long := exec.Command(testBin, "block-stdin")
	long.Stdin = os.Stdin
	if err := long.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pids := []string{strconv.Itoa(long.Process.Pid)}
	for range k {
		quick := exec.Command(testBin, "exit", "0")
		if err := quick.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pids = append(pids, strconv.Itoa(quick.Process.Pid))
	}
	fmt.Println("orphans", strings.Join(pids, " "))
	return code
}

// helperForwardable ignores the named signals, then prints whether SIGHUP is
// ignored and the names Forwardable returns, one per line, then "end".
func helperForwardable(ignore []string) int {
	for _, name := range ignore {
		sig, err := signals.Parse(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		signal.Ignore(sig)
	}
	fmt.Println("hup-ignored", signal.Ignored(syscall.SIGHUP))
	for _, s := range signals.Forwardable() {
		fmt.Println(signals.Name(s.(syscall.Signal)))
	}
	fmt.Println("end")
	return 0
}

// arrives sends sig to this process and reports whether it is the next
// signal c receives (within waitTimeout); it says why not on stdout.
func arrives(c <-chan os.Signal, sig syscall.Signal) bool {
	if err := unix.Kill(os.Getpid(), sig); err != nil {
		fmt.Println("FAIL kill", signals.Name(sig), err)
		return false
	}
	select {
	case got := <-c:
		if got == sig {
			return true
		}
		fmt.Println("FAIL", signals.Name(sig), "sent,", got, "received")
		return false
	case <-time.After(waitTimeout):
		fmt.Println("FAIL not delivered:", signals.Name(sig))
		return false
	}
}

// dropped sends the real-time signal sig, not caught yet, to this process:
// the runtime drops it and the process lives on, so SIGUSR1, sent after it,
// is the next signal c receives.
func dropped(c <-chan os.Signal, sig syscall.Signal) bool {
	if err := unix.Kill(os.Getpid(), sig); err != nil {
		fmt.Println("FAIL kill", signals.Name(sig), err)
		return false
	}
	if !arrives(c, syscall.SIGUSR1) {
		fmt.Println("FAIL: a real-time signal not caught yet arrived:", signals.Name(sig))
		return false
	}
	// The kernel hands pending signals out lowest number first: while every
	// thread had signals blocked (as the runtime does around a clone), sig
	// may still be pending behind SIGUSR1, to be caught by a later step.
	// Dropped means the process no longer has it pending.
	deadline := time.Now().Add(waitTimeout)
	for pending(sig) {
		if time.Now().After(deadline) {
			fmt.Println("FAIL: still pending:", signals.Name(sig))
			return false
		}
		time.Sleep(time.Millisecond) // the poll's period
	}
	return true
}

// pending reports whether sig is pending for the whole process (ShdPnd in
// /proc/self/status), where kill(getpid()) puts it.
func pending(sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// helperCatchCancelled calls the second step of signals.Catch with a context
// that has ended (a stop has begun): it catches nothing, and a real-time
// signal is still dropped (the process lives on).
func helperCatchCancelled() int {
	c := make(chan os.Signal, 8)
	rest := signals.Catch(c)
	defer signal.Stop(c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rest(ctx)
	if !dropped(c, sigRTMin1) {
		return 1
	}
	fmt.Println("OK")
	return 0
}

// helperCatchSelf subscribes with signals.Catch and sends itself every
// Forwardable signal: one with a name arrives at once, a real-time one only
// after the function Catch returned has been called, and is dropped before
// (the process lives on).
func helperCatchSelf() int {
	c := make(chan os.Signal, 8)
	rest := signals.Catch(c)
	defer signal.Stop(c)
	var named, realTime []syscall.Signal
	for _, s := range signals.Forwardable() {
		if sig := s.(syscall.Signal); sig < sigRTMin1 {
			named = append(named, sig)
		} else {
			realTime = append(realTime, sig)
		}
	}
	for _, sig := range named {
		if !arrives(c, sig) {
			return 1
		}
	}
	if !dropped(c, realTime[0]) {
		return 1
	}
	rest(context.Background())
	rest(context.Background()) // a second call does nothing
	for _, sig := range realTime {
		if !arrives(c, sig) {
			return 1
		}
	}
	fmt.Println("OK", len(named), len(realTime))
	return 0
}

// sigRTMin1 is SIGRTMIN+1 as Linux numbers it (`kill -l`): the first
// real-time signal svcwrap forwards.
const sigRTMin1 = syscall.Signal(35)

// helperParentDeath SIG starts a "signals" child with ParentDeathSignal=SIG
// from a goroutine locked to a thread that ends right after (a goroutine that
// exits locked takes its thread down). If Start forked on that thread, the
// child would get SIG then. It waits until that thread is gone, then prints
// "child <pid>" and blocks until the test kills it.
func helperParentDeath(args []string) int {
	n, _ := strconv.Atoi(args[0])
	type started struct {
		c   *signals.Child
		tid int
		err error
	}
	res := make(chan started, 1)
	var try func()
	try = func() {
		go func() {
			runtime.LockOSThread()
			tid := unix.Gettid()
			if tid == unix.Getpid() {
				// The main thread is parked, not ended, when its goroutine
				// exits locked: it would prove nothing. Try another thread.
				try()
				return
			}
			c, err := signals.Start(signals.Options{
				Argv:              helperArgv("signals"),
				ParentDeathSignal: syscall.Signal(n),
			})
			res <- started{c, tid, err}
		}()
	}
	try()
	var s started
	select {
	case s = <-res:
	case <-time.After(waitTimeout):
		fmt.Println("FAIL Start did not return")
		return 1
	}
	if s.err != nil {
		fmt.Println("FAIL", s.err)
		return 1
	}
	task := fmt.Sprintf("/proc/self/task/%d", s.tid)
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(task); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			fmt.Println("FAIL the calling thread did not end")
			return 1
		}
	}
	fmt.Println("child", s.c.Pid())
	blockForever()
	return 1
}

// helperReap runs the ReapAll checks in a process of its own (the reaper is
// process-wide) and prints "OK" or "FAIL <why>". With "pid1" it also checks
// that it is PID 1.
func helperReap(args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Printf("FAIL "+format+"\n", a...)
		return 1
	}
	if len(args) > 0 && args[0] == "pid1" && os.Getpid() != 1 {
		return fail("pid is %d, not 1", os.Getpid())
	}
	self := os.Getpid()

	// A child that orphans grandchildren and exits 5 at once.
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return fail("%v", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail("%v", err)
	}
	c, err := signals.Start(signals.Options{
		Argv:    helperArgv("spawn-orphans", "3", "5"),
		ReapAll: true,
		Stdin:   stdinR,
		Stdout:  outW,
	})
	if err != nil {
		return fail("start: %v", err)
	}
	defer func() { _ = c.Kill() }()
	_ = stdinR.Close()
	_ = outW.Close()
	line, err := readLineWithin(bufio.NewReader(outR), waitTimeout)
	if err != nil {
		return fail("read orphans: %v", err)
	}
	fields := strings.Fields(line)
	if len(fields) != 5 || fields[0] != "orphans" {
		return fail("unexpected line %q", line)
	}
	var orphans []int
	for _, f := range fields[1:] {
		pid, _ := strconv.Atoi(f)
		orphans = append(orphans, pid)
	}

	// The child's own status is not lost to the reaper.
	select {
	case e := <-c.Done():
		if e != (signals.Exit{Code: 5}) {
			return fail("child ended with %v, want exit status 5", e)
		}
	case <-time.After(waitTimeout):
		return fail("no exit from the child")
	}

	// The long orphan now belongs to this process (subreaper or PID 1).
	st, ok := readStat(orphans[0])
	if !ok || st.ppid != self || st.state == 'Z' {
		return fail("long orphan %d: %+v (present %v), want alive with ppid %d", orphans[0], st, ok, self)
	}
	// The quick ones died as zombies and must have been reaped.
	for _, pid := range orphans[1:] {
		if !pollFor(waitTimeout, func() bool { return reaped(pid) }) {
			return fail("quick orphan %d still a zombie", pid)
		}
	}
	// The long one exits on EOF and must not stay a zombie either.
	_ = stdinW.Close()
	if !pollFor(waitTimeout, func() bool { return reaped(orphans[0]) }) {
		return fail("long orphan %d still a zombie after it exited", orphans[0])
	}

	// Children that exit at once, started concurrently: the reaper runs all
	// the time, and still every status reaches its own Done.
	const n = 20
	errc := make(chan string, n)
	for i := range n {
		go func() {
			c, err := signals.Start(signals.Options{Argv: helperArgv("exit", strconv.Itoa(i)), ReapAll: true})
			if err != nil {
				errc <- err.Error()
				return
			}
			select {
			case e := <-c.Done():
				if e.Code != i || e.Signal != 0 {
					errc <- fmt.Sprintf("child %d: %v, want exit status %d", i, e, i)
					return
				}
				errc <- ""
			case <-time.After(waitTimeout):
				errc <- fmt.Sprintf("child %d: no exit", i)
			}
		}()
	}
	for range n {
		if msg := <-errc; msg != "" {
			return fail("%s", msg)
		}
	}

	// A killed child reports its signal through the reaper too.
	k, err := signals.Start(signals.Options{Argv: helperArgv("sleep"), ReapAll: true})
	if err != nil {
		return fail("start: %v", err)
	}
	_ = k.Kill()
	select {
	case e := <-k.Done():
		if e != (signals.Exit{Code: 137, Signal: syscall.SIGKILL}) {
			return fail("killed child: %v", e)
		}
	case <-time.After(waitTimeout):
		return fail("no exit from the killed child")
	}

	// Nothing of ours is left a zombie.
	if !pollFor(waitTimeout, func() bool { return len(zombieChildren(self)) == 0 }) {
		return fail("zombie children left: %v", zombieChildren(self))
	}
	fmt.Println("OK")
	return 0
}

// helperTTYWrapper plays svcwrap on a terminal. The test made stdin a pty
// that is this process's controlling terminal, with this process's group in
// the foreground. mode: "fg" (Foreground on), "nofg" (Foreground off),
// "background" (Foreground on, but another group owns the terminal).
func helperTTYWrapper(mode string) int {
	fail := func(format string, a ...any) int {
		fmt.Printf("FAIL "+format+"\n", a...)
		return 1
	}
	self := unix.Getpgrp()
	if fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP); err != nil || fg != self {
		return fail("not the terminal's foreground group: %d, %v", fg, err)
	}
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGUSR2)

	if mode == "background" {
		other := exec.Command(testBin, "sleep")
		other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := other.Start(); err != nil {
			return fail("%v", err)
		}
		defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
		// Still in the foreground, so no SIGTTOU for this.
		if err := unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, other.Process.Pid); err != nil {
			return fail("give the terminal away: %v", err)
		}
	}
	c, err := signals.Start(signals.Options{
		Argv:       helperArgv("tty-child"),
		Foreground: mode != "nofg",
	})
	if err != nil {
		return fail("start: %v", err)
	}
	defer func() { _ = c.Kill() }()
	fg := func() int { n, _ := unix.IoctlGetInt(0, unix.TIOCGPGRP); return n }
	fmt.Println("child", c.Pid(), "fg", fg(), "self", self)

	if mode == "fg" {
		var e signals.Exit
		select {
		case e = <-c.Done():
		case <-time.After(waitTimeout):
			return fail("no exit")
		}
		fmt.Println("exit", e.Code)
		fmt.Println("fg-after", fg())
		// Did the Ctrl-C reach this process too? A SIGINT would have been
		// sent when the key was typed, long before the child ended; the
		// SIGUSR2 sent now is a marker after which it would have arrived.
		_ = unix.Kill(os.Getpid(), syscall.SIGUSR2)
		gotInt := false
		for s := range sigc {
			if s == syscall.SIGINT {
				gotInt = true
			}
			if s == syscall.SIGUSR2 {
				break
			}
		}
		fmt.Println("wrapper-sigint", gotInt)
		c.Release() // again: must be harmless
		fmt.Println("fg-final", fg())
		fmt.Println("done")
		return 0
	}

	// The child reads the terminal from a background group: SIGTTIN stops it.
	if !pollFor(waitTimeout, func() bool { st, ok := readStat(c.Pid()); return ok && st.state == 'T' }) {
		return fail("child did not stop on reading the terminal")
	}
	fmt.Println("stopped")
	_ = c.Kill()
	select {
	case e := <-c.Done():
		fmt.Println("exit", e.Code)
	case <-time.After(waitTimeout):
		return fail("no exit")
	}
	c.Release()
	fmt.Println("fg-after", fg())
	fmt.Println("done")
	return 0
}

// helperTTYChild reads one line from the terminal, then waits for a SIGINT.
func helperTTYChild() int {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT)
	fmt.Println("ready")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		fmt.Println("read error", err)
		return 1
	}
	fmt.Println("read", strings.TrimSpace(line))
	<-c
	fmt.Println("SIGINT")
	return 0
}

// ---- shared test utilities ----

// pollFor polls cond every few milliseconds until it holds or d passes.
func pollFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// waitFor fails the test when cond does not hold within waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !pollFor(waitTimeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
	}
}

// readLineWithin reads one line, giving up after d.
func readLineWithin(r *bufio.Reader, d time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		line, err := r.ReadString('\n')
		res <- result{strings.TrimRight(line, "\n"), err}
	}()
	select {
	case r := <-res:
		return r.line, r.err
	case <-time.After(d):
		return "", fmt.Errorf("no line within %v", d)
	}
}

// lineReader delivers the lines of r on a channel closed at EOF.
func lineReader(r io.Reader) <-chan string {
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(r)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	return lines
}

// nextLine returns the next line, failing on EOF or after waitTimeout.
func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("output ended")
		}
		return line
	case <-time.After(waitTimeout):
		t.Fatalf("no output line within %v", waitTimeout)
	}
	return ""
}

// expectLine fails unless the next line is want.
func expectLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	if got := nextLine(t, lines); got != want {
		t.Fatalf("got line %q, want %q", got, want)
	}
}

// expectEOF fails unless the output ends (with no further line).
func expectEOF(t *testing.T, lines <-chan string) {
	t.Helper()
	select {
	case line, ok := <-lines:
		if ok {
			t.Fatalf("unexpected line %q", line)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("output did not end within %v", waitTimeout)
	}
}

// stat is what the tests need from /proc/<pid>/stat.
type stat struct {
	state byte
	ppid  int
	pgrp  int
}

// readStat reads /proc/<pid>/stat; ok is false when the process is gone.
func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold anything
	if i < 0 {
		return stat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return stat{state: f[0][0], ppid: ppid, pgrp: pgrp}, true
}

// gone reports whether pid no longer runs: absent, or a zombie (dead, waiting
// for some parent to reap it).
func gone(pid int) bool {
	st, ok := readStat(pid)
	return !ok || st.state == 'Z' || st.state == 'X'
}

// reaped reports whether pid is no longer a zombie: reaped (absent), or the
// pid was reused by a live process.
func reaped(pid int) bool {
	st, ok := readStat(pid)
	return !ok || (st.state != 'Z' && st.state != 'X')
}

// zombieChildren lists the zombie children of parent.
func zombieChildren(parent int) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var zs []int
	for _, p := range paths {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if st, ok := readStat(pid); ok && st.ppid == parent && st.state == 'Z' {
			zs = append(zs, pid)
		}
	}
	return zs
}
