package wrapper_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/svcwrap/svcwrap/signals"
	"github.com/svcwrap/svcwrap/wrapper"
)

// Each step of a stop says so, at the level an operator looks for: what
// svcwrap does at EVENT, what it could not do to Consul at NOTICE.
func TestStopLog(t *testing.T) {
	lineWith := func(t *testing.T, log *logBuffer, parts ...string) {
		t.Helper()
		for _, line := range strings.Split(log.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return
			}
		}
		t.Errorf("no line with %q in:\n%s", parts, log)
	}

	// A failed mark-critical leaves the entry passing, then critical, until
	// the reaper: as persistent as a failed deregistration, and as loud.
	t.Run("mark-critical-failed-is-notice", func(t *testing.T) {
		log := &logBuffer{}
		cfg := wrapper.Config{Deregister: wrapper.DeregisterOnSuccess, ConsulTimeout: 200 * time.Millisecond, Logger: log.logger()}
		r := startFake(t, cfg, nil)
		r.j.waitFor(t, "register web passing")
		r.reg.set(0, errors.New("403 (Permission denied)"), false, nil)
		r.child.exit(signals.Exit{Code: 3})
		assert.Equal(t, 3, r.wait(t).code)
		lineWith(t, log, "level=NOTICE", "consul: mark critical failed", "service=web", "pid=4242", "403")
		assert.NotContains(t, log.String(), "level=ERROR msg=\"mark service critical")
	})

	// A cancelled context is a stop like SIGTERM, and says so.
	t.Run("context-cancelled-says-stopping", func(t *testing.T) {
		log := &logBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := startFake(t, wrapper.Config{Logger: log.logger()}, diesOn(syscall.SIGTERM), func(r *fakeRun) { r.ctx = ctx })
		r.j.waitFor(t, "register web passing")
		cancel()
		assert.Equal(t, 128+15, r.wait(t).code)
		lineWith(t, log, "msg=stopping", "signal=SIGTERM", "context cancelled", "pid=4242")
	})

	// What is left of the group once its leader has gone is signalled,
	// then killed at the kill timeout: both said.
	t.Run("reap-group-says-what-it-does", func(t *testing.T) {
		log := &logBuffer{}
		r := startFake(t, wrapper.Config{KillTimeout: 30 * time.Millisecond, Logger: log.logger()}, nil,
			func(r *fakeRun) { r.child.lingering = true })
		r.j.waitFor(t, "register web passing")
		r.child.exit(signals.Exit{Code: 0})
		r.wait(t)
		requireBefore(t, r.j, "signal SIGTERM", "kill")
		lineWith(t, log, "signalled what is left of the process group", "signal=SIGTERM", "pid=4242")
		lineWith(t, log, "level=ERROR", "kill timeout: killing what is left of the process group", "timeout=30ms")
	})

	// A stop signal while the stop waits for a hung agent names the signal
	// as every other line does.
	t.Run("hurry-names-the-signal", func(t *testing.T) {
		log := &logBuffer{}
		r := startFake(t, wrapper.Config{Logger: log.logger()}, diesOn(syscall.SIGTERM))
		r.j.waitFor(t, "register web passing")
		r.reg.set(0, nil, true, nil)
		r.sigs <- syscall.SIGTERM
		r.j.waitFor(t, "hang deregister")
		r.sigs <- syscall.SIGINT
		r.wait(t)
		lineWith(t, log, "giving up on Consul", "signal=SIGINT")
		assert.NotContains(t, log.String(), "signal=interrupt")
	})
}
