// Package wrapper is svcwrap's lifecycle: start the child, register it in
// Consul, keep its check true while it runs, stop it cleanly, and turn its end
// into an exit code. Run reads top to bottom; the pieces it drives (checks,
// Consul, processes and signals) sit behind the small interfaces below.
package wrapper

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/sdnotify"
	"github.com/svcwrap/svcwrap/signals"
)

// Exit codes of svcwrap's own making; any other code is the child's.
const (
	ExitUsage         = 2   // bad input; nothing started, nothing registered
	ExitNotExecutable = 126 // the command exists but cannot be run
	ExitNotFound      = 127 // the command does not exist
)

// ErrIDInUse means another svcwrap that is still alive holds the service ID on
// the agent. svcwrap stops its own child and leaves that registration alone.
var ErrIDInUse = errors.New("service ID held by another running svcwrap")

// Registry is what the lifecycle needs from Consul: a list of agents, each
// call for the one it names by index, the first being this host's own.
// Errors are classified by the consulclient sentinels (ErrUnreachable,
// ErrRefused, ErrNotRegistered, ErrTokenChanged, ...).
type Registry interface {
	Agents() int
	Addr(agent int) string
	Register(ctx context.Context, agent int, s consulclient.Service) error
	SetStatus(ctx context.Context, agent int, serviceID, status, output string) error
	Deregister(ctx context.Context, agent int, serviceID string) error
	Holder(ctx context.Context, agent int, serviceID string) (*consulclient.Holder, error)
	NodeAddress(ctx context.Context, agent int) (string, error)
}

// Process is the running child, a process group of its own.
type Process interface {
	Pid() int
	Done() <-chan signals.Exit
	Signal(sig syscall.Signal) error // to the whole group
	Kill() error                     // SIGKILL to the whole group
	GroupAlive() bool
	Release()
}

// Notifier is what the service manager hears of the service (systemd's
// sd_notify). The syncer and the supervise loop call it, so no method may
// block.
type Notifier interface {
	Ready(status string)    // the service is passing in Consul: startup is done (sent once)
	Status(status string)   // one line of state, for `systemctl status`
	Stopping(status string) // the stop sequence has begun
	Watchdog()              // keep-alive: the child lives and the supervise loop runs
}

// Checker tells whether the child is ready right now.
type Checker interface {
	Check(ctx context.Context) check.Result
}

var (
	_ Registry = (*consulclient.Client)(nil)
	_ Process  = (*signals.Child)(nil)
	_ Checker  = check.Port{}
	_ Notifier = (*sdnotify.Socket)(nil)
)

// StartFunc starts the child. Config.Start replaces signals.Start in tests.
type StartFunc func(signals.Options) (Process, error)

