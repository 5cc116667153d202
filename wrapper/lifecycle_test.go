package wrapper_test

import (
	"context"
	"errors"
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

// The state machine of the stop sequence, driven step by step with a fake
// child and a fake registry. The same behaviour against a real agent and real
// processes is in real_test.go.

func TestLifecycle_ChildExitDeregistersAndPassesCode(t *testing.T) {
	r := startFake(t, wrapper.Config{}, nil)
	r.j.waitFor(t, "register web passing")
	r.child.exit(signals.Exit{Code: 3})
	res := r.wait(t)
	require.NoError(t, res.err)
	assert.Equal(t, 3, res.code)
	requireBefore(t, r.j, "register web passing", "deregister web")
}

func TestLifecycle_StopSequence(t *testing.T) {
	t.Run("deregister-before-signal", func(t *testing.T) {
		r := startFake(t, wrapper.Config{}, diesOn(syscall.SIGTERM))
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		require.NoError(t, res.err)
		assert.Equal(t, 128+15, res.code)
		requireBefore(t, r.j, "deregister web", "signal SIGTERM")
		assert.Equal(t, -1, r.j.index("kill"), "a child that stops at once is not killed")
	})
	t.Run("drain-delays-the-signal", func(t *testing.T) {
		r := startFake(t, wrapper.Config{Drain: 50 * time.Millisecond}, diesOn(syscall.SIGTERM))
		r.j.waitFor(t, "register web passing")
		start := time.Now()
		r.sigs <- syscall.SIGTERM
		r.j.waitFor(t, "signal SIGTERM")
		assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "the stop signal came before the drain delay")
		requireBefore(t, r.j, "deregister web", "signal SIGTERM")
		r.wait(t)
	})
	t.Run("stop-signal-mapped", func(t *testing.T) {
		r := startFake(t, wrapper.Config{StopSignal: syscall.SIGQUIT}, diesOn(syscall.SIGQUIT))
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		assert.Equal(t, 128+int(syscall.SIGQUIT), res.code)
		assert.Equal(t, -1, r.j.index("signal SIGTERM"), "SIGTERM must be replaced by SIGQUIT")
	})
	t.Run("kill-timeout", func(t *testing.T) {
		r := startFake(t, wrapper.Config{KillTimeout: 20 * time.Millisecond}, nil) // ignores SIGTERM
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		assert.Equal(t, 137, res.code)
		requireBefore(t, r.j, "signal SIGTERM", "kill")
	})
	t.Run("second-signal-escalates", func(t *testing.T) {
		r := startFake(t, wrapper.Config{KillTimeout: time.Hour}, nil)
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGINT
		r.j.waitFor(t, "signal SIGINT")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		assert.Equal(t, 137, res.code)
		requireBefore(t, r.j, "signal SIGINT", "kill")
	})
	t.Run("second-signal-during-drain", func(t *testing.T) {
		r := startFake(t, wrapper.Config{Drain: time.Hour}, nil)
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGTERM
		r.j.waitFor(t, "deregister web")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		assert.Equal(t, 137, res.code)
	})
}

func TestLifecycle_ForwardsOtherSignals(t *testing.T) {
	r := startFake(t, wrapper.Config{}, nil)
	r.j.waitFor(t, "register web passing")
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH} {
		r.sigs <- sig
		r.j.waitFor(t, "signal "+signals.Name(sig))
	}
	assert.Equal(t, -1, r.j.index("deregister web"), "a forwarded signal must not stop the service")
}

func TestLifecycle_DeregisterPolicies(t *testing.T) {
	cases := []struct {
		name      string
		policy    wrapper.Policy
		exit      signals.Exit
		wantDereg bool
	}{
		{"on-exit/failure", wrapper.DeregisterOnExit, signals.Exit{Code: 1}, true},
		{"on-success/success", wrapper.DeregisterOnSuccess, signals.Exit{Code: 0}, true},
		{"on-success/failure", wrapper.DeregisterOnSuccess, signals.Exit{Code: 1}, false},
		{"on-success/killed", wrapper.DeregisterOnSuccess, signals.Exit{Code: 137, Signal: syscall.SIGKILL}, false},
		{"never/success", wrapper.DeregisterNever, signals.Exit{Code: 0}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := startFake(t, wrapper.Config{Deregister: tc.policy}, nil)
			r.j.waitFor(t, "register web passing")
			r.child.exit(tc.exit)
			res := r.wait(t)
			assert.Equal(t, tc.exit.Code, res.code)
			if tc.wantDereg {
				assert.GreaterOrEqual(t, r.j.index("deregister web"), 0, "%q", r.j.all())
			} else {
				assert.Equal(t, -1, r.j.index("deregister web"), "%q", r.j.all())
				assert.GreaterOrEqual(t, r.j.index("status web critical"), 0, "a kept service must turn critical: %q", r.j.all())
			}
		})
	}
	t.Run("on-success/stopped-on-request", func(t *testing.T) {
		r := startFake(t, wrapper.Config{Deregister: wrapper.DeregisterOnSuccess}, diesOn(syscall.SIGTERM))
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		assert.Equal(t, 143, res.code)
		// Critical first, so traffic stops before the signal; gone once the
		// child ended as asked.
		requireBefore(t, r.j, "status web critical", "signal SIGTERM")
		requireBefore(t, r.j, "signal SIGTERM", "deregister web")
	})
}

