package signals

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Linux numbers signals 1 to 64. glibc keeps 32 and 33 for its threads and
// reports SIGRTMIN as 34; names for real-time signals follow glibc and `kill -l`
// (SIGRTMIN+1 is 35), because those are the numbers a C child sees.
const (
	maxSignal = 64
	sigRTMin  = 34
	sigRTMax  = 64
)

// names holds the classic signals by number. Real-time ones are computed.
var names = [...]string{
	1:  "SIGHUP",
	2:  "SIGINT",
	3:  "SIGQUIT",
	4:  "SIGILL",
	5:  "SIGTRAP",
	6:  "SIGABRT",
	7:  "SIGBUS",
	8:  "SIGFPE",
	9:  "SIGKILL",
	10: "SIGUSR1",
	11: "SIGSEGV",
	12: "SIGUSR2",
	13: "SIGPIPE",
	14: "SIGALRM",
	15: "SIGTERM",
	16: "SIGSTKFLT",
	17: "SIGCHLD",
	18: "SIGCONT",
	19: "SIGSTOP",
	20: "SIGTSTP",
	21: "SIGTTIN",
	22: "SIGTTOU",
	23: "SIGURG",
	24: "SIGXCPU",
	25: "SIGXFSZ",
	26: "SIGVTALRM",
	27: "SIGPROF",
	28: "SIGWINCH",
	29: "SIGIO",
	30: "SIGPWR",
	31: "SIGSYS",
}

// aliases are other spellings Linux tools accept for the same numbers.
var aliases = map[string]syscall.Signal{
	"SIGIOT":  syscall.SIGABRT,
	"SIGPOLL": syscall.SIGIO,
	"SIGCLD":  syscall.SIGCHLD,
}

// notForwarded lists the signals Forwardable never returns, each with the
// reason, so the choice is visible in one place.
var notForwarded = map[syscall.Signal]string{
	// The kernel cannot deliver these to a handler.
	syscall.SIGKILL: "uncatchable",
	syscall.SIGSTOP: "uncatchable",
	// They describe svcwrap's own state, not a request for the child.
	syscall.SIGCHLD: "svcwrap's own children changed state; the reaper consumes it",
	syscall.SIGPIPE: "svcwrap wrote to one of its own closed pipes or sockets",
	syscall.SIGURG:  "the Go runtime preempts goroutines with it, many times a second",
	// Go's runtime keeps SIGPROF for its CPU profiler and never hands it to
	// signal.Notify, so it could not be relayed even if listed.
	syscall.SIGPROF: "owned by the Go runtime's profiler",
	// Synchronous faults: the kernel raises them at the instruction that
	// faulted, in svcwrap itself. Go turns them into a panic or a crash and
	// never delivers the kernel's copy to signal.Notify, so catching them
	// could only relay a copy someone sent with kill(2), and telling a healthy
	// child that it faulted would be a lie.
	syscall.SIGILL:  "synchronous fault",
	syscall.SIGTRAP: "synchronous fault (breakpoint, single step)",
	syscall.SIGBUS:  "synchronous fault",
	syscall.SIGFPE:  "synchronous fault",
	syscall.SIGSEGV: "synchronous fault",
	syscall.SIGSYS:  "synchronous fault (bad system call, seccomp)",
	// glibc's threads use 32 and 33; Go uses 33 for its own per-thread
	// system calls and leaves 32 and 34 (musl's) alone. signal.Notify cannot
	// take any of them.
	32: "reserved by glibc and the Go runtime",
	33: "reserved by glibc and the Go runtime",
	34: "reserved by musl and the Go runtime",
}

// Forwardable returns, in increasing order, the signals svcwrap catches and
// relays to its child: every signal that signal.Notify can receive, except
// those in notForwarded above and those ignored at the time of the call.
//
// An ignored signal stays ignored because signal.Notify would re-enable it:
// under nohup, svcwrap must go on ignoring SIGHUP and not forward it. Go only
// remembers an ignore inherited from the parent for SIGHUP and SIGINT (it
// installs its own handler for the others before main runs), so an inherited
// ignore of, say, SIGQUIT is invisible here.
//
// Included are SIGHUP, SIGINT, SIGQUIT, SIGABRT (Go does not use it for
// faults; like SIGQUIT it asks for a core dump, which belongs to the child),
// SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGSTKFLT (unused by the kernel, only
// ever sent by a process), SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU, SIGXCPU,
// SIGXFSZ, SIGVTALRM, SIGWINCH, SIGIO, SIGPWR, and the real-time signals 35
// (SIGRTMIN+1) to 64 (SIGRTMAX).
func Forwardable() []os.Signal {
	var sigs []os.Signal
	for n := 1; n <= maxSignal; n++ {
		sig := syscall.Signal(n)
		if _, skip := notForwarded[sig]; skip || signal.Ignored(sig) {
			continue
		}
		sigs = append(sigs, sig)
	}
	return sigs
}

