package signals

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start errors callers must tell apart, because the shell convention gives
// them different exit codes: 127 for a command that does not exist, 126 for
// one that exists but cannot be run. Check them with errors.Is.
var (
	// ErrNotFound: no such command in PATH, no such file, or the file's #!
	// interpreter or ELF loader is missing (as bash, which answers 127).
	ErrNotFound = errors.New("command not found")
	// ErrNotExecutable: the file exists but the kernel will not run it: no x
	// bit, a directory, not a binary or script (ENOEXEC), busy, a path through
	// a non-directory.
	ErrNotExecutable = errors.New("cannot execute")
)

// errReapMixed refuses to start the reaper while a child of this package is
// waited for by its pid (on its pidfd, or by wait4(pid)): the two would race
// for that status.
var errReapMixed = errors.New("ReapAll requested while children started without it are still running")

// Options say how to start the child. The zero value of every field but Argv
// means "behave like a plain exec from svcwrap".
type Options struct {
	// Argv is the command and its arguments. Argv[0] is looked up in
	// svcwrap's PATH as exec.LookPath does (a name with a slash is used as
	// is) and run directly: there is no shell. Required.
	Argv []string
	// Env is the child's whole environment. nil: svcwrap's own.
	Env []string
	// Stdin, Stdout and Stderr replace the child's standard streams. nil:
	// svcwrap's own fd 0, 1, 2, untouched (what the CLI does). Tests and
	// embedders use them to talk to the child. As with os/exec, a file given
	// here is switched to blocking mode. A Stdin given with Foreground must
	// stay open until Release.
	Stdin, Stdout, Stderr *os.File
	// ParentDeathSignal is sent by the kernel to the child when svcwrap dies,
	// even by SIGKILL, so a crashed wrapper does not leave an unsupervised
	// service behind (the CLI uses SIGKILL). 0: none; the child outlives
	// svcwrap.
	ParentDeathSignal syscall.Signal
	// Foreground gives the terminal to the child's process group, so that it
	// can read the terminal (a background group that reads gets SIGTTIN and
	// stops: `nc -l` would freeze) and so that a Ctrl-C reaches it once,
	// directly. It only applies when the child's stdin is a terminal whose
	// foreground group is svcwrap's; otherwise, and when false, the child's
	// group stays in the background. Release gives the terminal back.
	// While the child has the terminal, svcwrap itself receives no Ctrl-C
	// (or Ctrl-Z, Ctrl-\): it learns of them only as the child's exit.
	Foreground bool
	// ReapAll makes this process reap every child it has, as PID 1 must: one
	// loop calls wait4(-1) on each SIGCHLD, hands this package's children
	// their statuses and silently reaps everything else, and the process
	// becomes a child subreaper (PR_SET_CHILD_SUBREAPER) so orphaned
	// descendants of the child come to it even when it is not PID 1.
	//
	// The reaper is process-wide and, once started, permanent: every later
	// Start is reaped by it too. Use it for one child per process (svcwrap
	// has one). Start refuses ReapAll while children started without it are
	// still running. Beware that the reaper also takes the status of
	// processes started elsewhere in the program with os/exec, whose Wait
	// then fails.
	//
	// false: only the child's own pid is waited for: on a pidfd in Go's
	// poller, or where the kernel has no pidfds, by a goroutine blocked in
	// wait4(pid).
	ReapAll bool
}

// Child is a started child. It leads its own process group (pgid == pid), so
// that signals reach everything it started and a terminal's Ctrl-C does not
// reach it twice (once from the terminal, once forwarded).
type Child struct {
	pid      int
	done     chan Exit
	tty      *terminal // non-nil when Foreground took the terminal
	released sync.Once
}

