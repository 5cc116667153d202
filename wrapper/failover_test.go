package wrapper_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/signals"
	"github.com/svcwrap/svcwrap/wrapper"
)

// The bookkeeping of several agents, driven with the fake registry: which
// agent the registration is on, which may hold a copy, and what is said
// about it. The same against a real cluster is in cluster_e2e_test.go.

func twoAgents(r *fakeRun) { r.reg.agents = 1 }

// fast is a configuration whose heartbeat and retries come quickly.
func fast() wrapper.Config {
	return wrapper.Config{TTL: 300 * time.Millisecond, Heartbeat: 20 * time.Millisecond}
}

func unreachable(i int) error {
	return fmt.Errorf("heartbeat through agent%d: %w: connection refused", i, consulclient.ErrUnreachable)
}

// otherLive is the instance mark of another svcwrap that is alive on this
// host: PID 1 is always alive, and it is not this process.
func otherLive(t *testing.T) *consulclient.Holder {
	host, err := os.Hostname()
	require.NoError(t, err)
	b, err := os.ReadFile("/proc/1/stat")
	require.NoError(t, err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return &consulclient.Holder{Meta: map[string]string{wrapper.MetaInstance: fmt.Sprintf("%s/1/%s", host, fields[19])}, CheckStatus: "passing"}
}

func ours() *consulclient.Holder {
	return &consulclient.Holder{Meta: map[string]string{wrapper.MetaInstance: wrapper.Self()}, CheckStatus: "passing"}
}

// When the agent holding the registration stops answering, svcwrap looks up
// the ID on the next agent, registers there with the first agent's node
// address, and heartbeats only there; the copy it left is removed once the
// first agent answers again, and at stop only the agent it is on is asked.
func TestFailover_MovesLooksFirstAndSweeps(t *testing.T) {
	log := &logBuffer{}
	cfg := fast()
	cfg.Logger = log.logger()
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), twoAgents)
	r.j.waitFor(t, "register web passing")

	r.reg.set(0, unreachable(0), false, nil)
	guest := wrapper.Guest("web")
	r.j.waitFor(t, "@1 register "+guest+" passing")
	r.j.waitFor(t, "@1 status "+guest+" passing")
	assert.Equal(t, "web", r.reg.registered(1).Name)
	assert.Equal(t, "10.0.0.1", r.reg.registered(1).Address, "the first agent's node address, not agent 1's")
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("deregister")), "nothing removed from the agent that does not answer")

	// Agent 0 is back, with the copy it restored from its data dir.
	r.reg.set(0, nil, false, ours())
	r.j.waitFor(t, "deregister web")
	assert.Equal(t, 1, r.j.countMatch(hasPrefix("@1 register")), "no move back: %q", r.j.all())

	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+15, res.code)
	requireBefore(t, r.j, "@1 deregister "+guest, "signal SIGTERM")
	assert.Equal(t, 1, strings.Count(log.String(), "level=NOTICE msg=\"consul: moved to another agent\""), log.String())
	assert.Equal(t, 1, strings.Count(log.String(), "removed the copy"), log.String())
}

// A heartbeat never lands on a check that is not this svcwrap's own: the next
// agent holds the ID for another live svcwrap, so it is left alone, said
// once, and the child keeps running unregistered until an agent is free.
func TestFailover_LeavesAnotherInstanceAlone(t *testing.T) {
	log := &logBuffer{}
	cfg := fast()
	cfg.Logger = log.logger()
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), twoAgents)
	r.j.waitFor(t, "register web passing")

	r.reg.set(1, nil, false, otherLive(t))
	r.reg.set(0, unreachable(0), false, nil)
	// Several retries go by.
	r.j.waitUntil(t, func() bool { return strings.Count(log.String(), "level=DEBUG") >= 3 }, log.String)
	for _, e := range r.j.all() {
		assert.False(t, strings.HasPrefix(e, "@1 ") && !strings.HasPrefix(e, "@1 hang"), "wrote to agent 1: %q", e)
	}
	assert.Equal(t, 1, strings.Count(log.String(), "leaving it alone"), log.String())

	// The first agent answers again: the heartbeats go on there.
	beats := r.j.countMatch(hasPrefix("status web"))
	r.reg.set(0, nil, false, nil)
	r.j.waitUntil(t, func() bool { return r.j.countMatch(hasPrefix("status web")) > beats+2 }, func() string { return fmt.Sprint(r.j.all()) })

	// Its child's exit removes only its own entry.
	r.child.exit(signals.Exit{Code: 0})
	r.wait(t)
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("@1 deregister")), "%q", r.j.all())
}

