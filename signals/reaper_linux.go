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
	waiters  int            // children with their own wait4(pid) goroutine
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
		go c.wait()
	})
	return err
}

// wait blocks in wait4 on the child's pid alone, leaving every other child of
// the process to whoever started it.
func (c *Child) wait() {
	e := Exit{Code: statusLost}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(c.pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break // ECHILD: reaped by someone else; the status is lost
		}
		if x, ok := exitOf(ws); ok {
			e = x
			break
		}
	}
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
