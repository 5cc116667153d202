package sdnotify_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/sdnotify"
)

const wait = 10 * time.Second

// listen opens a real unixgram socket, as systemd's notify socket is, and
// points NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// next reads one datagram, failing the test if none comes within wait.
func next(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(wait)))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	require.NoError(t, err, "no datagram on the notify socket")
	return string(buf[:n])
}

func TestSocket_Protocol(t *testing.T) {
	conn := listen(t)
	s := sdnotify.New(func(err error) { t.Errorf("send: %v", err) })
	defer s.Close()

	s.Status("registering")
	assert.Equal(t, "STATUS=registering", next(t, conn))
	s.Ready("passing")
	assert.Equal(t, "READY=1\nSTATUS=passing", next(t, conn))
	s.Ready("passing again")
	assert.Equal(t, "STATUS=passing again", next(t, conn), "READY=1 is sent once")
	s.Watchdog()
	assert.Equal(t, "WATCHDOG=1", next(t, conn))
	s.Stopping("stopping: deregistering")
	assert.Equal(t, "STOPPING=1\nSTATUS=stopping: deregistering", next(t, conn))
	s.Stopping("stopping: again")
	assert.Equal(t, "STATUS=stopping: again", next(t, conn), "STOPPING=1 is sent once")

	// After STOPPING=1: no keep-alive, no READY=1.
	s.Watchdog()
	s.Ready("late")
	s.Status("last")
	got := next(t, conn)
	if got == "STATUS=late" {
		got = next(t, conn)
	}
	assert.Equal(t, "STATUS=last", got)
}

// A message queued just before svcwrap exits is not lost: Close sends it.
func TestSocket_CloseFlushes(t *testing.T) {
	conn := listen(t)
	s := sdnotify.New(nil)
	s.Stopping("command ended")
	s.Close()
	assert.Equal(t, "STOPPING=1\nSTATUS=command ended", next(t, conn))
	s.Status("after close")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err := conn.Read(make([]byte, 64))
	var ne net.Error
	assert.True(t, errors.As(err, &ne) && ne.Timeout(), "nothing is sent after Close: %v", err)
}

// A manager that does not read fills the socket's queue, and a send blocks:
// the callers never do, Close gives up after its bound, and once the socket
// is read again the newest status arrives.
func TestSocket_NeverBlocks(t *testing.T) {
	conn := listen(t)
	s := sdnotify.New(nil)
	const n = 1000 // far more than a unixgram socket queues (net.unix.max_dgram_qlen, 10 by default)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			s.Status("status " + strconv.Itoa(i))
			s.Watchdog()
		}
		s.Close()
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("a notification blocked its caller")
	}
	last := fmt.Sprintf("STATUS=status %d", n-1)
	for {
		if m := next(t, conn); strings.Contains(m, last) {
			break
		}
	}
}

// No socket: nothing is sent, and no error is reported.
func TestSocket_NoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	s := sdnotify.New(func(err error) { t.Errorf("send: %v", err) })
	s.Ready("x")
	s.Close()
}

// A socket that is gone is reported to onError.
func TestSocket_Error(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	errs := make(chan error, 1)
	s := sdnotify.New(func(err error) {
		select {
		case errs <- err:
		default:
		}
	})
	s.Ready("x")
	s.Close()
	select {
	case err := <-errs:
		assert.ErrorIs(t, err, os.ErrNotExist)
	case <-time.After(wait):
		t.Fatal("no error reported")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"500000", "", 500 * time.Millisecond},
		{"500000", strconv.Itoa(os.Getpid()), 500 * time.Millisecond},
		{"500000", strconv.Itoa(os.Getpid() + 1), 0}, // another process's watchdog
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		got, err := sdnotify.WatchdogInterval()
		require.NoError(t, err)
		assert.Equal(t, c.want, got, "WATCHDOG_USEC=%s WATCHDOG_PID=%s", c.usec, c.pid)
	}
}
