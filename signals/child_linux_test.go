package signals_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svcwrap/svcwrap/signals"
)

// proc is a helper child started through signals.Start, with its stdout as
// lines and its Exit readable any number of times.
type proc struct {
	*signals.Child
	lines  <-chan string
	exited chan struct{}
	exit   signals.Exit
}

// start starts a helper child with stdin from /dev/null and stdout on a pipe
// (unless opts says otherwise) and kills its whole group at cleanup.
func start(t *testing.T, opts signals.Options) *proc {
	t.Helper()
	if opts.Env == nil {
		opts.Env = helperEnv()
	}
	if opts.Stdin == nil {
		null, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = null.Close() })
		opts.Stdin = null
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	opts.Stdout = w
	c, err := signals.Start(opts)
	_ = w.Close()
	if err != nil {
		_ = r.Close()
		t.Fatalf("Start(%q): %v", opts.Argv, err)
	}
	p := &proc{Child: c, lines: lineReader(r), exited: make(chan struct{})}
	go func() {
		p.exit = <-c.Done()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = c.Kill()
		select {
		case <-p.exited:
		case <-time.After(waitTimeout):
			t.Errorf("child %d was not reaped within %v", c.Pid(), waitTimeout)
		}
		_ = r.Close()
	})
	return p
}

// wait returns the child's Exit, failing after waitTimeout.
func (p *proc) wait(t *testing.T) signals.Exit {
	t.Helper()
	select {
	case <-p.exited:
		return p.exit
	case <-time.After(waitTimeout):
		t.Fatalf("child %d did not end within %v", p.Pid(), waitTimeout)
	}
	return signals.Exit{}
}

func TestStart_ExitCodes(t *testing.T) {
	for _, code := range []int{0, 3, 7} {
		t.Run(fmt.Sprintf("exit %d", code), func(t *testing.T) {
			p := start(t, signals.Options{Argv: helperArgv("exit", strconv.Itoa(code))})
			if got, want := p.wait(t), (signals.Exit{Code: code}); got != want {
				t.Errorf("Exit = %+v, want %+v", got, want)
			}
		})
	}
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{
		{syscall.SIGTERM, 143},
		{syscall.SIGKILL, 137},
	} {
		t.Run("killed by "+signals.Name(tc.sig), func(t *testing.T) {
			p := start(t, signals.Options{Argv: helperArgv("ready-block")})
			expectLine(t, p.lines, "ready")
			if err := p.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			got := p.wait(t)
			if want := (signals.Exit{Code: tc.code, Signal: tc.sig}); got != want {
				t.Errorf("Exit = %+v, want %+v", got, want)
			}
			if want := "killed by " + signals.Name(tc.sig); got.String() != want {
				t.Errorf("String() = %q, want %q", got.String(), want)
			}
		})
	}
}

func TestStart_Errors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain", "#!/bin/sh\nexit 0\n", 0o644)
	garbage := write("garbage", "\x00\x01\x02 not a program\n", 0o755)
	badInterp := write("bad-interpreter", "#!/nonexistent/interpreter\n", 0o755)
	subdir := filepath.Join(dir, "subdir")
	if err := os.Mkdir(subdir, 0o755); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, argv0 string
		want        error
		message     string // exact, when not empty
	}{
		{"not in PATH", "svcwrap-no-such-command", signals.ErrNotFound,
			`start "svcwrap-no-such-command": command not found`},
		{"missing path", filepath.Join(dir, "missing"), signals.ErrNotFound, ""},
		{"missing interpreter", badInterp, signals.ErrNotFound, ""},
		{"no x bit", plain, signals.ErrNotExecutable, ""},
		{"directory", subdir, signals.ErrNotExecutable, ""},
		{"not a program", garbage, signals.ErrNotExecutable, ""},
		{"through a file", plain + "/x", signals.ErrNotExecutable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := signals.Start(signals.Options{Argv: []string{tc.argv0}})
			if err == nil {
				_ = c.Kill()
				<-c.Done()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q does not wrap %q", err, tc.want)
			}
			other := signals.ErrNotExecutable
			if tc.want == signals.ErrNotExecutable {
				other = signals.ErrNotFound
			}
			if errors.Is(err, other) {
				t.Errorf("error %q wraps %q too", err, other)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, fmt.Sprintf("start %q: ", tc.argv0)) {
				t.Errorf("message %q is not one line starting with `start %q: `", msg, tc.argv0)
			}
			if tc.message != "" && msg != tc.message {
				t.Errorf("message %q, want %q", msg, tc.message)
			}
		})
	}

	t.Run("empty", func(t *testing.T) {
		_, err := signals.Start(signals.Options{})
		if err == nil || errors.Is(err, signals.ErrNotFound) || errors.Is(err, signals.ErrNotExecutable) {
			t.Errorf("error = %v, want a plain error", err)
		}
	})
}

func TestStart_OwnProcessGroup(t *testing.T) {
	p := start(t, signals.Options{Argv: helperArgv("ready-block")})
	expectLine(t, p.lines, "ready")
	st, ok := readStat(p.Pid())
	if !ok {
		t.Fatal("child not in /proc")
	}
	if st.pgrp != p.Pid() {
		t.Errorf("child pgid = %d, want its pid %d", st.pgrp, p.Pid())
	}
	if st.ppid != os.Getpid() {
		t.Errorf("child ppid = %d, want %d", st.ppid, os.Getpid())
	}
}