// Run runs cfg.Command as a service registered in reg until the child ends,
// and returns the exit code svcwrap should exit with: the child's, 128+N if
// signal N killed it. A non-nil error comes with one of svcwrap's own codes
// (ExitUsage, ExitNotFound, ExitNotExecutable) and says what went wrong in one
// line. Cancelling ctx stops the child as SIGTERM would.
func Run(ctx context.Context, cfg Config, reg Registry) (int, error) {
	// 1. Validate the whole configuration first: bad input starts nothing.
	cfg, err := cfg.withDefaults()
	if err != nil {
		return ExitUsage, err
	}
	log := cfg.Logger

	// Claim the ID on this host, until Run returns: a second svcwrap stops here.
	unlock, err := lockHost(cfg, lockAgent(reg))
	if err != nil {
		return ExitUsage, err
	}
	defer unlock()
	// Keep the host's requests to the agent within what it admits (gate.go).
	reg = gateRegistry(cfg, reg)
	// Every line says which service it is about, and once the child runs,
	// which process.
	cfg.Logger = cfg.Logger.With("service", cfg.ID)
	cfg.OnLogger(cfg.Logger)

	// 2. Register and keep the check true in the background, so that Consul,
	// slow or gone, never holds up the child or the loop below. The syncer
	// starts first: it looks up who holds the service ID while the child is
	// being started, and registers nothing before the child's first check.
	consul := newSyncer(cfg, reg)
	syncCtx, cancelSync := context.WithCancel(context.WithoutCancel(ctx))
	syncDone := make(chan struct{})
	stopSync := func() { cancelSync(); <-syncDone }
	go func() { defer close(syncDone); consul.run(syncCtx) }()
	defer stopSync()

	// 3. Start the child at once, whatever Consul's state.
	child, err := cfg.start()
	if err != nil {
		return startErrorCode(err), err
	}
	defer child.Release()
	cfg.Logger = cfg.Logger.With("pid", child.Pid())
	cfg.OnLogger(cfg.Logger)
	log = cfg.Logger
	consul.setLogger(log)
	go catchLater(syncCtx, consul.catchLater, catchLaterAfter)
	event(log, "running", "name", cfg.Name, "command", cfg.Command[0], "agents", agentList(reg),
		"port", cfg.Port, "checks", describeChecks(cfg), "ttl", cfg.TTL, "heartbeat", cfg.Heartbeat,
		"deregister", cfg.Deregister.String(), "notify", cfg.notifies(), "watchdog", cfg.Watchdog)

	// The checks run in goroutines of their own and hand their results in
	// when they change. Without --port or --check there is nothing to run:
	// the child is ready while it runs, and its end arrives as an event.
	checks := newHealth(cfg, child.Pid())
	defer checks.stop()
	if r, ok := checks.start(); ok {
		consul.want(r)
	}

	// While the child lives, a keep-alive for the service manager every half
	// of its watchdog timeout. It is sent from this loop, so that a loop that
	// is stuck stops sending it, and ends with the loop.
	var keepAlive <-chan time.Time
	if cfg.Watchdog > 0 {
		ticker := time.NewTicker(cfg.Watchdog / 2)
		defer ticker.Stop()
		keepAlive = ticker.C
		cfg.Notify.Watchdog()
	}

	// 4. Supervise: one loop over the child's end, signals, checks and Consul.
	st := stopper{cfg: cfg, reg: reg, sync: consul, child: child, cancelSync: cancelSync, syncDone: syncDone, owned: true, abandon: checks.abandon}
	defer st.stopTimers()
	ctxDone := ctx.Done()
	for {
		select {
		case exit := <-child.Done():
			// 5. Stop: the child has ended, by itself or by request.
			return st.finish(exit)

		case sig := <-cfg.Signals:
			st.signal(sig)

		case <-ctxDone:
			ctxDone = nil
			event(log, "stopping", "signal", signals.Name(syscall.SIGTERM), "cause", "context cancelled")
			st.begin(syscall.SIGTERM)

		case rep := <-checks.results:
			consul.want(checks.update(rep))

		case <-checks.firstDue:
			consul.want(checks.onFirstDue())

		case <-checks.graceEnds:
			consul.want(checks.onGraceEnd())

		case err := <-consul.fatal:
			log.Error("stopping the command", "error", err)
			st.fail(err)

		case <-st.drained:
			st.forwardStop()

		case <-st.killAt:
			log.Error("kill timeout: killing the process group", "timeout", cfg.KillTimeout)
			cfg.Notify.Status("stopping: kill timeout, killed the process group")
			st.kill()

		case <-keepAlive:
			cfg.Notify.Watchdog()
		}
	}
}

// catchLaterAfter is how long the signals main left for later wait at most
// for the first registration's outcome (Config.CatchLater). A variable for
// the tests.
var catchLaterAfter = 100 * time.Millisecond

// catchLater calls catch after has passed, if the syncer has not by then
// (it does once its first push has returned) and ctx, the syncer's, has not
// ended: once the stop has begun, nothing more is caught.
func catchLater(ctx context.Context, catch func(context.Context), after time.Duration) {
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
		catch(ctx)
	}
}

