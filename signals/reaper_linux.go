package signals

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// procs is who reaps the children of this package. Its mutex is held around
// each fork together with the registration of the new pid, and around each
// reaping pass, so a child that exits at once cannot be reaped before its pid
// is known: the pass waits for the registration and then finds the zombie.
var procs struct {
	mu       sync.Mutex
	reaping  bool           // the reaper runs; every child is in children
	children map[int]*Child // pid → child, while reaping
	waiters  int            // children waited for by pid (poll or wait), not by the reaper
}

// spawn forks and execs on the forking thread and arranges for the child's
// end to reach c.finish.
func spawn(c *Child, path string, argv []string, attr *syscall.ProcAttr, reapAll bool) error {
	var err error
	onForkThread(func() {
		procs.mu.Lock()
		defer procs.mu.Unlock()
		if reapAll && !procs.reaping {
			if procs.waiters > 0 {
				err = errReapMixed
				return
			}
			if err = startReaper(); err != nil {
				return
			}
		}
		pid, forkErr := syscall.ForkExec(path, argv, attr)
		if forkErr != nil {
			err = forkErr
			return
		}
		c.pid = pid
		if procs.reaping {
			procs.children[pid] = c
			return
		}
		procs.waiters++
		// Opened before anything can reap the child: until this package
		// waits for it, its pid stays its own, even as a zombie.
		if f := openPidfd(pid); f != nil {
			go c.poll(f)
			return
		}
		go c.wait()
	})
	return err
}

// pidfdOpen is unix.PidfdOpen; a variable so that a test can take the
// fallback of kernels without pidfds (before Linux 5.10 for PIDFD_NONBLOCK).
var pidfdOpen = unix.PidfdOpen

// openPidfd returns a non-blocking pidfd for pid, registered with Go's
// poller, or nil where the kernel has none to give.
func openPidfd(pid int) *os.File {
	fd, err := pidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	// NewFile tries to register a non-blocking descriptor with the poller
	// (waitPidfd fails where it could not); a pidfd is readable once its
	// process has ended.
	return os.NewFile(uintptr(fd), "pidfd")
}

// poll waits for the child's end on its pidfd in Go's poller, then reaps it
// with wait4(pid, WNOHANG), leaving every other child of the process to
// whoever started it.
//
// Why not wait4(pid) in a goroutine of its own, as wait does: that
// goroutine holds an OS thread for as long as the child runs, one of a
// wrapper's eight (1000 threads and 16 MiB of kernel stacks on a host of a
// thousand wrappers), and as it enters the call it keeps svcwrap's one P
// until the runtime's sysmon takes it back, while the registration waits to
// run. A pidfd parks the goroutine in the poller, which needs neither.
// (The start's latency did not measurably change: BENCHMARKS.md section 13.)
func (c *Child) poll(f *os.File) {
	e, err := waitPidfd(f, c.pid)
	f.Close()
	if err != nil {
		// The poller would not take the pidfd: wait the old way.
		e = waitBlocking(c.pid)
	}
	c.reaped(e)
}

// waitPidfd returns pid's Exit once its pidfd f says it has ended. An error
// means the poller cannot wait on f; the child has not been reaped then.
func waitPidfd(f *os.File, pid int) (Exit, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return Exit{}, err
	}
	e := Exit{Code: statusLost}
	// Read calls the function once at once, which reaps a child that has
	// already ended, and again each time f becomes readable, until it
	// returns true.
	err = rc.Read(func(uintptr) bool {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				return true // ECHILD: reaped by someone else; the status is lost
			case got == 0:
				return false // still running
			}
			x, ok := exitOf(ws)
			if ok {
				e = x
			}
			return ok // not an end (wait4 reports only ends here): wait on
		}
	})
	return e, err
}

// wait blocks in wait4 on the child's pid alone, leaving every other child of
// the process to whoever started it. It is poll's fallback, where the kernel
// has no pidfd for the child.
func (c *Child) wait() { c.reaped(waitBlocking(c.pid)) }

// waitBlocking returns pid's Exit from wait4(pid), which blocks until pid
// has ended.
func waitBlocking(pid int) Exit {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Exit{Code: statusLost} // ECHILD: reaped by someone else
		}
		if x, ok := exitOf(ws); ok {
			return x
		}
	}
}

// reaped hands the Exit of a child waited for by its pid (poll or wait) to
// its Done channel.
func (c *Child) reaped(e Exit) {
	procs.mu.Lock()
	procs.waiters--
	procs.mu.Unlock()
	c.finish(e)
}

// startReaper makes the process a child subreaper and starts the loop that
// reaps on SIGCHLD. Called with procs.mu held.
func startReaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	// One pending SIGCHLD is enough: a pass reaps every zombie there is, and
	// a SIGCHLD that arrives during a pass is kept for the next one.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	procs.children = make(map[int]*Child)
	procs.reaping = true
	go reapLoop(sigc)
	return nil
}

// reapLoop runs one pass at once, for children that ended before SIGCHLD was
// caught, then one per SIGCHLD. It never returns: the reaper is permanent.
func reapLoop(sigc <-chan os.Signal) {
	for {
		reapPass()
		<-sigc
	}
}

// reapPass reaps every zombie child of the process. Statuses of this
// package's children go to their Done channels, after the lock is released;
// other statuses are dropped, which is all an orphan needs.
func reapPass() {
	type ended struct {
		c *Child
		e Exit
	}
	var done []ended
	procs.mu.Lock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			break // ECHILD: no children; 0: none has ended
		}
		e, ok := exitOf(ws)
		if c := procs.children[pid]; ok && c != nil {
			delete(procs.children, pid)
			done = append(done, ended{c, e})
		}
	}
	procs.mu.Unlock()
	for _, d := range done {
		d.c.finish(d.e)
	}
}