func TestLifecycle_IDHeldByLiveWrapper(t *testing.T) {
	// Another svcwrap on another host whose check is alive holds the ID.
	r := startFake(t, wrapper.Config{}, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.holder = &consulclient.Holder{
			Meta:        map[string]string{"svcwrap_instance": "otherhost/77/12345"},
			CheckStatus: "passing",
		}
	})
	res := r.wait(t)
	require.Error(t, res.err)
	assert.True(t, errors.Is(res.err, wrapper.ErrIDInUse), "%v", res.err)
	assert.Equal(t, wrapper.ExitUsage, res.code)
	for _, e := range r.j.all() {
		assert.NotContains(t, e, "register web", "the other holder's registration must be left alone")
		assert.NotContains(t, e, "deregister web")
	}
	assert.GreaterOrEqual(t, r.j.index("signal SIGTERM"), 0, "the child must be stopped")
}

func TestLifecycle_StaleHolderTakenOver(t *testing.T) {
	// Its svcwrap is gone: the agent saw the TTL expire.
	r := startFake(t, wrapper.Config{}, nil, func(r *fakeRun) {
		r.reg.holder = &consulclient.Holder{
			Meta:        map[string]string{"svcwrap_instance": "otherhost/77/12345"},
			CheckStatus: "critical",
			CheckOutput: "TTL expired",
		}
	})
	r.j.waitFor(t, "register web passing")
}

func TestLifecycle_AgentDownAtStart(t *testing.T) {
	r := startFake(t, wrapper.Config{}, nil, func(r *fakeRun) {
		r.reg.fail = errors.New("connection refused")
	})
	// The child runs regardless; once the agent answers, the service appears.
	time.AfterFunc(50*time.Millisecond, func() {
		r.reg.mu.Lock()
		r.reg.fail = nil
		r.reg.mu.Unlock()
	})
	r.j.waitFor(t, "register web passing")
}

func TestLifecycle_BadConfigStartsNothing(t *testing.T) {
	started := false
	start := func(signals.Options) (wrapper.Process, error) {
		started = true
		return nil, errors.New("must not start")
	}
	cases := map[string]wrapper.Config{
		"no-name":             {Command: []string{"x"}},
		"no-command":          {Name: "web"},
		"heartbeat-ge-ttl":    {Name: "web", Command: []string{"x"}, TTL: time.Second, Heartbeat: time.Second},
		"negative-ttl":        {Name: "web", Command: []string{"x"}, TTL: -time.Second},
		"empty-tag":           {Name: "web", Command: []string{"x"}, Tags: []string{""}},
		"port-out-of-range":   {Name: "web", Command: []string{"x"}, Port: 70000},
		"deregister-after-1s": {Name: "web", Command: []string{"x"}, DeregisterAfter: time.Second},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			j := newJournal()
			cfg.Start = start
			code, err := wrapper.Run(t.Context(), cfg, &fakeRegistry{j: j})
			require.Error(t, err)
			assert.ErrorIs(t, err, wrapper.ErrUsage)
			assert.Equal(t, wrapper.ExitUsage, code)
			assert.False(t, started)
			assert.Empty(t, j.all())
		})
	}
}

// Signals that arrive before the child has started, or while svcwrap is still
// registering, are queued on the channel main fills from the first moment,
// and acted on in order once the loop runs.
func TestLifecycle_EarlySignalsNotLost(t *testing.T) {
	r := startFake(t, wrapper.Config{}, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.fail = errors.New("agent not answering yet")
		r.sigs <- syscall.SIGHUP
		r.sigs <- syscall.SIGTERM
	})
	res := r.wait(t)
	assert.Equal(t, 143, res.code)
	requireBefore(t, r.j, "signal SIGHUP", "signal SIGTERM")
}

