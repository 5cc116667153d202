package wrapper_test

import (
	"fmt"
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

// READY comes after Consul accepted the passing status, STOPPING before the
// stop turns traffic away.
func TestNotify_ReadyAfterPassingStoppingFirst(t *testing.T) {
	n := &journalNotifier{}
	r := startFake(t, wrapper.Config{Notify: n}, diesOn(syscall.SIGTERM), n.prep)
	ready := hasPrefix("notify READY ")
	r.j.waitMatch(t, "READY", ready)
	requireBefore(t, r.j, "register web passing", r.j.all()[r.j.indexMatch(ready)])
	assert.Contains(t, r.j.all()[r.j.indexMatch(ready)], "passing in Consul (agent agent0)")

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
	r.j.waitMatch(t, "STATUS Consul failing", hasPrefix("notify STATUS Consul failing for "))
	ready := hasPrefix("notify READY ")
	assert.Equal(t, -1, r.j.indexMatch(ready), "READY while Consul has nothing: %q", r.j.all())
	r.reg.set(0, nil, false, nil)
	r.j.waitMatch(t, "READY", ready)
	requireBefore(t, r.j, "register web passing", r.j.all()[r.j.indexMatch(ready)])
}

// A child that is not ready: Consul has it critical, and the manager gets
// a STATUS line, not READY.
func TestNotify_CriticalIsStatusNotReady(t *testing.T) {
	n := &journalNotifier{}
	r := startFake(t, wrapper.Config{Notify: n, Port: 1}, nil, n.prep) // nothing listens on port 1 for the fake's pid
	r.j.waitMatch(t, "STATUS critical", hasPrefix("notify STATUS critical in Consul"))
	assert.Equal(t, -1, r.j.indexMatch(hasPrefix("notify READY ")))
	r.child.exit(signals.Exit{Code: 0})
	r.wait(t)
	assert.Positive(t, r.j.countMatch(is("notify STOPPING")), "the child's own end starts the stop too")
}

// Keep-alives while the child lives, none after STOPPING.
func TestNotify_Watchdog(t *testing.T) {
	n := &journalNotifier{}
	r := startFake(t, wrapper.Config{Notify: n, Watchdog: 20 * time.Millisecond}, nil, n.prep)
	r.j.waitUntil(t, func() bool { return r.j.countMatch(is("notify WATCHDOG")) >= 3 },
		func() string { return fmt.Sprintf("keep-alives: %q", r.j.all()) })
	r.child.exit(signals.Exit{Code: 0})
	r.wait(t)
	all := r.j.all()
	stopping := r.j.indexMatch(hasPrefix("notify STOPPING"))
	require.GreaterOrEqual(t, stopping, 0)
	assert.NotContains(t, all[stopping:], "notify WATCHDOG")
}