// The Consul part of a stop has one --consul-timeout: against an agent that
// hangs, the child hears the stop signal once one attempt has used that
// budget up. The request goes on being waited for while the child stops
// (the agent may come back and answer it), and the end still comes at the
// kill timeout.
func TestStop_OneBudgetForConsul(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 100 * time.Millisecond, KillTimeout: 300 * time.Millisecond}
	r := startFake(t, cfg, nil) // the child ignores SIGTERM
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, nil, true, nil)
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+9, res.code)
	requireBefore(t, r.j, "hang deregister", "signal SIGTERM")
	requireBefore(t, r.j, "signal SIGTERM", "kill")
	assert.Equal(t, 1, r.j.countMatch(hasPrefix("deregister-attempt")), "one attempt, waited for: %q", r.j.all())
}

// A second stop signal while the deregistration hangs cancels it and kills
// the group at once.
func TestStop_SecondSignalCancelsHungRequest(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: time.Hour}
	r := startFake(t, cfg, nil)
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, nil, true, nil)
	r.sigs <- syscall.SIGTERM
	r.j.waitFor(t, "hang deregister")
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+9, res.code)
	assert.Equal(t, -1, r.j.index("signal SIGTERM"), "killed, not asked: %q", r.j.all())
}

// A failure that retrying cannot heal is said once at the default
// verbosity, however many retries follow, and its end once.
func TestFailure_SaidOnceAndHealed(t *testing.T) {
	log := &logBuffer{}
	cfg := fast()
	cfg.Logger = log.logger()
	r := startFake(t, cfg, nil, func(r *fakeRun) {
		r.reg.fail = fmt.Errorf("register through agent0: %w: Unexpected response code: 403 (ACL not found)", consulclient.ErrRejected)
	})
	r.j.waitUntil(t, func() bool { return strings.Count(log.String(), "level=DEBUG msg=consul") >= 3 }, log.String)
	assert.Equal(t, 1, strings.Count(log.String(), "level=NOTICE"), log.String())
	assert.Contains(t, log.String(), "consul: failing")
	assert.Contains(t, log.String(), "agent0")

	r.reg.set(0, nil, false, nil)
	r.j.waitFor(t, "register web passing")
	r.j.waitUntil(t, func() bool { return strings.Contains(log.String(), "consul: works again") }, log.String)
	assert.Equal(t, 2, strings.Count(log.String(), "level=NOTICE"), log.String())
}

// A failure that may heal by itself (the agent is away) is said only once it
// has lasted a few heartbeats.
func TestFailure_TransientNotSaidAtOnce(t *testing.T) {
	log := &logBuffer{}
	cfg := wrapper.Config{TTL: time.Hour, Heartbeat: time.Minute}
	cfg.Logger = log.logger()
	r := startFake(t, cfg, nil, func(r *fakeRun) { r.reg.fail = unreachable(0) })
	r.j.waitUntil(t, func() bool { return strings.Count(log.String(), "level=DEBUG msg=consul") >= 2 }, log.String)
	assert.NotContains(t, log.String(), "level=NOTICE")
	r.reg.set(0, nil, false, nil)
	r.j.waitFor(t, "register web passing")
}