// start starts the child as cfg says.
func (cfg Config) start() (Process, error) {
	opts := signals.Options{
		Argv:       cfg.Command,
		Env:        cfg.Env,
		Foreground: cfg.Terminal,
		ReapAll:    cfg.ReapAll,
	}
	if !cfg.KeepChild {
		opts.ParentDeathSignal = syscall.SIGKILL
	}
	if cfg.Start != nil {
		return cfg.Start(opts)
	}
	c, err := signals.Start(opts)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func startErrorCode(err error) int {
	if errors.Is(err, signals.ErrNotFound) {
		return ExitNotFound
	}
	return ExitNotExecutable
}

// stopper is the stop sequence, written once. Every step is idempotent, so a
// second signal, the kill timeout and the child's end may arrive in any order.
type stopper struct {
	cfg     Config
	reg     Registry
	sync    *syncer
	child   Process
	abandon func() // cancels the checks under way; a stop never waits on one

	cancelSync context.CancelFunc // ends the syncer's run
	syncDone   <-chan struct{}    // closed when it has ended

	owned        bool // the registration is ours to change
	deregistered bool
	triedDereg   bool          // deregistration is attempted once per stop
	spent        time.Duration // of the stop's one --consul-timeout for Consul
	sweeping     bool
	sweeps       sync.WaitGroup
	cancelSweeps context.CancelFunc
	requested    syscall.Signal // the stop signal forwarded on request; 0: none yet
	failure      error          // why svcwrap stopped the child itself

	stopping     bool
	drain        *time.Timer
	drained      <-chan time.Time
	killer       *time.Timer
	killAt       <-chan time.Time
	killDeadline time.Time // when the kill timeout of a forwarded stop runs out
	killed       bool
	hurried      bool // a stop signal came while Consul refused: no more retries
	stopBegan    time.Time
	late         sync.WaitGroup // a deregistration not done yet when the child heard the stop
	cancelLate   []context.CancelFunc
}

// signal handles one signal svcwrap received: a stop signal starts the stop
// sequence (a second one kills at once); any other is forwarded to the child's
// group.
func (s *stopper) signal(sig os.Signal) {
	ssig, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	if !signals.IsStop(sig) {
		if err := s.child.Signal(ssig); err != nil {
			s.cfg.Logger.Warn("forward signal", "signal", signals.Name(ssig), "error", err)
			return
		}
		if ssig == syscall.SIGWINCH {
			s.cfg.Logger.Debug("forwarded signal", "signal", signals.Name(ssig)) // each resize of a terminal
			return
		}
		event(s.cfg.Logger, "forwarded signal", "signal", signals.Name(ssig))
		return
	}
	if s.stopping {
		event(s.cfg.Logger, "second stop signal: killing the process group", "signal", signals.Name(ssig))
		s.cfg.Notify.Status("stopping: second stop signal, killed the process group")
		s.kill()
		s.giveUpOnConsul()
		return
	}
	event(s.cfg.Logger, "stopping", "signal", signals.Name(ssig))
	s.begin(ssig)
}

// begin starts the stop sequence: turn traffic away first, wait the drain
// delay, then forward the stop signal.
func (s *stopper) begin(received syscall.Signal) {
	if s.stopping {
		return
	}
	s.stopping = true
	s.abandon()
	s.requested = received
	if s.cfg.StopSignal != 0 {
		s.requested = s.cfg.StopSignal
	}
	s.stopBegan = time.Now()
	s.cfg.Notify.Stopping("stopping on " + signals.Name(received) + ": turning traffic away")
	s.turnAway()
	if s.cfg.Drain <= 0 {
		s.forwardStop()
		return
	}
	event(s.cfg.Logger, "draining", "for", s.cfg.Drain)
	s.cfg.Notify.Status("stopping: draining for " + s.cfg.Drain.String())
	s.drain = time.NewTimer(s.cfg.Drain)
	s.drained = s.drain.C
}

// fail stops the child because svcwrap cannot do its job (the service ID is
// taken): the registration is not ours, so Consul is left alone.
func (s *stopper) fail(err error) {
	s.failure = err
	s.owned = false
	s.begin(syscall.SIGTERM)
}

// forwardStop sends the stop signal to the child's group and arms the kill
// timeout.
func (s *stopper) forwardStop() {
	s.drained = nil
	if s.killAt != nil || s.killed {
		return
	}
	if err := s.child.Signal(s.requested); err != nil {
		s.cfg.Logger.Warn("forward stop signal", "signal", signals.Name(s.requested), "error", err)
	} else {
		event(s.cfg.Logger, "forwarded stop signal", "signal", signals.Name(s.requested), "kill_timeout", s.cfg.KillTimeout)
		s.cfg.Notify.Status("stopping: sent " + signals.Name(s.requested) + ", waiting up to " + s.cfg.KillTimeout.String())
	}
	s.killDeadline = time.Now().Add(s.cfg.KillTimeout)
	s.killer = time.NewTimer(s.cfg.KillTimeout)
	s.killAt = s.killer.C
}

// kill sends SIGKILL to the child's whole group.
func (s *stopper) kill() {
	s.drained, s.killAt = nil, nil
	if s.killed {
		return
	}
	s.killed = true
	if err := s.child.Kill(); err != nil {
		s.cfg.Logger.Warn("kill process group", "error", err)
	}
}

func (s *stopper) stopTimers() {
	if s.drain != nil {
		s.drain.Stop()
	}
	if s.killer != nil {
		s.killer.Stop()
	}
}

// turnAway is the first step of a stop: turn traffic away from the service
// before the child hears anything. It deregisters the service or, when the
// policy keeps it until the outcome is known, makes it critical. The syncer is
// stopped first, so that no heartbeat can bring the service back. The
// copies left on agents svcwrap moved away from are swept in the background
// meanwhile; a registration whose outcome is unknown is the
// deregistration's to remove, before the child hears the stop.
func (s *stopper) turnAway() {
	s.stopSyncer()
	dereg := s.owned && s.cfg.Deregister == DeregisterOnExit
	s.sweepLeft(dereg)
	switch {
	case dereg:
		s.deregister()
	case s.owned:
		s.markCritical("svcwrap: stopping")
	}
}

// stopSyncer ends the syncer, so that no heartbeat can bring the service
// back, and waits for it. A registration under way is let finish (see
// syncer.finishing): only its answer says whether the service is there.
// The wait counts against the stop's budget for Consul (the registration
// has one --consul-timeout from its sending). A stop signal meanwhile cuts
// the registration short and gives up on Consul, as it does during any
// other request of the stop: the TTL and the reaper clean up.
func (s *stopper) stopSyncer() {
	s.cancelSync()
	select {
	case <-s.syncDone:
		return
	default:
	}
	began := time.Now()
	defer func() { s.spent += time.Since(began) }()
	done := make(chan error, 1)
	go func() { <-s.syncDone; done <- nil }()
	s.during(done, s.sync.abort)
}

// settle leaves Consul as the policy says once the child has ended.
func (s *stopper) settle(exit signals.Exit) {
	s.stopSyncer()
	dereg := s.owned && !s.deregistered &&
		(s.cfg.Deregister == DeregisterOnExit || (s.cfg.Deregister == DeregisterOnSuccess && s.succeeded(exit)))
	s.sweepLeft(dereg)
	switch {
	case dereg:
		s.deregister()
	case s.owned && !s.deregistered:
		s.markCritical("svcwrap: command ended: " + exit.String())
	}
}

// succeeded reports whether the child's end counts as a success for
// DeregisterOnSuccess: exit 0, or the end svcwrap asked for.
func (s *stopper) succeeded(exit signals.Exit) bool {
	return exit.Code == 0 || (s.requested != 0 && !s.killed && exit.Signal == s.requested)
}

// deregister removes the service from the agent that holds it, then from
// any agent where a registration's outcome is unknown: one the stop itself
// cut short, answered or not, may be there and passing, and must be gone
// before the child hears the stop signal. It is tried once per stop, within
// the stop's budget; one the agent refused or did not answer in time goes
// on while the child stops (removeLate).
func (s *stopper) deregister() {
	if s.triedDereg {
		return
	}
	s.triedDereg = true
	on, _ := s.sync.holdings()
	if on >= 0 {
		s.remove(on, func(ctx context.Context) error { return s.sync.deregisterOn(ctx, on) },
			func(err error, late bool) {
				if gone := s.deregisteredOn(on, err, late); !late {
					s.deregistered = gone
				}
			})
	} else {
		s.deregistered = true // registered nowhere for sure; see below
	}
	for _, i := range s.sync.unsure() {
		// A registration the stop waited for until its timeout has used
		// the budget: its removal, too, may go on while the child stops.
		s.remove(i, func(ctx context.Context) error { return s.sync.removeCopy(ctx, i) },
			func(err error, _ bool) {
				if err != nil {
					s.cfg.Logger.Log(context.Background(), LevelNotice, "consul: could not remove a registration whose outcome is unknown",
						"agent", s.reg.Addr(i), "error", err)
				}
			})
	}
}

// remove makes call, a removal from agent i, within the stop's budget, and
// hands its outcome to ended. During a stop signal's stop, a removal the
// agent has not done when the budget runs out is not given up on: the stop
// signal goes out, and the removal goes on while the child stops
// (removeLate); ended hears of it when it is done (late), and must then
// leave the stopper's state alone.
func (s *stopper) remove(i int, call func(context.Context) error, ended func(err error, late bool)) {
	if !s.stopping || s.hurried {
		ended(s.persist(call), false)
		return
	}
	s.removeLate(i, call, ended)
}

// deregisteredOn says how a deregistration from agent on ended, and reports
// whether the entry is gone or not svcwrap's to remove.
func (s *stopper) deregisteredOn(on int, err error, late bool) bool {
	switch {
	case errors.Is(err, errNotOurs):
		s.cfg.Logger.Log(context.Background(), LevelNotice, "consul: not deregistering: the service ID is another svcwrap's now", "agent", s.reg.Addr(on))
		return true
	case err != nil:
		s.cfg.Logger.Log(context.Background(), LevelNotice, "consul: deregister failed: the entry stays, critical once its TTL lapses, until Consul's reaper removes it",
			"agent", s.reg.Addr(on), "reaper_after", s.cfg.DeregisterAfter, "error", err)
		return false
	}
	if late {
		event(s.cfg.Logger, "deregistered", "agent", s.reg.Addr(on), "late", true)
	} else {
		event(s.cfg.Logger, "deregistered", "agent", s.reg.Addr(on))
	}
	return true
}

// removeLate makes call, a removal from agent i, on a context that lasts
// until the latest moment the stop may end (--consul-timeout + --drain +
// --kill-timeout after it began; finish waits for it), and waits for it
// within the stop's budget. A host's wrappers stopped together are a herd at
// their agent: it refuses the connections beyond its per-IP limit, and
// answers the others one catalog sync at a time, the last of a thousand
// after more than five seconds. The child must hear the stop in time, and
// the entry must still go, not wait a minute for the reaper. So a refused
// call is made again until then, and one the agent has taken is waited for
// until then, not hung up on and made again: the agent applies a request
// whose client hung up anyway, and the repeat would only queue the same work
// twice and hold a second of its connections.
func (s *stopper) removeLate(i int, call func(context.Context) error, ended func(err error, late bool)) {
	deadline := s.stopBegan.Add(s.cfg.ConsulTimeout + s.cfg.Drain + s.cfg.KillTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	s.cancelLate = append(s.cancelLate, cancel)
	// Who hears the outcome: this goroutine while it waits (waiting),
	// ended in the background once it has stopped waiting (late).
	const waiting, late, answered = 0, 1, 2
	var state atomic.Int32
	done := make(chan error, 1)
	s.late.Add(1)
	go func() {
		defer s.late.Done()
		defer cancel()
		var err error
		retry(ctx, persistFirst, persistMax, func() bool {
			err = call(consulclient.UntilDeadline(ctx))
			return !errors.Is(err, consulclient.ErrRefused) || ctx.Err() != nil
		})
		if state.CompareAndSwap(waiting, answered) {
			done <- err
			return
		}
		ended(err, true)
	}()

	began := time.Now()
	defer func() { s.spent += time.Since(began) }()
	budget := time.NewTimer(s.remaining())
	defer budget.Stop()
	for {
		select {
		case err := <-done:
			ended(err, false)
			return
		case <-budget.C:
			if state.CompareAndSwap(waiting, late) {
				event(s.cfg.Logger, "deregistration not done yet: waiting for it while the command stops",
					"agent", s.reg.Addr(i), "until", deadline.Format(time.RFC3339Nano))
				return
			}
			ended(<-done, false) // it ended just now
			return
		case sig := <-s.cfg.Signals:
			if s.hurry(sig) { // giveUpOnConsul has cancelled ctx
				ended(<-done, false)
				return
			}
		}
	}
}

// markCritical keeps the service but turns its check critical with output,
// which says why: DNS and health queries stop returning it at once.
func (s *stopper) markCritical(output string) {
	on, _ := s.sync.holdings()
	if on < 0 {
		return
	}
	err := s.persist(func(ctx context.Context) error {
		return s.reg.SetStatus(ctx, on, s.sync.idOn(on), check.Critical.String(), output)
	})
	if err != nil {
		s.cfg.Logger.Log(context.Background(), LevelNotice, "consul: mark critical failed: the entry reads passing until its TTL lapses, then critical until Consul's reaper removes it",
			"agent", s.reg.Addr(on), "reaper_after", s.cfg.DeregisterAfter, "error", err)
		return
	}
	event(s.cfg.Logger, "marked critical", "agent", s.reg.Addr(on), "output", output)
}

// sweepLeft removes, in the background, the copies left on agents svcwrap
// moved away from or whose registration's outcome it does not know, where
// they are still its own: one attempt each, within what is left of the
// stop's budget (finish waits for them; a second stop signal cancels them).
// An agent that does not answer keeps its copy, which Consul's reaper
// removes once it is critical for DeregisterAfter. The registrations of
// unknown outcome are left to the deregistration when it follows
// (butUnsure).
func (s *stopper) sweepLeft(butUnsure bool) {
	if s.sweeping || s.hurried {
		return
	}
	s.sweeping = true
	_, left := s.sync.holdings()
	if butUnsure {
		unsure := s.sync.unsure()
		left = slices.DeleteFunc(left, func(i int) bool { return slices.Contains(unsure, i) })
	}
	if len(left) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.remaining())
	s.cancelSweeps = cancel
	for _, i := range left {
		s.sweeps.Add(1)
		go func() {
			defer s.sweeps.Done()
			if err := s.sync.removeCopy(ctx, i); err != nil {
				s.cfg.Logger.Log(ctx, LevelNotice, "consul: could not remove the copy left on an agent svcwrap moved away from",
					"agent", s.reg.Addr(i), "error", err)
			}
		}()
	}
}

// remaining is what is left of the stop's one --consul-timeout for Consul.
// The budget counts the time spent waiting on Consul, not the time since the
// stop began, so that the steps before and after the child's stop (marking
// critical, then deregistering under --deregister on-success) share one
// timeout however long the child takes: an agent that hangs delays a stop by
// one timeout, not one per step.
func (s *stopper) remaining() time.Duration {
	return max(s.cfg.ConsulTimeout-s.spent, 0)
}

// Backoff of persist. A host's wrappers stopped together are a herd at the
// agent's door: every refused attempt costs the agent an accept and an
// answer, so the attempts spread out quickly rather than hammer it.
const (
	persistFirst = 50 * time.Millisecond
	persistMax   = time.Second
)

// persist makes call within the stop's budget, on a context of its own: a
// stop must not be skipped because the caller's context was cancelled. While
// the agent refuses the request (consulclient.ErrRefused) the call is made
// again: when a host's wrappers are stopped together, as by a shutdown, their
// agent turns away the connections beyond its per-IP limit, and one attempt
// would leave those services registered until the reaper. An agent that does
// not answer at all is not waited for beyond the budget: the child's stop
// would wait with it (a deregistration goes on in the background,
// removeLate). The call runs in a goroutine while this one handles
// signals as the supervise loop would; a second stop signal cancels the
// call under way and ends the retries.
func (s *stopper) persist(call func(ctx context.Context) error) error {
	if s.hurried {
		return errGaveUp
	}
	began := time.Now()
	defer func() { s.spent += time.Since(began) }()
	ctx, cancel := context.WithTimeout(context.Background(), s.remaining())
	defer cancel()
	wait := persistFirst
	for {
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		err := s.during(done, cancel)
		if !errors.Is(err, consulclient.ErrRefused) || s.hurried {
			return err
		}
		t := time.NewTimer(jitter(wait))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case sig := <-s.cfg.Signals:
			t.Stop()
			if s.hurry(sig) {
				return err
			}
		}
		wait = min(2*wait, persistMax)
	}
}

