package signals

import (
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// statusLost is the Code reported when the child's status could not be read
// because something else in the process reaped it first.
const statusLost = 255

// Exit is how the child ended, in the form svcwrap passes on as its own exit
// code.
type Exit struct {
	// Code is the exit status, or 128+N when signal N killed the child: the
	// convention of shells, tini and dumb-init, so a supervisor reads svcwrap's
	// status as it would read the child's. It is 255 in the one case where the
	// status was lost (see Child.Done).
	Code int
	// Signal is the signal that killed the child, 0 when it exited by itself.
	Signal syscall.Signal
}

// String reads like the shell's account of the child: "exit status 3",
// "killed by SIGTERM".
func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by " + Name(e.Signal)
	}
	return "exit status " + strconv.Itoa(e.Code)
}

// exitOf converts a wait status. It reports false for a status that is not an
// end (stopped, continued), which the caller keeps waiting past.
func exitOf(ws unix.WaitStatus) (Exit, bool) {
	switch {
	case ws.Exited():
		return Exit{Code: ws.ExitStatus()}, true
	case ws.Signaled():
		return Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}, true
	}
	return Exit{}, false
}