// logBuffer is a slog text handler's output, safe for the lifecycle's
// goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.LevelKey && a.Value.Any() == wrapper.LevelNotice {
				return slog.String(slog.LevelKey, "NOTICE")
			}
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// With one agent there is nowhere to move: while it is away svcwrap retries
// it, and when it comes back (with the copy it restored) the heartbeats go
// on there; nothing is removed, so nothing flaps.
func TestFailover_OneAgentIsRetriedNotSwept(t *testing.T) {
	log := &logBuffer{}
	cfg := fast()
	cfg.Logger = log.logger()
	r := startFake(t, cfg, nil)
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, unreachable(0), false, nil)
	r.j.waitUntil(t, func() bool { return strings.Count(log.String(), "level=DEBUG msg=consul") >= 3 }, log.String)
	beats := r.j.countMatch(hasPrefix("status web"))
	r.reg.set(0, nil, false, ours())
	r.j.waitUntil(t, func() bool { return r.j.countMatch(hasPrefix("status web")) > beats+2 }, func() string { return fmt.Sprint(r.j.all()) })
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("deregister")), "%q", r.j.all())
	assert.Equal(t, 1, r.j.countMatch(hasPrefix("register web")), "%q", r.j.all())
}

// The stop's budget is Consul's time, not the stop's: under on-success, the
// check is marked critical at SIGTERM and the service deregistered once the
// child has ended well, however long its drain and stop took.
func TestStop_BudgetCountsConsulTimeOnly(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 100 * time.Millisecond, Drain: 300 * time.Millisecond, Deregister: wrapper.DeregisterOnSuccess}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM))
	r.j.waitFor(t, "register web passing")
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+15, res.code)
	requireBefore(t, r.j, "status web critical", "signal SIGTERM")
	requireBefore(t, r.j, "signal SIGTERM", "deregister web")
}

// A deregistration the agent refused, or took and had not answered, when
// the stop's Consul budget ran out does not hold the child's stop: the stop
// signal goes out, and the deregistration goes on while the child stops, so
// the entry goes once the agent admits or answers it (a host's wrappers
// stopped together: the agent refuses the connections beyond its per-IP
// limit and answers the others one catalog sync at a time). A refused one
// is made again; one the agent took is waited for, not hung up on and sent
// again: the agent applies it anyway, and a repeat would queue the same
// work twice.
func TestStop_DeregistrationNotDoneGoesOnWhileTheChildStops(t *testing.T) {
	for name, tc := range map[string]struct {
		fault    func(r *fakeRegistry)
		attempts func(t *testing.T, r *fakeRun) // after the stop signal, before the agent answers
	}{
		"refused": {
			fault: func(r *fakeRegistry) { r.set(0, fmt.Errorf("deregister: %w", consulclient.ErrRefused), false, nil) },
			attempts: func(t *testing.T, r *fakeRun) {
				attempts := r.j.countMatch(hasPrefix("deregister-attempt"))
				r.j.waitUntil(t, func() bool { return r.j.countMatch(hasPrefix("deregister-attempt")) > attempts }, func() string { return fmt.Sprint(r.j.all()) })
			},
		},
		"unanswered": {
			fault: func(r *fakeRegistry) { r.set(0, nil, true, nil) },
			attempts: func(t *testing.T, r *fakeRun) {
				require.Equal(t, 1, r.j.countMatch(hasPrefix("deregister-attempt")), "%q", r.j.all())
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			log := &logBuffer{}
			cfg := wrapper.Config{ConsulTimeout: 100 * time.Millisecond, KillTimeout: time.Minute, Logger: log.logger()}
			r := startFake(t, cfg, diesOn(syscall.SIGTERM))
			r.j.waitFor(t, "register web passing")
			tc.fault(r.reg)
			r.sigs <- syscall.SIGTERM
			r.j.waitFor(t, "signal SIGTERM")
			tc.attempts(t, r)
			r.j.waitUntil(t, func() bool { return strings.Contains(log.String(), "command ended") }, log.String)
			r.reg.set(0, nil, false, nil) // the agent admits or answers it now
			res := r.wait(t)
			assert.Equal(t, 128+15, res.code)
			requireBefore(t, r.j, "signal SIGTERM", "deregister web")
			if name == "unanswered" {
				assert.Equal(t, 1, r.j.countMatch(hasPrefix("deregister-attempt")), "the one request the agent took was waited for: %q", r.j.all())
			}
			assert.Contains(t, log.String(), "late=true", log.String())
		})
	}
}