func TestStart_Env(t *testing.T) {
	t.Run("nil inherits", func(t *testing.T) {
		t.Setenv(helperVar, "1")
		t.Setenv("SIGNALS_TEST_VALUE", "inherited")
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		c, err := signals.Start(signals.Options{Argv: helperArgv("env", "SIGNALS_TEST_VALUE"), Stdout: w})
		_ = w.Close()
		if err != nil {
			t.Fatal(err)
		}
		lines := lineReader(r)
		expectLine(t, lines, "inherited")
		select {
		case e := <-c.Done():
			if e.Code != 0 {
				t.Errorf("exit %v", e)
			}
		case <-time.After(waitTimeout):
			_ = c.Kill()
			t.Fatal("no exit")
		}
	})
	t.Run("given replaces", func(t *testing.T) {
		p := start(t, signals.Options{
			Argv: helperArgv("env", "PATH"),
			Env:  []string{helperVar + "=1", "SIGNALS_TEST_VALUE=given"},
		})
		expectLine(t, p.lines, "<unset>")
		p2 := start(t, signals.Options{
			Argv: helperArgv("env", "SIGNALS_TEST_VALUE"),
			Env:  []string{helperVar + "=1", "SIGNALS_TEST_VALUE=given"},
		})
		expectLine(t, p2.lines, "given")
	})
}

func TestChild_Signal(t *testing.T) {
	t.Run("each send arrives once", func(t *testing.T) {
		p := start(t, signals.Options{Argv: helperArgv("signals")})
		expectLine(t, p.lines, "ready")
		for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGUSR1} {
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			expectLine(t, p.lines, signals.Name(sig))
		}
		// A duplicate delivery would show up here instead of SIGTERM.
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		expectLine(t, p.lines, "SIGTERM")
		expectEOF(t, p.lines)
		if got := p.wait(t); got != (signals.Exit{}) {
			t.Errorf("Exit = %+v, want exit status 0", got)
		}
	})

	t.Run("every forwardable signal", func(t *testing.T) {
		p := start(t, signals.Options{Argv: helperArgv("signals")})
		expectLine(t, p.lines, "ready")
		for _, s := range signals.Forwardable() {
			sig := s.(syscall.Signal)
			if sig == syscall.SIGTERM {
				continue // ends the helper; sent last
			}
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			expectLine(t, p.lines, signals.Name(sig))
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		expectLine(t, p.lines, "SIGTERM")
		expectEOF(t, p.lines)
	})

	t.Run("ignored SIGTERM, then Kill", func(t *testing.T) {
		p := start(t, signals.Options{Argv: helperArgv("ignore-term")})
		expectLine(t, p.lines, "ready")
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Had SIGTERM been fatal, the process would have been doomed when it
		// was sent, and could not answer this.
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		expectLine(t, p.lines, "SIGUSR1")
		if !p.GroupAlive() {
			t.Error("GroupAlive = false for a running child")
		}
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		if got, want := p.wait(t), (signals.Exit{Code: 137, Signal: syscall.SIGKILL}); got != want {
			t.Errorf("Exit = %+v, want %+v", got, want)
		}
	})

	t.Run("after exit", func(t *testing.T) {
		p := start(t, signals.Options{Argv: helperArgv("exit", "0")})
		p.wait(t)
		waitFor(t, "the group to be gone", func() bool { return !p.GroupAlive() })
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("Signal after exit = %v, want nil", err)
		}
		if err := p.Kill(); err != nil {
			t.Errorf("Kill after exit = %v, want nil", err)
		}
	})
}

func TestChild_KillTakesTheGroup(t *testing.T) {
	p := start(t, signals.Options{Argv: helperArgv("grandchild")})
	fields := strings.Fields(nextLine(t, p.lines))
	if len(fields) != 3 || fields[0] != "pids" {
		t.Fatalf("unexpected line %q", fields)
	}
	grandchild, _ := strconv.Atoi(fields[2])
	t.Cleanup(func() { _ = unix.Kill(grandchild, syscall.SIGKILL) })
	if st, ok := readStat(grandchild); !ok || st.pgrp != p.Pid() {
		t.Fatalf("grandchild %d: %+v (present %v), want in group %d", grandchild, st, ok, p.Pid())
	}
	if !p.GroupAlive() {
		t.Fatal("GroupAlive = false before Kill")
	}

	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if got, want := p.wait(t), (signals.Exit{Code: 137, Signal: syscall.SIGKILL}); got != want {
		t.Errorf("Exit = %+v, want %+v", got, want)
	}
	waitFor(t, "the grandchild to die", func() bool { return gone(grandchild) })
	// The orphaned grandchild's zombie counts as a group member until the
	// system's init reaps it.
	waitFor(t, "GroupAlive to turn false", func() bool { return !p.GroupAlive() })
}

func TestStart_ForegroundWithoutTerminal(t *testing.T) {
	// stdin is /dev/null: Foreground must fall back to a plain process group.
	p := start(t, signals.Options{Argv: helperArgv("ready-block"), Foreground: true})
	expectLine(t, p.lines, "ready")
	if st, _ := readStat(p.Pid()); st.pgrp != p.Pid() {
		t.Errorf("child pgid = %d, want %d", st.pgrp, p.Pid())
	}
	p.Release()
	p.Release()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	p.Release()
}

func TestStart_ReapAllRefusedWhileOthersRun(t *testing.T) {
	p := start(t, signals.Options{Argv: helperArgv("ready-block")})
	expectLine(t, p.lines, "ready")
	c, err := signals.Start(signals.Options{Argv: helperArgv("exit", "0"), Env: helperEnv(), ReapAll: true})
	if err == nil {
		_ = c.Kill()
		t.Fatal("ReapAll Start succeeded while a child waited for by its own pid runs")
	}
	if !strings.Contains(err.Error(), "ReapAll") {
		t.Errorf("error %q does not say why", err)
	}
}
