package check

import (
	"context"
	"net"
	"time"
)

// TCP is the check tcp:HOST:PORT: passing while a TCP connection to Addr can
// be made, critical otherwise. The connection is closed at once, nothing
// sent. It connects: never point it at a server that accepts a single
// connection (`nc -l`), whose one connection it would take; the listen check
// of --port is for those.
type TCP struct {
	// Addr is HOST:PORT, a name or an IP address ([v6]:PORT).
	Addr string
	// Timeout bounds the connect, name resolution included. Zero: only the
	// context passed to Check bounds it.
	Timeout time.Duration
}

// Check connects once. Its output is "connected to ADDR" when passing, and
// "connect ADDR: WHY" when critical, where WHY names the kind of failure in
// constant words ("connection refused", "timeout after 2s").
func (t TCP) Check(ctx context.Context) Result {
	if t.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return Result{Status: Critical, Output: "connect " + t.Addr + ": " + describe(err, t.Timeout)}
	}
	conn.Close()
	return Result{Status: Passing, Output: "connected to " + t.Addr}
}
