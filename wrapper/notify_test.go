package wrapper_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/signals"
	"github.com/svcwrap/svcwrap/wrapper"
)

// journalNotifier records what the service manager is told in the run's
// journal, in order with the calls to Consul and the child. Its journal is
// set by prep, before Run starts.
type journalNotifier struct{ j *journal }

func (n *journalNotifier) Ready(s string)    { n.j.add("notify READY %s", s) }
func (n *journalNotifier) Status(s string)   { n.j.add("notify STATUS %s", s) }
func (n *journalNotifier) Stopping(s string) { n.j.add("notify STOPPING") }
func (n *journalNotifier) Watchdog()         { n.j.add("notify WATCHDOG") }

func (n *journalNotifier) prep(r *fakeRun) { n.j = r.j }

// firstWith is the index of the first entry starting with prefix, or -1.
func firstWith(j *journal, prefix string) int {
	for i, e := range j.all() {
		if strings.HasPrefix(e, prefix) {
			return i
		}
	}
	return -1
}

func waitForPrefix(t *testing.T, j *journal, prefix string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for firstWith(j, prefix) < 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %q", prefix, j.all())
		}
		select {
		case <-j.changed:
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func count(j *journal, entry string) int {
	n := 0
	for _, e := range j.all() {
		if e == entry {
			n++
		}
	}
	return n
}

// READY comes after Consul accepted the passing status, STOPPING before the
// stop turns traffic away.
func TestNotify_ReadyAfterPassingStoppingFirst(t *testing.T) {
	n := &journalNotifier{}
	r := startFake(t, wrapper.Config{Notify: n}, diesOn(syscall.SIGTERM), n.prep)
	waitForPrefix(t, r.j, "notify READY ")
	requireBefore(t, r.j, "register web passing", r.j.all()[firstWith(r.j, "notify READY ")])
	assert.Contains(t, r.j.all()[firstWith(r.j, "notify READY ")], "passing in Consul (agent agent0)")

	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	require.NoError(t, res.err)
	requireBefore(t, r.j, "notify STOPPING", "deregister web")
	requireBefore(t, r.j, "deregister web", "signal SIGTERM")
}

// While Consul fails, no READY: a STATUS line says so; once it works, READY.
func TestNotify_NoReadyWhileConsulFails(t *testing.T) {
	n := &journalNotifier{}
	fail := fmt.Errorf("agent0: %w", consulclient.ErrUnreachable)
	r := startFake(t, wrapper.Config{Notify: n, TTL: 300 * time.Millisecond, Heartbeat: 20 * time.Millisecond}, nil,
		n.prep, func(r *fakeRun) { r.reg.set(0, fail, false, nil) })
	waitForPrefix(t, r.j, "notify STATUS Consul failing for ")
	assert.Equal(t, -1, firstWith(r.j, "notify READY "), "READY while Consul has nothing: %q", r.j.all())
	r.reg.set(0, nil, false, nil)
	waitForPrefix(t, r.j, "notify READY ")
	requireBefore(t, r.j, "register web passing", r.j.all()[firstWith(r.j, "notify READY ")])
}

// A child that is not ready: Consul has it critical, and the manager gets
// a STATUS line, not READY.
func TestNotify_CriticalIsStatusNotReady(t *testing.T) {
	n := &journalNotifier{}
	r := startFake(t, wrapper.Config{Notify: n, Port: 1}, nil, n.prep) // nothing listens on port 1 for the fake's pid
	waitForPrefix(t, r.j, "notify STATUS critical in Consul")
	assert.Equal(t, -1, firstWith(r.j, "notify READY "))
	r.child.exit(signals.Exit{Code: 0})
	r.wait(t)
	assert.Positive(t, count(r.j, "notify STOPPING"), "the child's own end starts the stop too")
}

// Keep-alives while the child lives, none after STOPPING.
func TestNotify_Watchdog(t *testing.T) {
	n := &journalNotifier{}
	r := startFake(t, wrapper.Config{Notify: n, Watchdog: 20 * time.Millisecond}, nil, n.prep)
	deadline := time.Now().Add(10 * time.Second)
	for count(r.j, "notify WATCHDOG") < 3 {
		require.True(t, time.Now().Before(deadline), "keep-alives: %q", r.j.all())
		select {
		case <-r.j.changed:
		case <-time.After(5 * time.Millisecond):
		}
	}
	r.child.exit(signals.Exit{Code: 0})
	r.wait(t)
	all := r.j.all()
	stopping := firstWith(r.j, "notify STOPPING")
	require.GreaterOrEqual(t, stopping, 0)
	assert.NotContains(t, all[stopping:], "notify WATCHDOG")
}
