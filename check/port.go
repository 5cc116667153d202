package check

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
)

// Port is the default readiness check when --port is given: the child is ready
// once its process tree listens on the port. It reads the kernel's socket
// tables (see Listening) and never connects to the port, because a connection
// would be accepted by the child: `nc -l` accepts exactly one, and a probe
// that connected would take the place of the real client.
//
// The zero value is not useful: PID 0 and port 0 are configuration errors and
// always report Critical.
type Port struct {
	// PID is the root of the process tree to inspect, normally the child that
	// svcwrap started. The tree includes its threads and all its descendants,
	// so a shell script that starts the real server still counts.
	PID int
	// Port is the TCP port (1 to 65535) that some process of the tree must
	// listen on, on any local address, IPv4 or IPv6.
	Port int

	last *socketHolder // where the socket was found last; nil: no memory
}

// NewPort returns the check for pid and port that remembers by which
// descriptor pid itself held the listening socket and looks there first: once
// a child that listens itself is ready, a check costs one socket-table query
// (of the socket's family, in svcwrap's network namespace) and two readlinks
// (the child's namespace, the descriptor) instead of a walk over the open
// files of the whole process tree. (A socket held by a descendant is looked
// for afresh each time.)
// Copies share that memory, and Check may be called from several goroutines.
func NewPort(pid, port int) Port {
	return Port{PID: pid, Port: port, last: new(socketHolder)}
}

// socketHolder is the open file that held the listening socket at the last
// check: descriptor fd of process pid; pid 0 when none. ours says that the
// socket was found in a dump of svcwrap's own network namespace, v6 that it
// was last found in the IPv6 dump (a dual-stack listener), which is then
// asked first.
type socketHolder struct {
	mu       sync.Mutex
	pid, fd  int
	ours, v6 bool
}

// Check reports Passing with "listening on port P" while the tree listens on
// P, and Critical with "not listening on port P" while it does not. When the
// socket tables cannot be read, it reports Critical with a constant
// description of the kind of failure (never the error message itself, which
// holds PIDs and paths), so that the output changes only when the situation
// does.
func (p Port) Check(ctx context.Context) Result {
	port := strconv.Itoa(p.Port)
	if ctx.Err() != nil {
		return Result{Status: Critical, Output: "port " + port + " check cancelled"}
	}

	ok, err := listening(p.PID, p.Port, p.last)
	switch {
	case err == nil && ok:
		return Result{Status: Passing, Output: "listening on port " + port}
	case err == nil:
		return Result{Status: Critical, Output: "not listening on port " + port}
	case errors.Is(err, os.ErrInvalid):
		return Result{Status: Critical, Output: "invalid port check for port " + port + " (needs a PID and a port from 1 to 65535)"}
	case errors.Is(err, errors.ErrUnsupported):
		return Result{Status: Critical, Output: "port check unsupported on this system"}
	case errors.Is(err, os.ErrNotExist):
		return Result{Status: Critical, Output: "process not running, not listening on port " + port}
	case errors.Is(err, os.ErrPermission):
		return Result{Status: Critical, Output: "permission denied reading socket tables for port " + port}
	default:
		return Result{Status: Critical, Output: "cannot read socket tables for port " + port}
	}
}