// Start starts the child described by opts and returns once it runs the new
// program, or an error that wraps ErrNotFound or ErrNotExecutable when the
// command cannot be run, e.g. `start "nosuch": command not found`.
func Start(opts Options) (*Child, error) {
	if len(opts.Argv) == 0 || opts.Argv[0] == "" {
		return nil, errors.New("start: empty command")
	}
	name := opts.Argv[0]
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, lookPathError(name, err)
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{fdOf(opts.Stdin, 0), fdOf(opts.Stdout, 1), fdOf(opts.Stderr, 2)},
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: opts.ParentDeathSignal,
		},
	}
	c := newChild()
	if stdin := int(attr.Files[0]); opts.Foreground && ownsForeground(stdin) {
		// Ctty is a descriptor number in the child: its stdin.
		attr.Sys.Foreground, attr.Sys.Ctty = true, 0
		c.tty = &terminal{fd: stdin, file: opts.Stdin, pgrp: unix.Getpgrp()}
	}

	err = spawn(c, path, opts.Argv, attr, opts.ReapAll)
	runtime.KeepAlive(opts.Stdin)
	runtime.KeepAlive(opts.Stdout)
	runtime.KeepAlive(opts.Stderr)
	if err != nil {
		// The fork may have given the terminal away before exec failed.
		c.Release()
		return nil, execError(name, err)
	}
	return c, nil
}

func newChild() *Child {
	return &Child{done: make(chan Exit, 1)}
}

func fdOf(f *os.File, std uintptr) uintptr {
	if f == nil {
		return std
	}
	return f.Fd()
}

// Pid is the child's process id, which is also its process group id.
func (c *Child) Pid() int { return c.pid }

// Done delivers exactly one Exit when the child (the group leader) has ended
// and been reaped; the channel is buffered, so it is never blocked on and may
// be read late, but only one receive gets the value. It is not closed. Other
// members of the group may still run: see GroupAlive. If something else in
// the process reaped the child first (a foreign wait4(-1)), the status is lost
// and Code is 255.
func (c *Child) Done() <-chan Exit { return c.done }

// finish is called once, by whoever reaped the child.
func (c *Child) finish(e Exit) {
	c.Release()
	c.done <- e
}

// Signal sends sig to the child's whole process group, so that helpers the
// child started hear it too, as they would from a terminal. A group that no
// longer exists (ESRCH) is not an error: the child is gone, which is what a
// stop signal wanted.
func (c *Child) Signal(sig syscall.Signal) error {
	if c.pid <= 0 {
		return errors.New("signal: child not started")
	}
	if err := unix.Kill(-c.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %s to process group %d: %w", Name(sig), c.pid, err)
	}
	return nil
}

// Kill sends SIGKILL to the whole process group: the end of the stop
// sequence, which must not leave grandchildren behind. ESRCH is not an error.
func (c *Child) Kill() error { return c.Signal(syscall.SIGKILL) }

// GroupAlive reports whether any process of the child's group still exists,
// which can be true after the child itself has exited (daemonized helpers,
// pipelines). A zombie counts until its parent reaps it. EPERM (a member
// changed its credentials) counts as alive.
func (c *Child) GroupAlive() bool {
	if c.pid <= 0 {
		return false
	}
	err := unix.Kill(-c.pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Release gives the terminal's foreground back to svcwrap's process group if
// Foreground took it, so that svcwrap is not left as a background job of its
// own terminal. It runs by itself when the child ends, before Done delivers;
// calling it earlier (for example before svcwrap exits on an error) is safe,
// and so is calling it again or when nothing was taken.
func (c *Child) Release() {
	c.released.Do(func() {
		if c.tty != nil {
			c.tty.restore()
		}
	})
}

// lookPathError classifies an exec.LookPath failure.
func lookPathError(name string, err error) error {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("start %q: %w", name, ErrNotFound)
	case errors.Is(err, exec.ErrDot):
		return fmt.Errorf("start %q: %w in PATH except relative to the current directory; name it ./%s to run it",
			name, ErrNotFound, name)
	}
	return fmt.Errorf("start %q: %w: %w", name, ErrNotExecutable, rootCause(err))
}

// execError classifies a failed fork and exec.
func execError(name string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("start %q: %w", name, err)
	}
	switch errno {
	case unix.ENOENT:
		return fmt.Errorf("start %q: %w (its interpreter or loader is missing): %w", name, ErrNotFound, errno)
	case unix.EACCES, unix.EISDIR, unix.ENOEXEC, unix.ENOTDIR, unix.ETXTBSY,
		unix.ELOOP, unix.ENAMETOOLONG, unix.ELIBBAD, unix.E2BIG:
		return fmt.Errorf("start %q: %w: %w", name, ErrNotExecutable, errno)
	}
	return fmt.Errorf("start %q: %w", name, err)
}

// rootCause is the innermost error, e.g. "permission denied" rather than
// `exec: "x": stat x: permission denied`.
func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