// Catch relays every Forwardable signal to c, like signal.Notify, in two
// steps, and returns the second. Call it as early as possible in main: a
// signal with a name that arrives before it has its default effect on
// svcwrap (for SIGTERM, death without deregistering; for SIGTSTP, a stopped
// wrapper). Give c a buffer: signal.Notify drops what a full channel cannot
// take.
//
// Catch itself catches the signals with a name, SIGHUP to SIGPWR: all those
// whose default would end or stop svcwrap, and all that services are sent
// in practice. The function it returns catches the real-time ones, SIGRTMIN+1
// to SIGRTMAX; until it is called, Go's runtime takes a real-time signal and
// drops it, so one sent in the first milliseconds is lost (not fatal).
// They wait because catching a signal is a round trip between two threads
// (the runtime hands each one to the thread that keeps the signal mask):
// all 49 took 1.4-2.1 ms of svcwrap's start on the benchmark machine
// (BENCHMARKS.md, section 8), the 30 real-time ones most of it, so they are
// caught once the start has done what it must do at once. The function
// catches them one at a time and gives way to other goroutines between
// them, so that a stop or the child's end that comes meanwhile waits for one
// round trip at most; once ctx ends (a stop has begun), it catches no more.
// Once it has begun, calling it again does nothing.
func Catch(c chan<- os.Signal) (rest func(ctx context.Context)) {
	var named, realTime []os.Signal
	for _, s := range Forwardable() {
		if s.(syscall.Signal) < sigRTMin {
			named = append(named, s)
		} else {
			realTime = append(realTime, s)
		}
	}
	signal.Notify(c, named...)
	var once sync.Once
	return func(ctx context.Context) {
		once.Do(func() {
			for _, sig := range realTime {
				if ctx.Err() != nil {
					return
				}
				signal.Notify(c, sig)
				runtime.Gosched()
			}
		})
	}
}

// IsStop reports whether sig starts svcwrap's stop sequence (deregister, drain,
// forward, escalate) rather than being forwarded at once: SIGINT and SIGTERM,
// what an operator's Ctrl-C and every process manager send to stop a service.
func IsStop(sig os.Signal) bool {
	return sig == syscall.SIGINT || sig == syscall.SIGTERM
}

// Parse reads a signal as people write it on a command line: "TERM",
// "SIGTERM", "sigterm", "15", "RTMIN+2" or "SIGRTMAX-1". Anything else is an
// error `unknown signal "X"`, so a typo in a flag fails before the child
// starts.
func Parse(s string) (syscall.Signal, error) {
	unknown := fmt.Errorf("unknown signal %q", s)
	if s != "" && strings.Trim(s, "0123456789") == "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxSignal {
			return 0, unknown
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	for n, known := range names {
		if known != "" && known == name {
			return syscall.Signal(n), nil
		}
	}
	if sig, ok := aliases[name]; ok {
		return sig, nil
	}
	if n, ok := parseRealTime(strings.TrimPrefix(name, "SIG")); ok {
		return syscall.Signal(n), nil
	}
	return 0, unknown
}

// parseRealTime reads "RTMIN", "RTMIN+N", "RTMAX" and "RTMAX-N".
func parseRealTime(s string) (int, bool) {
	base, rest, sign := 0, "", 0
	switch {
	case strings.HasPrefix(s, "RTMIN"):
		base, rest, sign = sigRTMin, s[len("RTMIN"):], +1
	case strings.HasPrefix(s, "RTMAX"):
		base, rest, sign = sigRTMax, s[len("RTMAX"):], -1
	default:
		return 0, false
	}
	if rest == "" {
		return base, true
	}
	op := byte('+')
	if sign < 0 {
		op = '-'
	}
	if rest[0] != op || strings.Trim(rest[1:], "0123456789") != "" {
		return 0, false
	}
	off, err := strconv.Atoi(rest[1:])
	if err != nil {
		return 0, false
	}
	n := base + sign*off
	if n < sigRTMin || n > sigRTMax {
		return 0, false
	}
	return n, true
}

// Name returns the conventional name of sig ("SIGTERM", "SIGRTMIN+1",
// "SIGRTMAX"), as `kill -l` prints it, for messages and check output.
// Numbers without a name (0, 32, 33, beyond 64) read "signal N".
func Name(sig syscall.Signal) string {
	n := int(sig)
	switch {
	case n > 0 && n < len(names):
		return names[n]
	case n == sigRTMin:
		return "SIGRTMIN"
	case n == sigRTMax:
		return "SIGRTMAX"
	case n > sigRTMin && n <= (sigRTMin+sigRTMax)/2:
		return "SIGRTMIN+" + strconv.Itoa(n-sigRTMin)
	case n > sigRTMin && n < sigRTMax:
		return "SIGRTMAX-" + strconv.Itoa(sigRTMax-n)
	}
	return "signal " + strconv.Itoa(n)
}
