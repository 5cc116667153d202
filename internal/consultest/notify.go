package consultest

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// NotifySocket is systemd's end of NOTIFY_SOCKET: a unixgram socket that
// collects, in order, the fields ("READY=1", "STATUS=...") of every message
// sent to it. It is closed when the test ends.
type NotifySocket struct {
	// Path is the socket's path, for NOTIFY_SOCKET.
	Path string

	onMessage func([]string) []string
	mu        sync.Mutex
	fields    []string
}

// ListenNotify opens a NotifySocket in the test's temporary directory.
// onMessage, if not nil, is handed each message's fields as the message
// arrives and returns what to record instead, so that a test can add what
// held at that moment (Consul's status at READY=1). Nil: the fields as sent.
func ListenNotify(t testing.TB, onMessage func(fields []string) []string) *NotifySocket {
	t.Helper()
	n := &NotifySocket{Path: filepath.Join(t.TempDir(), "notify.sock"), onMessage: onMessage}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("notify socket: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			size, err := conn.Read(buf)
			if err != nil {
				return // closed by the cleanup
			}
			msg := strings.Split(string(buf[:size]), "\n")
			if n.onMessage != nil {
				msg = n.onMessage(msg)
			}
			n.mu.Lock()
			n.fields = append(n.fields, msg...)
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

// Fields returns every field received so far, in order.
func (n *NotifySocket) Fields() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.fields)
}

// WaitFor waits until a field that match accepts has been received, and
// fails the test if none has within timeout. what says what was awaited.
func (n *NotifySocket) WaitFor(t testing.TB, timeout time.Duration, match func(field string) bool, what string) {
	t.Helper()
	Eventually(t, timeout, func() (bool, string) {
		fields := n.Fields()
		return slices.ContainsFunc(fields, match), strings.Join(fields, " | ")
	}, what)
}