// A group member that outlives the leader is killed when the stop's kill
// timeout runs out: it gets no second stop signal and no fresh timeout.
func TestLifecycle_LingeringGroupMember(t *testing.T) {
	t.Run("after-stop", func(t *testing.T) {
		r := startFake(t, wrapper.Config{KillTimeout: 50 * time.Millisecond}, diesOn(syscall.SIGTERM), func(r *fakeRun) {
			r.child.lingering = true
		})
		r.j.waitFor(t, "register web passing")
		r.sigs <- syscall.SIGTERM
		res := r.wait(t)
		assert.Equal(t, 143, res.code, "the leader's status, not the member's")
		requireBefore(t, r.j, "signal SIGTERM", "kill")
		n := 0
		for _, e := range r.j.all() {
			if e == "signal SIGTERM" {
				n++
			}
		}
		assert.Equal(t, 1, n, "one stop signal: %q", r.j.all())
	})
	t.Run("leader-exits-by-itself", func(t *testing.T) {
		r := startFake(t, wrapper.Config{KillTimeout: 50 * time.Millisecond}, nil, func(r *fakeRun) {
			r.child.lingering = true
		})
		r.j.waitFor(t, "register web passing")
		r.child.exit(signals.Exit{Code: 0})
		res := r.wait(t)
		assert.Equal(t, 0, res.code)
		requireBefore(t, r.j, "deregister web", "signal SIGTERM")
		requireBefore(t, r.j, "signal SIGTERM", "kill")
	})
}

// While the agent refuses the deregistration, svcwrap retries within the
// Consul timeout before the child hears the stop; a second stop signal in
// that time kills at once, and the end does not wait out the timeout again.
func TestLifecycle_SecondStopWhileAgentRefuses(t *testing.T) {
	r := startFake(t, wrapper.Config{ConsulTimeout: time.Minute}, nil)
	r.j.waitFor(t, "register web passing")
	r.reg.mu.Lock()
	r.reg.fail = fmt.Errorf("deregister: %w", consulclient.ErrRefused)
	r.reg.mu.Unlock()
	r.sigs <- syscall.SIGTERM
	r.sigs <- syscall.SIGUSR1 // forwarded meanwhile
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+int(syscall.SIGKILL), res.code)
	requireBefore(t, r.j, "signal SIGUSR1", "kill")
	assert.Equal(t, -1, r.j.index("signal SIGTERM"), "killed, not asked: %q", r.j.all())
}

// The signals main leaves for later (Config.CatchLater) are caught once the
// first registration has been answered, not on the way to it, and before
// READY: whoever waits for READY may send any signal.
func TestCatchLater_OnceTheFirstRegistrationIsAnswered(t *testing.T) {
	wrapper.SetCatchLaterAfter(t, time.Hour)
	release := make(chan struct{})
	n := &journalNotifier{}
	cfg := wrapper.Config{Notify: n, CatchLater: func(context.Context) { n.j.add("catch later") }}
	r := startFake(t, cfg, nil, n.prep, func(r *fakeRun) { r.reg.slowRegister = release })
	r.j.waitFor(t, "register-sent web")
	close(release)
	r.j.waitFor(t, "catch later")
	r.j.waitMatch(t, "READY", hasPrefix("notify READY"))
	requireBefore(t, r.j, "register web passing", "catch later")
	assert.Less(t, r.j.index("catch later"), r.j.indexMatch(hasPrefix("notify READY")), "caught before READY: %q", r.j.all())
	assert.Equal(t, 1, r.j.countMatch(is("catch later")), "caught once")
}

// An agent that hangs does not keep them waiting for its timeout.
func TestCatchLater_AtTheLatestAfterItsBound(t *testing.T) {
	wrapper.SetCatchLaterAfter(t, 20*time.Millisecond)
	caught := make(chan struct{}, 1)
	cfg := wrapper.Config{ConsulTimeout: time.Hour, CatchLater: func(context.Context) { caught <- struct{}{} }}
	r := startFake(t, cfg, nil, func(r *fakeRun) { r.reg.set(0, nil, true, nil) })
	select {
	case <-caught:
	case <-time.After(10 * time.Second):
		t.Fatalf("not caught while the agent hangs: %q", r.j.all())
	}
	assert.Equal(t, -1, r.j.indexMatch(hasPrefix("register web")), "nothing was registered: the agent hangs")
	r.reg.set(0, nil, false, nil) // the stop at cleanup gets its answers
}