// A stop that lasts longer than --kill-timeout because the deregistration
// went on while the child stopped does not report the (long ended) checks
// as still running. The request the agent never answers is waited for until
// the stop's end, not sent again.
func TestStop_LongLateDeregistrationLeavesNoCheckWarning(t *testing.T) {
	log := &logBuffer{}
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond, KillTimeout: 100 * time.Millisecond, Logger: log.logger()}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM))
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, nil, true, nil)
	r.sigs <- syscall.SIGTERM
	res := r.wait(t) // at --consul-timeout + --kill-timeout: the wait's end
	assert.Equal(t, 128+15, res.code)
	assert.Equal(t, 1, r.j.countMatch(hasPrefix("deregister-attempt")), "waited for, not sent again: %q", r.j.all())
	assert.Contains(t, log.String(), "deregister failed", log.String())
	assert.NotContains(t, log.String(), "checks still running", log.String())
}

// When the child has ended and only the deregistration under way keeps
// svcwrap (a hung agent, a long --kill-timeout), a second stop signal ends
// it at once.
func TestStop_SecondSignalAfterTheChildEndedEndsLateRetries(t *testing.T) {
	log := &logBuffer{}
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond, KillTimeout: time.Hour, Logger: log.logger()}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM))
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, nil, true, nil)
	r.sigs <- syscall.SIGTERM
	r.j.waitFor(t, "signal SIGTERM") // the child dies of it; the wait goes on
	r.j.waitUntil(t, func() bool { return strings.Contains(log.String(), "command ended") }, log.String)
	r.sigs <- syscall.SIGTERM
	res := r.wait(t) // within the test's wait, not the hour
	assert.Equal(t, 128+15, res.code)
	assert.Equal(t, -1, r.j.index("deregister web"), "%q", r.j.all())
}

// An agent that is not there (nothing listens) is not waited for: the
// deregistration is tried once, and the stop ends with the child.
func TestStop_DeregistrationFromAGoneAgentNotRetried(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: time.Minute, KillTimeout: time.Minute}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM))
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, unreachable(0), false, nil)
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+15, res.code)
	assert.Equal(t, 1, r.j.countMatch(hasPrefix("deregister-attempt")), "%q", r.j.all())
}

// A stop that waited for the first registration until the registration's
// timeout (the agent applied it, the answer never came) does not know
// whether the service is registered: it looks, and removes it. With budget
// left, before the child hears the stop signal; once the wait has used the
// stop's --consul-timeout, while the child stops, and before svcwrap exits.
func TestStop_UnansweredRegistrationRemoved(t *testing.T) {
	for name, tc := range map[string]struct {
		consulTimeout, hangFor time.Duration // hangFor 0: until the registration's own timeout
		beforeTheSignal        bool
	}{
		"within the budget":  {time.Minute, 50 * time.Millisecond, true},
		"the budget used up": {100 * time.Millisecond, 0, false},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := wrapper.Config{ConsulTimeout: tc.consulTimeout, KillTimeout: time.Minute}
			r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
				r.reg.hangOp, r.reg.hangFor = "register", tc.hangFor
				r.reg.set(0, nil, false, ours())
			})
			r.j.waitFor(t, "unanswered register")
			r.sigs <- syscall.SIGTERM
			res := r.wait(t)
			assert.Equal(t, 128+15, res.code)
			requireBefore(t, r.j, "unanswered register", "deregister web")
			if tc.beforeTheSignal {
				requireBefore(t, r.j, "deregister web", "signal SIGTERM")
			}
		})
	}
}