// during waits for a call's result, handling signals meanwhile; a stop
// signal cancels the call.
func (s *stopper) during(done <-chan error, cancel context.CancelFunc) error {
	for {
		select {
		case err := <-done:
			return err
		case sig := <-s.cfg.Signals:
			if s.hurry(sig) {
				cancel()
				return <-done
			}
		}
	}
}

// hurry handles a signal that arrived while the stop waits for Consul, and
// reports whether it means "now": a stop signal gives up on Consul (the TTL
// and the reaper will clean up) and, if a stop is under way, kills the
// group. Any other signal is forwarded.
func (s *stopper) hurry(sig os.Signal) bool {
	if !signals.IsStop(sig) {
		s.signal(sig)
		return false
	}
	s.giveUpWaiting(sig)
	if s.stopping {
		s.kill()
	}
	return true
}

// errGaveUp is what a Consul call of the stop returns once a second stop
// signal has given up on Consul.
var errGaveUp = errors.New("gave up on Consul: a second stop signal")

// giveUpWaiting is a stop signal, sig, that arrived while the stop waits for
// Consul: it says so and gives up on Consul.
func (s *stopper) giveUpWaiting(sig os.Signal) {
	name := sig.String()
	if ssig, ok := sig.(syscall.Signal); ok {
		name = signals.Name(ssig)
	}
	s.cfg.Logger.Warn("stop signal while waiting for Consul: giving up on Consul", "signal", name)
	s.giveUpOnConsul()
}

