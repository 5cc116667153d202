package signals_test

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/svcwrap/svcwrap/signals"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syscall.Signal
	}{
		{"TERM", syscall.SIGTERM},
		{"SIGTERM", syscall.SIGTERM},
		{"sigterm", syscall.SIGTERM},
		{"term", syscall.SIGTERM},
		{"15", syscall.SIGTERM},
		{"Hup", syscall.SIGHUP},
		{"1", syscall.SIGHUP},
		{"KILL", syscall.SIGKILL},
		{"WINCH", syscall.SIGWINCH},
		{"SIGIOT", syscall.SIGABRT},
		{"poll", syscall.SIGIO},
		{"RTMIN", 34},
		{"SIGRTMIN+1", 35},
		{"rtmin+15", 49},
		{"RTMAX-14", 50},
		{"SIGRTMAX", 64},
		{"64", 64},
	} {
		got, err := signals.Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "0", "65", "-1", "+15", "15x", "SIG", "FOO", "SIGFOO", " TERM",
		"RTMIN-1", "RTMIN+31", "RTMAX+1", "RTMAX-31", "RTMIN+", "RTMIN+x"} {
		got, err := signals.Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
			continue
		}
		if want := fmt.Sprintf("unknown signal %q", in); err.Error() != want {
			t.Errorf("Parse(%q) error %q, want %q", in, err, want)
		}
	}
}

func TestName(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGHUP, "SIGHUP"},
		{syscall.SIGTERM, "SIGTERM"},
		{syscall.SIGSYS, "SIGSYS"},
		{34, "SIGRTMIN"},
		{35, "SIGRTMIN+1"},
		{49, "SIGRTMIN+15"},
		{50, "SIGRTMAX-14"},
		{63, "SIGRTMAX-1"},
		{64, "SIGRTMAX"},
		{0, "signal 0"},
		{32, "signal 32"},
		{65, "signal 65"},
	} {
		if got := signals.Name(tc.sig); got != tc.want {
			t.Errorf("Name(%d) = %q, want %q", tc.sig, got, tc.want)
		}
	}
	// Every name reads back as its number.
	for n := 1; n <= 64; n++ {
		if n == 32 || n == 33 {
			continue
		}
		name := signals.Name(syscall.Signal(n))
		if got, err := signals.Parse(name); err != nil || got != syscall.Signal(n) {
			t.Errorf("Parse(Name(%d)) = Parse(%q) = %d, %v", n, name, got, err)
		}
	}
}

func TestExit_String(t *testing.T) {
	for _, tc := range []struct {
		e    signals.Exit
		want string
	}{
		{signals.Exit{}, "exit status 0"},
		{signals.Exit{Code: 3}, "exit status 3"},
		{signals.Exit{Code: 143, Signal: syscall.SIGTERM}, "killed by SIGTERM"},
		{signals.Exit{Code: 128 + 35, Signal: 35}, "killed by SIGRTMIN+1"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestIsStop(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		if !signals.IsStop(sig) {
			t.Errorf("IsStop(%v) = false", sig)
		}
	}
	for _, sig := range []os.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGKILL, syscall.SIGUSR1, os.Kill} {
		if signals.IsStop(sig) {
			t.Errorf("IsStop(%v) = true", sig)
		}
	}
}

func TestForwardable(t *testing.T) {
	got := signals.Forwardable()
	has := func(sig syscall.Signal) bool { return slices.Contains(got, os.Signal(sig)) }

	want := []syscall.Signal{
		syscall.SIGINT, syscall.SIGQUIT, syscall.SIGABRT, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGSTKFLT, syscall.SIGCONT,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGXCPU, syscall.SIGXFSZ,
		syscall.SIGVTALRM, syscall.SIGWINCH, syscall.SIGIO, syscall.SIGPWR,
	}
	for n := 35; n <= 64; n++ {
		want = append(want, syscall.Signal(n))
	}
	// Under nohup SIGHUP is rightly left out.
	if !signal.Ignored(syscall.SIGHUP) {
		want = append(want, syscall.SIGHUP)
	}
	for _, sig := range want {
		if !has(sig) {
			t.Errorf("Forwardable lacks %s", signals.Name(sig))
		}
	}
	for _, sig := range []syscall.Signal{
		syscall.SIGCHLD, syscall.SIGURG, syscall.SIGPIPE, syscall.SIGKILL, syscall.SIGSTOP,
		syscall.SIGPROF, syscall.SIGILL, syscall.SIGTRAP, syscall.SIGBUS, syscall.SIGFPE,
		syscall.SIGSEGV, syscall.SIGSYS, 32, 33, 34,
	} {
		if has(sig) {
			t.Errorf("Forwardable includes %s", signals.Name(sig))
		}
	}
	if len(got) != len(want) {
		t.Errorf("Forwardable has %d signals, want %d: %v", len(got), len(want), got)
	}
	if !slices.IsSortedFunc(got, func(a, b os.Signal) int { return int(a.(syscall.Signal)) - int(b.(syscall.Signal)) }) {
		t.Errorf("Forwardable not in increasing order: %v", got)
	}
}

// A signal ignored when svcwrap starts (nohup) or when Forwardable is called
// stays out, so that signal.Notify does not re-enable it.
func TestForwardable_LeavesIgnoredOut(t *testing.T) {
	// The first helper ignores SIGHUP and execs the second, which thus starts
	// with SIGHUP ignored, like a command under nohup; it ignores SIGUSR2
	// itself before calling Forwardable.
	cmd := helperCmd(t, "exec-ignoring-hup", "forwardable", "USR2")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[0] != "hup-ignored true" {
		t.Fatalf("helper did not start with SIGHUP ignored: %q", lines[0])
	}
	if lines[len(lines)-1] != "end" {
		t.Fatalf("helper output incomplete: %q", out)
	}
	names := lines[1 : len(lines)-1]
	for _, name := range []string{"SIGHUP", "SIGUSR2"} {
		if slices.Contains(names, name) {
			t.Errorf("Forwardable includes ignored %s: %v", name, names)
		}
	}
	for _, name := range []string{"SIGTERM", "SIGINT", "SIGUSR1", "SIGWINCH"} {
		if !slices.Contains(names, name) {
			t.Errorf("Forwardable lacks %s: %v", name, names)
		}
	}
}

// Catch really receives every signal Forwardable names: those with a name
// at once, the real-time ones once its second step has run (and one sent
// before is dropped, not fatal). In a process of its own, since the signals
// hit it.
func TestCatch_ReceivesEveryForwardableInTwoSteps(t *testing.T) {
	cmd := helperCmd(t, "catch-self")
	out, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(out), "OK ") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

// A second step begun after the stop has begun catches nothing.
func TestCatch_SecondStepAfterTheStopCatchesNothing(t *testing.T) {
	out, err := helperCmd(t, "catch-cancelled").Output()
	if err != nil || !strings.HasPrefix(string(out), "OK") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}