// A registration the agent applied and did not answer in time is the
// registration: the next attempt looks, finds it, and keeps it with a TTL
// update. Nothing is removed and nothing registered again, which at a
// starved agent would be a moment without the service, and a registration
// more for it to apply.
func TestRegistration_UnansweredButAppliedIsKept(t *testing.T) {
	log := &logBuffer{}
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond, Logger: log.logger()}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.hangOp, r.reg.traceHolder = "register", true
		r.reg.set(0, nil, false, ours())
	})
	keptAfterALookUp(t, r, "a check of the ID may be another's")
	found := regexp.MustCompile(`msg=registered .*agent=agent0 status=passing found="the agent had applied the registration it did not answer in time"`)
	r.j.waitUntil(t, func() bool { return found.MatchString(log.String()) }, log.String)

	r.sigs <- syscall.SIGTERM
	assert.Equal(t, 128+15, r.wait(t).code)
	requireBefore(t, r.j, "deregister web", "signal SIGTERM")
}

// keptAfterALookUp waits until the registration left unanswered is kept
// with a TTL update, and checks that a look-up came before it (why says
// why it must), that it was registered once, and that nothing was removed.
func keptAfterALookUp(t *testing.T, r *fakeRun, why string) {
	t.Helper()
	r.j.waitFor(t, "unanswered register")
	r.j.waitFor(t, "status web passing")
	all := r.j.all()
	assert.Contains(t, all[r.j.index("unanswered register"):r.j.index("status web passing")], "holder",
		"a look-up before the TTL update: "+why)
	assert.Equal(t, 1, r.j.countMatch(hasPrefix("register web")), "registered once: %q", r.j.all())
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("deregister")), "nothing removed: %q", r.j.all())
}

// The same when the registration was to replace a dead svcwrap's entry,
// which the agent's check may still have been: the look-up finds its own.
func TestRegistration_UnansweredTakeoverAppliedIsKept(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.hangOp, r.reg.heldAfter, r.reg.traceHolder = "register", ours(), true
		r.reg.set(0, nil, false, deadOther())
	})
	keptAfterALookUp(t, r, "a check of the ID may be the dead svcwrap's")
	r.sigs <- syscall.SIGTERM
	assert.Equal(t, 128+15, r.wait(t).code)
}

// Another live svcwrap of the same ID (where the host lock does not reach)
// registered while the answer was awaited: the look-up finds it, and
// svcwrap stops as at any start with its ID held, its entry left alone.
// No TTL update makes the other's check pass for this one.
func TestRegistration_UnansweredOvertakenByAnotherIsLeftAlone(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.hangOp, r.reg.heldAfter = "register", otherLive(t)
	})
	res := r.wait(t)
	assert.ErrorIs(t, res.err, wrapper.ErrIDInUse)
	assert.Equal(t, wrapper.ExitUsage, res.code)
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("status web")), "no TTL update on the other's check: %q", r.j.all())
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("deregister web")), "the other's entry left alone: %q", r.j.all())
}

// A critical status is registered again, not kept with a TTL update:
// Consul's reaper counts from the check's first critical moment, which
// only a registration moves, and svcwrap's reaper margin counts from its
// last registration.
func TestRegistration_UnansweredWhileCriticalIsSentAgain(t *testing.T) {
	j := newJournal()
	fc := newFakeCheck(j) // its first run hangs: registered critical at the first result's deadline
	cfg := wrapper.WithCheckers(wrapper.Config{CheckInterval: time.Hour, ConsulTimeout: 50 * time.Millisecond}, fc)
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.j, r.reg.j, r.child.j = j, j, j
		r.reg.hangOp = "register"
		r.reg.set(0, nil, false, ours())
	})
	r.j.waitFor(t, "unanswered register")
	r.j.waitUntil(t, func() bool { return r.j.countMatch(is("register web critical")) >= 2 }, func() string { return fmt.Sprint(r.j.all()) })
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("status web")), "no TTL update for a critical status: %q", r.j.all())
	r.sigs <- syscall.SIGTERM
	r.wait(t)
}

// A registration that was not sent (the gate's wait ran out) after one
// left unanswered does not make svcwrap forget the first, which the agent
// may apply late: a stop then looks for it and removes it.
func TestRegistration_UnansweredThenNotSentIsStillLookedFor(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond}
	notSent := wrapper.NotSent()
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.hangOp, r.reg.afterHang = "register", []error{notSent}
	})
	r.j.waitFor(t, "unanswered register")
	r.j.waitFor(t, "register refused web")
	r.reg.set(0, nil, false, ours()) // the agent applies the first one late
	r.sigs <- syscall.SIGTERM
	assert.Equal(t, 128+15, r.wait(t).code)
	requireBefore(t, r.j, "deregister web", "signal SIGTERM")
}