// giveUpOnConsul ends every retry and removal still under way: a second stop
// signal means now (the TTL and the reaper will clean up).
func (s *stopper) giveUpOnConsul() {
	s.hurried = true
	s.sync.abort()
	if s.cancelSweeps != nil {
		s.cancelSweeps()
	}
	for _, cancel := range s.cancelLate {
		cancel()
	}
}

// jitter spreads d over [d/2, d], so that wrappers refused together do not
// come back together.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// finish handles the child's end: settle Consul, make sure no process of the
// child's group outlives svcwrap, and return the exit code.
func (s *stopper) finish(exit signals.Exit) (int, error) {
	event(s.cfg.Logger, "command ended", "status", exit.String(), "code", exit.Code)
	s.cfg.Notify.Stopping("command ended: " + exit.String())
	s.abandon()
	s.settle(exit)
	s.awaitConsul()
	if s.cancelSweeps != nil {
		s.cancelSweeps()
	}
	s.reapGroup()
	s.child.Release()
	if s.failure != nil {
		return ExitUsage, s.failure
	}
	return exit.Code, nil
}

// awaitConsul waits for the sweeps (bounded by the stop's budget) and a
// deregistration still being retried (bounded by the stop's end), which may
// outlast the child; a stop signal meanwhile gives up on them at once.
func (s *stopper) awaitConsul() {
	done := make(chan struct{})
	go func() {
		s.sweeps.Wait()
		s.late.Wait()
		close(done)
	}()
	for {
		select {
		case <-done:
			return
		case sig := <-s.cfg.Signals:
			if signals.IsStop(sig) {
				s.giveUpWaiting(sig)
			}
		}
	}
}

// reapGroup ends what is left of the child's process group once its leader
// has gone (`sh -c 'server &'`): the stop signal, then SIGKILL when the kill
// timeout runs out. A stop already under way keeps its own deadline, so that
// a stop never takes longer than one kill timeout after the stop signal.
func (s *stopper) reapGroup() {
	if !s.child.GroupAlive() {
		return
	}
	if !s.killed {
		deadline := s.killDeadline
		if deadline.IsZero() {
			sig := s.requested
			if sig == 0 {
				sig = syscall.SIGTERM
			}
			if err := s.child.Signal(sig); err != nil {
				s.cfg.Logger.Warn("signal what is left of the process group", "signal", signals.Name(sig), "error", err)
			} else {
				event(s.cfg.Logger, "signalled what is left of the process group", "signal", signals.Name(sig), "kill_timeout", s.cfg.KillTimeout)
			}
			deadline = time.Now().Add(s.cfg.KillTimeout)
		}
		for s.child.GroupAlive() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if s.child.GroupAlive() {
			s.cfg.Logger.Error("kill timeout: killing what is left of the process group", "timeout", s.cfg.KillTimeout)
		}
	}
	_ = s.child.Kill()
}
