// Package sdnotify tells systemd about svcwrap's state over the notify
// socket (sd_notify(3)): READY=1, STATUS=, STOPPING=1 and WATCHDOG=1. The
// protocol itself is coreos/go-systemd's daemon package; what this package
// adds is that no caller ever waits on the socket: a send that blocks (a
// manager that does not read) holds up only this package's own goroutine,
// never svcwrap's supervise loop or its Consul syncer.
package sdnotify

import (
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// closeWait bounds how long Close waits for the last message to go out.
const closeWait = time.Second

// Socket sends notifications to $NOTIFY_SOCKET from a goroutine of its own.
// Messages not yet sent are merged into one datagram (sd_notify takes several
// newline-separated assignments at once): the newest STATUS= wins, and READY=1
// and STOPPING=1 are each sent once, READY=1 never after STOPPING=1. Its
// methods are safe for concurrent use and never block. Create it with New.
type Socket struct {
	onError func(error)
	wake    chan struct{}
	idle    chan struct{} // closed by the sender when it has exited

	mu       sync.Mutex
	pending  message
	ready    bool // READY=1 queued or sent
	stopping bool // STOPPING=1 queued or sent
	closed   bool
	started  bool
}

// message is what is waiting to be sent.
type message struct {
	ready, stopping, watchdog bool
	status                    string
}

func (m message) empty() bool { return m == message{} }

func (m message) String() string {
	var lines []string
	if m.ready {
		lines = append(lines, daemon.SdNotifyReady)
	}
	if m.stopping {
		lines = append(lines, daemon.SdNotifyStopping)
	}
	if m.status != "" {
		lines = append(lines, "STATUS="+m.status)
	}
	if m.watchdog {
		lines = append(lines, daemon.SdNotifyWatchdog)
	}
	return strings.Join(lines, "\n")
}

// New returns a Socket for $NOTIFY_SOCKET. onError, if not nil, is called
// from the sender's goroutine with each failed send. Nothing runs until the
// first notification.
func New(onError func(error)) *Socket {
	return &Socket{onError: onError, wake: make(chan struct{}, 1), idle: make(chan struct{})}
}

// WatchdogInterval is systemd's watchdog timeout for this process
// (WATCHDOG_USEC, when WATCHDOG_PID is unset or this process); zero when
// there is no watchdog. A keep-alive is due every half of it.
func WatchdogInterval() (time.Duration, error) {
	return daemon.SdWatchdogEnabled(false)
}

// Ready sends READY=1 with status, once: startup is finished.
func (s *Socket) Ready(status string) {
	s.queue(func(m *message) {
		if !s.ready && !s.stopping {
			s.ready, m.ready = true, true
		}
		m.status = status
	})
}

// Status sends STATUS=status, a line for `systemctl status`.
func (s *Socket) Status(status string) {
	s.queue(func(m *message) { m.status = status })
}

// Stopping sends STOPPING=1 with status, once: the stop has begun. From then
// on watchdog keep-alives are dropped, as systemd no longer expects them.
func (s *Socket) Stopping(status string) {
	s.queue(func(m *message) {
		if !s.stopping {
			s.stopping, m.stopping = true, true
		}
		m.watchdog = false
		m.status = status
	})
}

// Watchdog sends WATCHDOG=1, the keep-alive, unless the stop has begun.
func (s *Socket) Watchdog() {
	s.queue(func(m *message) {
		if !s.stopping {
			m.watchdog = true
		}
	})
}

// Close sends what is still queued, waiting at most a second, and stops the
// sender. Notifications after Close are dropped.
func (s *Socket) Close() {
	s.mu.Lock()
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return
	}
	s.poke()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-s.idle:
	case <-t.C:
	}
}

// queue changes the pending message under the lock and wakes the sender.
func (s *Socket) queue(change func(*message)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	change(&s.pending)
	if !s.started {
		s.started = true
		go s.send()
	}
	s.mu.Unlock()
	s.poke()
}

func (s *Socket) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// send is the sender: it takes the pending message each time it is woken
// and sends it, until Close with nothing left to send.
func (s *Socket) send() {
	defer close(s.idle)
	for range s.wake {
		s.mu.Lock()
		m, closed := s.pending, s.closed
		s.pending = message{}
		s.mu.Unlock()
		if !m.empty() {
			if _, err := daemon.SdNotify(false, m.String()); err != nil && s.onError != nil {
				s.onError(err)
			}
		}
		if closed {
			return // nothing can be queued after Close
		}
	}
}