// deadOther is the entry of a svcwrap that is gone: the agent saw its TTL
// expire.
func deadOther() *consulclient.Holder {
	return &consulclient.Holder{
		Meta:        map[string]string{wrapper.MetaInstance: "otherhost/77/12345"},
		CheckStatus: "critical",
		CheckOutput: "TTL expired",
	}
}

// What the next attempt finds there and is not this svcwrap's own (here a
// dead svcwrap's entry: the registration was not applied) is registered over,
// not kept: a TTL update would keep another's tags, port and mark.
func TestRegistration_UnansweredAndNotAppliedIsSentAgain(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.hangOp = "register"
		r.reg.set(0, nil, false, deadOther())
	})
	r.j.waitUntil(t, func() bool { return r.j.countMatch(hasPrefix("register web")) >= 2 }, func() string { return fmt.Sprint(r.j.all()) })
	all := r.j.all()
	first := slices.IndexFunc(all, hasPrefix("register web"))
	second := first + 1 + slices.IndexFunc(all[first+1:], hasPrefix("register web"))
	assert.Less(t, r.j.index("unanswered register"), second, "sent again after the first went unanswered: %q", all)
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("status web")), "no TTL update on an entry that is not its own: %q", r.j.all())
	r.sigs <- syscall.SIGTERM
	r.wait(t)
}

// With a second agent, a registration left unanswered on the first is not
// waited for: svcwrap registers through the second, and the first's copy,
// which the agent applied, is removed once it answers.
func TestRegistration_UnansweredThenMovedIsSwept(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), twoAgents, func(r *fakeRun) {
		r.reg.hangOp, r.reg.hangOn = "register", map[int]bool{0: true}
		r.reg.set(0, nil, false, ours())
	})
	r.j.waitFor(t, "unanswered register")
	r.j.waitFor(t, "@1 register "+wrapper.Guest("web")+" passing")
	r.j.waitFor(t, "deregister web")
	r.sigs <- syscall.SIGTERM
	assert.Equal(t, 128+15, r.wait(t).code)
	requireBefore(t, r.j, "@1 deregister "+wrapper.Guest("web"), "signal SIGTERM")
}

// Found its own but gone by the TTL update (removed in between): it is
// registered again, not taken for kept.
func TestRegistration_UnansweredFoundThenGoneIsSentAgain(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 50 * time.Millisecond}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.reg.hangOp = "register"
		r.reg.statusOnce = fmt.Errorf("set check: %w", consulclient.ErrNotRegistered)
		r.reg.set(0, nil, false, ours())
	})
	r.j.waitFor(t, "status refused web")
	r.j.waitUntil(t, func() bool { return r.j.countMatch(hasPrefix("register web")) >= 2 }, func() string { return fmt.Sprint(r.j.all()) })
	all := r.j.all()
	refused := r.j.index("status refused web")
	assert.GreaterOrEqual(t, slices.IndexFunc(all[refused:], hasPrefix("register web")), 0, "registered again after the refused update: %q", all)
	r.sigs <- syscall.SIGTERM
	r.wait(t)
}

// A registration sent to the second agent while the first was away, and
// never answered, is a duplicate once the first answers again and svcwrap
// stays there: it is swept, not left in the catalog until the stop.
func TestRegistration_UnansweredWhileAwaySweptWhenTheFirstAnswers(t *testing.T) {
	cfg := fast()
	cfg.ConsulTimeout = 50 * time.Millisecond
	guest := wrapper.Guest("web")
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), twoAgents, func(r *fakeRun) {
		r.reg.hangOp, r.reg.hangOn, r.reg.freezeOn = "register", map[int]bool{1: true}, map[int]bool{1: true}
		r.reg.hangFor = 50 * time.Millisecond // the frozen agent's calls time out, as the real client's do
		r.reg.set(1, nil, false, ours())
	})
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, unreachable(0), false, nil)
	r.j.waitFor(t, "@1 unanswered register") // and agent 1 hangs from now on
	beats := r.j.countMatch(hasPrefix("status web"))
	r.reg.set(0, nil, false, nil)
	r.j.waitUntil(t, func() bool { return r.j.countMatch(hasPrefix("status web")) > beats }, func() string { return fmt.Sprint(r.j.all()) })
	r.reg.set(1, nil, false, ours()) // agent 1 answers again
	r.j.waitFor(t, "@1 deregister "+guest)
	assert.Equal(t, 0, r.j.countMatch(hasPrefix("@1 status")), "never moved to agent 1: %q", r.j.all())
	r.sigs <- syscall.SIGTERM
	assert.Equal(t, 128+15, r.wait(t).code)
	requireBefore(t, r.j, "deregister web", "signal SIGTERM")
}

// A child that ends while its first registration is on its way (the agent
// slow to apply it) leaves nothing registered: the stop waits for the
// registration's answer, which says where the service is, rather than cut
// it short and look before the agent has applied it. So does a stop signal.
func TestStop_RegistrationUnderWayAnsweredBeforeTheStop(t *testing.T) {
	for name, stop := range map[string]func(r *fakeRun){
		"child ends": func(r *fakeRun) { r.child.exit(signals.Exit{Code: 0}) },
		"SIGTERM":    func(r *fakeRun) { r.sigs <- syscall.SIGTERM },
	} {
		t.Run(name, func(t *testing.T) {
			log := &logBuffer{}
			release := make(chan struct{})
			cfg := wrapper.Config{ConsulTimeout: time.Minute, KillTimeout: time.Minute, Logger: log.logger()}
			r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) { r.reg.slowRegister = release })
			r.j.waitFor(t, "register-sent web")
			stop(r)
			r.j.waitUntil(t, func() bool {
				return strings.Contains(log.String(), "command ended") || strings.Contains(log.String(), "stopping")
			}, log.String)
			close(release) // the agent applies it now
			res := r.wait(t)
			require.NoError(t, res.err)
			r.j.waitMatch(t, "registration applied", hasPrefix("register web passing")) // by now, or late
			assert.False(t, r.reg.holds(0), "the agent holds nothing once svcwrap has exited: %q", r.j.all())
			requireBefore(t, r.j, "register web passing", "deregister web")
			if name == "SIGTERM" {
				requireBefore(t, r.j, "deregister web", "signal SIGTERM")
			}
		})
	}
}

// While the stop waits for a registration's answer, a second stop signal
// gives up on it and kills the group at once.
func TestStop_SecondSignalEndsTheWaitForARegistration(t *testing.T) {
	log := &logBuffer{}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	cfg := wrapper.Config{ConsulTimeout: time.Hour, KillTimeout: time.Hour, Logger: log.logger()}
	r := startFake(t, cfg, diesOn(syscall.SIGTERM), func(r *fakeRun) { r.reg.slowRegister = release })
	r.j.waitFor(t, "register-sent web")
	r.sigs <- syscall.SIGTERM
	r.j.waitUntil(t, func() bool { return strings.Contains(log.String(), "stopping") }, log.String)
	r.sigs <- syscall.SIGTERM
	res := r.wait(t) // within the test's wait, not the hour
	assert.Equal(t, 128+9, res.code)
	assert.Contains(t, log.String(), "giving up on Consul")
}

// A second stop signal gives up on those retries at once.
func TestStop_SecondSignalEndsLateRetries(t *testing.T) {
	cfg := wrapper.Config{ConsulTimeout: 100 * time.Millisecond, KillTimeout: time.Hour}
	r := startFake(t, cfg, nil) // ignores SIGTERM
	r.j.waitFor(t, "register web passing")
	r.reg.set(0, fmt.Errorf("deregister: %w", consulclient.ErrRefused), false, nil)
	r.sigs <- syscall.SIGTERM
	r.j.waitFor(t, "signal SIGTERM")
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+9, res.code)
	assert.Equal(t, -1, r.j.index("deregister web"), "%q", r.j.all())
}
