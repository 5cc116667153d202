package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/consulclient"
)

// Backoff between attempts while the agent does not answer: soon at first, so
// a restarted agent is found quickly, then capped so that a long outage costs
// one request every few seconds.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 5 * time.Second
)

// syncer owns every call that keeps the registration true: it registers, sends
// each status change at once, refreshes an unchanged status every heartbeat,
// registers again when the agent has forgotten the service, and retries with
// capped backoff while the agent is away. It runs in its own goroutine so the
// supervise loop never waits on Consul.
//
// Of the agents of the list, it holds its registration on one at a time (on),
// and heartbeats only go there: a TTL update succeeds on any agent that has a
// check of that ID, whoever registered it. When that agent has not answered
// for a heartbeat it moves to the first other agent that answers, under a
// guest ID there (guestID), and sweeps the copy it left behind (sweep.go) as
// soon as that agent answers again. It does not move back while the agent it
// moved to answers: a move costs a moment with two entries or none, and the
// entry's address is the host's either way. Before it writes to an agent it
// has not registered with, or after that agent did not answer, it looks up
// who holds the ID (claim). Failures are told to the operator by trouble.go.
type syncer struct {
	cfg    Config
	reg    Registry
	self   instance
	wanted chan check.Result // capacity 1: the newest status wins
	fatal  chan error        // capacity 1: a reason to stop the child
	// catchLater is Config.CatchLater, made safe to call twice, or a no-op:
	// run calls it once the first push has returned.
	catchLater func(ctx context.Context)
	service    consulclient.Service

	// Owned by run.
	on        int       // index of the agent holding the registration; -1: none
	ever      bool      // registered once: an ID held on the first agent is no longer fatal
	doubt     bool      // the agent it is on failed since the ID was last looked up there
	guest     string    // the service ID on agents other than the first
	claimed   int       // agent where the ID was found free and not yet registered; -1: none
	home      string    // the node address of the first agent, for registrations through others
	lost      time.Time // when the agent the registration is on stopped answering
	noAddr    bool      // the registration without the host's address was reported
	critical  time.Time // when the check was last (re-)registered while critical
	fresh     bool      // the last update answered was a registration (Config.nextBeat)
	trouble   trouble
	held      map[int]bool // agents where another svcwrap's entry was reported
	announced announcement // what cfg.Notify was last told

	// Shared by run and the sweeps.
	mu   sync.Mutex
	left map[int]*sweep // agents that may hold a copy of the registration

	// Set by Run once the child's pid is known, read by all.
	logger atomic.Pointer[slog.Logger]

	// Owned by the caller of want, not by run.
	handed     bool
	lastHanded check.Result

	// aborted ends a registration under way, which the end of run's
	// context does not (see finishing): a second stop signal.
	aborted context.Context
	abort   context.CancelFunc
}

// finishing is the context of a registration sent from ctx: it is not cut
// short when ctx ends (a stop, the child's end), only by abort or after one
// --consul-timeout, which bounds all its requests together (the client may
// send it twice, and its output after it). An agent applies a registration
// whose client hung up all the same, maybe after the stop has looked at what
// it holds and found nothing; the answer is what says where the service is,
// so the stop waits for it.
func (s *syncer) finishing(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ConsulTimeout)
	stop := context.AfterFunc(s.aborted, cancel)
	return c, func() { stop(); cancel() }
}

func newSyncer(cfg Config, reg Registry) *syncer {
	self := currentInstance()
	meta := maps.Clone(cfg.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[metaInstance] = self.String()
	s := &syncer{
		cfg:    cfg,
		reg:    reg,
		self:   self,
		wanted: make(chan check.Result, 1),
		fatal:  make(chan error, 1),
		service: consulclient.Service{
			ID: cfg.ID, Name: cfg.Name, Tags: cfg.Tags, Meta: meta,
			Address: cfg.Address, Port: cfg.Port,
			TTL: cfg.TTL, DeregisterAfter: cfg.DeregisterAfter,
		},
		on: -1, claimed: -1,
		guest: guestID(cfg.ID, self.host),
		held:  map[int]bool{},
		left:  map[int]*sweep{},
	}
	s.aborted, s.abort = context.WithCancel(context.Background())
	s.catchLater = func(context.Context) {}
	if cfg.CatchLater != nil {
		var once sync.Once
		s.catchLater = func(ctx context.Context) { once.Do(func() { cfg.CatchLater(ctx) }) }
	}
	s.logger.Store(cfg.Logger)
	return s
}

// log is the syncer's logger. It starts before the child, whose pid its
// lines carry once setLogger has been called.
func (s *syncer) log() *slog.Logger { return s.logger.Load() }

// setLogger replaces the syncer's logger, from any goroutine.
func (s *syncer) setLogger(l *slog.Logger) { s.logger.Store(l) }

// announce tells the service manager the status Consul has just accepted:
// READY=1 the first time it is passing, a STATUS= line whenever it reads
// differently. Notify never blocks, so neither does the syncer.
// Each heartbeat comes here: the status line is only made when it changed.
func (s *syncer) announce(current check.Result) {
	a := announcement{current: current, on: s.on, set: true}
	if a == s.announced {
		return
	}
	s.announced = a
	status := fmt.Sprintf("%s in Consul (agent %s): %s", current.Status, s.reg.Addr(s.on), current.Output)
	if current.Status == check.Passing {
		s.cfg.Notify.Ready(status)
		return
	}
	s.cfg.Notify.Status(status)
}

// tell puts a line of trouble in the service manager's status; the next
// accepted status replaces it.
func (s *syncer) tell(status string) {
	s.announced = announcement{}
	s.cfg.Notify.Status(status)
}

// announcement is a status told to the service manager: the result and the
// agent that accepted it.
type announcement struct {
	current check.Result
	on      int
	set     bool
}

// want hands the syncer the newest check result without ever blocking: an
// older one not yet sent is replaced. A result equal to the last one handed
// over is dropped here, so that an unchanged check every interval does not
// even wake the syncer. Only the supervise loop calls want.
func (s *syncer) want(r check.Result) {
	if s.handed && r == s.lastHanded {
		return
	}
	s.handed, s.lastHanded = true, r
	for {
		select {
		case s.wanted <- r:
			return
		default:
		}
		select {
		case <-s.wanted:
		default:
		}
	}
}

// run keeps Consul in step with the wanted status until ctx ends. When it
// returns, every sweep it started has ended too, and holdings says where a
// registration may remain.
func (s *syncer) run(ctx context.Context) {
	defer s.stopSweeps()
	var (
		current check.Result
		sent    check.Result
		retry   = retryFirst
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	// Look the ID up on the first agent while the child starts, so that the
	// first registration waits for nothing but itself. A failed look-up is
	// left to push, which looks again before registering.
	if err := s.prepare(ctx); errors.Is(err, ErrIDInUse) {
		s.fatal <- err
		return
	}

	// Nothing can be sent before the first result.
	select {
	case current = <-s.wanted:
	case <-ctx.Done():
		return
	}
	for first := true; ; first = false {
		pushed := time.Now()
		err := s.push(ctx, current)
		if first {
			// Before the status line and READY, so that whoever waits for
			// them may send any signal.
			s.catchLater(ctx)
		}
		switch {
		case err == nil:
			s.healed()
			if sent != current {
				event(s.log(), "status", "status", current.Status.String(), "output", current.Output, "agent", s.reg.Addr(s.on))
			} else {
				s.log().Debug("heartbeat", "status", current.Status.String())
			}
			s.announce(current)
			sent = current
			retry = retryFirst
			// Counted from the sending: the agent reset the TTL somewhere
			// between then and its answer, which a busy agent (a host's
			// start) gives seconds later; and sooner when it did.
			now := time.Now()
			next := s.cfg.nextBeat(now.Sub(pushed), s.fresh)
			s.fresh = false
			timer.Reset(untilBeat(now, pushed.Add(next), s.cfg.Heartbeat))
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrIDInUse):
			s.fatal <- err
			return
		default:
			wait := jitter(retry)
			s.failed(err, wait)
			timer.Reset(wait)
			retry = min(2*retry, retryMax)
		}

		if !s.await(ctx, timer, &current) {
			return
		}
	}
}

// prepare looks up the ID on the first agent and, when the registration may
// have to go through another agent, learns the first agent's node address.
func (s *syncer) prepare(ctx context.Context) error {
	switch err := s.claim(ctx, 0); {
	case err == nil:
		s.claimed = 0
		s.learnHome(ctx)
		return nil
	case errors.Is(err, errHeld):
		return fmt.Errorf("%w: %w", ErrIDInUse, err)
	default:
		return err
	}
}

// beatSlot is the grid of the wall clock that heartbeats are sent on: a
// heartbeat goes at the last half second before it is due, so that the
// wrappers of a host, which share the clock, reach their agent together.
// The agent syncs its whole state after each TTL update, and it does a
// burst of them for much less than the same updates one at a time, each
// waking it up: at a thousand wrappers, 13% of a core instead of 15-21%, and
// the wrappers' own CPU a minute 4.3 s instead of 7.0-7.8 (BENCHMARKS.md).
// A burst of a thousand wrappers is about 80 requests, well inside the
// agent's 200 connections per client address.
const beatSlot = 500 * time.Millisecond

// untilBeat is the wait from now until the heartbeat due at due, every
// after the last one was sent: brought forward to a boundary of beatSlot,
// never late, so that the TTL keeps all of its margin. For a short
// heartbeat the slot shrinks to a tenth of it. A heartbeat already due
// (the last answer came that late) goes at once.
func untilBeat(now, due time.Time, every time.Duration) time.Duration {
	wait := due.Sub(now) // on the monotonic clock: a step of the wall clock does not delay it
	if slot := min(beatSlot, every/10); slot > 0 {
		past := time.Duration(due.UnixNano() % int64(slot)) // since the boundary, on the wall clock
		if past < 0 {
			past += slot
		}
		wait -= past
	}
	return max(wait, 0)
}

// await waits for a status that differs from current, the heartbeat, or the
// retry, and reports false when ctx ends first. An unchanged status is no news
// (want drops most of them already): sending each would cost the agent a
// request where the heartbeat keeps the TTL just as true. A failed
// push is retried by the timer.
func (s *syncer) await(ctx context.Context, timer *time.Timer, current *check.Result) bool {
	for {
		select {
		case r := <-s.wanted:
			if r == *current {
				continue
			}
			*current = r
			timer.Stop()
			return true
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// push makes an agent hold current: a TTL update on the agent the service is
// registered with, a registration when it is not (or no longer) known there,
// and a move to another agent when that one has not answered for a beat
// (Config.beat: the heartbeat, at most a third of the TTL). (An agent
// restarting is back within that, and a move is for good: svcwrap does not
// move back while the new agent answers.)
func (s *syncer) push(ctx context.Context, current check.Result) error {
	if s.on < 0 {
		return s.find(ctx, current, nil)
	}
	began := time.Now()
	err := s.refresh(ctx, current)
	if err == nil {
		s.lost = time.Time{}
		// The registration is here: one sent elsewhere and never
		// answered, while this agent was away, is a duplicate if applied.
		s.sweepParked(s.on)
		return nil
	}
	if s.on < 0 || ctx.Err() != nil {
		return err // the ID was taken there; or svcwrap stops
	}
	if !errors.Is(err, consulclient.ErrUnreachable) {
		return err // the agent answers: retry it
	}
	// The agent may come back restarted, its service gone and the ID taken
	// by another svcwrap in between: look before the next heartbeat. (An
	// agent that answers, if only to refuse, has not restarted: a host's
	// wrappers refused together do not double their requests.)
	s.doubt = true
	if s.lost.IsZero() {
		s.lost = began // a hung agent has already cost a timeout
	}
	if s.reg.Agents() == 1 || time.Since(s.lost) < s.cfg.beat() {
		return err
	}
	return s.find(ctx, current, err)
}

// refresh keeps the registration on the agent it is on.
func (s *syncer) refresh(ctx context.Context, current check.Result) error {
	if s.reaperNear(current) {
		return s.register(ctx, s.on, current)
	}
	if s.doubt {
		if err := s.claimOn(ctx); err != nil {
			return err
		}
		s.doubt = false
	}
	err := s.reg.SetStatus(ctx, s.on, s.idOn(s.on), current.Status.String(), current.Output)
	switch {
	case errors.Is(err, consulclient.ErrNotRegistered):
		// Restarted without its data, or the token expired: whoever
		// holds the ID there now is looked at before registering.
		s.log().Warn("the agent forgot the service: registering again", "agent", s.reg.Addr(s.on))
		if err := s.claimOn(ctx); err != nil {
			return err
		}
		return s.register(ctx, s.on, current)
	case errors.Is(err, consulclient.ErrTokenChanged):
		// Register again with the new token, which the agent uses to sync
		// the service to the servers; what the old token could not see is
		// looked at first.
		if err := s.claimOn(ctx); err != nil {
			return err
		}
		return s.register(ctx, s.on, current)
	}
	return err
}

// claimOn looks up who holds the ID on the agent svcwrap is registered with,
// before it writes there again after a doubt. If another svcwrap has taken
// it, svcwrap is registered nowhere: the next push looks elsewhere.
func (s *syncer) claimOn(ctx context.Context) error {
	err := s.claim(ctx, s.on)
	if errors.Is(err, errHeld) {
		s.heldOn(ctx, s.on, err)
		s.on = -1
	}
	return err
}

// guestID is the service ID svcwrap registers under on agents other than the
// first. The ID is the operator's on this host's own agent; on another
// agent, which has instances of its own, the same ID would belong to one of
// them (svcwrap would have to leave it alone, or its owner could not start).
// The host's name keeps the guest apart from them and from the guests of
// other hosts; the service name, which DNS and the catalog answer by, is
// the same.
func guestID(id, host string) string { return id + "@" + host }

// idOn is the service ID svcwrap uses on agent i.
func (s *syncer) idOn(i int) string {
	if i == 0 {
		return s.cfg.ID
	}
	return s.guest
}

// errHeld means another live svcwrap holds the ID on an agent.
var errHeld = errors.New("service ID held by another svcwrap")

// find registers with the first agent of the list that answers and where the
// ID is free or ours; the agent the registration is on, which has just
// failed with onErr, is not asked again. An agent that answers with an error
// (a refusal, a rejection) ends the search: it is alive, and the next
// attempt retries it.
func (s *syncer) find(ctx context.Context, current check.Result, onErr error) error {
	var errs []error
	for i := range s.reg.Agents() {
		var err error
		if i == s.on {
			err = onErr
		} else if i != 0 && s.service.Address == "" && s.home == "" {
			err = s.noAddress(ctx, i)
		} else if s.isParked(i) {
			err = s.resume(ctx, i, current)
		} else if err = s.claim(ctx, i); err == nil {
			err = s.register(ctx, i, current)
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errHeld):
			if i == 0 && !s.ever {
				// The ID is taken on this host's own agent before svcwrap
				// ever registered: two svcwraps configured for one ID.
				return fmt.Errorf("%w: %w", ErrIDInUse, err)
			}
			s.heldOn(ctx, i, err)
			errs = append(errs, err)
		case errors.Is(err, consulclient.ErrUnreachable) && ctx.Err() == nil:
			errs = append(errs, err)
		default:
			return err
		}
	}
	return fmt.Errorf("no agent holds the registration: "+strings.Repeat("; %w", len(errs))[2:], anys(errs)...)
}

// anys converts errs for a format of one %w each, which keeps the message
// on one line where errors.Join would break it.
func anys(errs []error) []any {
	out := make([]any, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

// heldOn says, once per agent until svcwrap registers there, that another
// svcwrap's entry on agent i is left alone.
func (s *syncer) heldOn(ctx context.Context, i int, err error) {
	if s.held[i] {
		return
	}
	s.held[i] = true
	s.log().Log(ctx, LevelNotice, "consul: service ID held by another svcwrap on this agent: leaving it alone",
		"agent", s.reg.Addr(i), "error", err)
}

// claim returns an error wrapping errHeld when the service ID is held on agent
// i by another svcwrap that is alive; a stale registration left by a dead one
// is taken over, and one of this svcwrap's own is simply registered again.
func (s *syncer) claim(ctx context.Context, i int) error {
	if s.claimed == i {
		return nil // prepare has just looked
	}
	_, err := s.lookUp(ctx, i)
	return err
}

// lookUp returns the registration of the service ID on agent i (nil: none),
// and an error wrapping errHeld when it is another live svcwrap's.
func (s *syncer) lookUp(ctx context.Context, i int) (*consulclient.Holder, error) {
	h, err := s.reg.Holder(ctx, i, s.idOn(i))
	if err != nil {
		return nil, err
	}
	if h != nil && heldByOther(h, s.self) {
		return nil, fmt.Errorf("%w: service %q on agent %s is registered by %s", errHeld, s.idOn(i), s.reg.Addr(i), h.Meta[metaInstance])
	}
	return h, nil
}

// isOwn reports whether h, an entry found on an agent, is this svcwrap's.
func (s *syncer) isOwn(h *consulclient.Holder) bool { return h.Meta[metaInstance] == s.self.String() }

// resume ends a registration sent to agent i and never answered (park). If
// the agent applied it, the entry there is this svcwrap's, its TTL running
// since then: a TTL update keeps it, where registering again would cost the
// agent a registration and a sync pass at the moment it is slowest to
// answer, and would come later; a moment without the entry, or past its
// TTL, is a flap. It looks first: a check of that ID may be another's (a
// dead svcwrap's entry the registration was to replace, a second svcwrap
// of this ID where the host lock does not reach), and a TTL update would
// make it pass as this one. Anything but its own entry is registered over,
// or left alone, as at any registration.
//
// A critical status is registered again all the same: Consul's reaper
// counts from the check's first critical moment, which a TTL update to
// critical does not move and a registration does (reaperNear).
func (s *syncer) resume(ctx context.Context, i int, current check.Result) error {
	h, err := s.lookUp(urgent(ctx), i)
	if err != nil {
		return err
	}
	if h != nil && s.isOwn(h) && current.Status != check.Critical {
		err := s.keep(ctx, i, current)
		if !errors.Is(err, consulclient.ErrNotRegistered) && !errors.Is(err, consulclient.ErrTokenChanged) {
			return err
		}
		// Removed since the look-up, or a new token to register with.
	}
	return s.register(ctx, i, current)
}

// keep holds the registration svcwrap sent to agent i and had no answer to,
// which the agent applied, with a TTL update (resume).
func (s *syncer) keep(ctx context.Context, i int, current check.Result) error {
	if err := s.reg.SetStatus(ctx, i, s.idOn(i), current.Status.String(), current.Output); err != nil {
		return err
	}
	s.stopSweep(i) // the entry is the registration now, not a copy
	s.hold(ctx, i, current, "the agent had applied the registration it did not answer in time")
	return nil
}

// register registers the service with agent i, current as its status. The
// caller has made sure the ID is free or ours there. The agent the
// registration was on before, if another, may keep a copy: it is swept.
func (s *syncer) register(ctx context.Context, i int, current check.Result) error {
	// Only a registration already sent outlives ctx (finishing): once svcwrap
	// stops, none is begun.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.aborted.Err(); err != nil {
		return err
	}
	s.claimed = -1          // a later registration looks again
	swept := s.stopSweep(i) // the sweep would remove what is registered now
	svc := s.service
	svc.ID = s.idOn(i)
	svc.Status, svc.Output = current.Status.String(), current.Output
	if i != 0 && svc.Address == "" {
		// Left empty, the entry would take the node address of the agent
		// it goes through: another host's.
		svc.Address = s.home
	}
	rctx, done := s.finishing(ctx)
	err := s.reg.Register(rctx, i, svc)
	done()
	if err != nil {
		// Sent, perhaps applied, never answered (a timeout, an agent dying
		// mid-request), the agent may hold it; refused or not sent, it may
		// still hold a copy from before, which was to be swept.
		unanswered := !errors.Is(err, consulclient.ErrRejected) && !errors.Is(err, errNotSent)
		if i != s.on && (unanswered || swept) {
			s.park(i)
		}
		return err
	}
	s.hold(ctx, i, current, "")
	return nil
}

// hold records that the registration is on agent i, as current says, and
// leaves the agent it was on before, if another. found says why svcwrap
// knows without an answer to its registration (resume); "" for an answer.
func (s *syncer) hold(ctx context.Context, i int, current check.Result, found string) {
	prev := s.on
	s.on, s.ever, s.lost, s.doubt, s.fresh = i, true, time.Time{}, false, true
	delete(s.held, i)
	s.critical = time.Time{}
	if current.Status == check.Critical {
		s.critical = time.Now()
	}
	if found == "" {
		event(s.log(), "registered", "agent", s.reg.Addr(i), "status", current.Status.String())
	} else {
		event(s.log(), "registered", "agent", s.reg.Addr(i), "status", current.Status.String(), "found", found)
	}
	s.sweepParked(i)
	if prev >= 0 && prev != i {
		s.leave(prev, true)
		s.log().Log(ctx, LevelNotice, "consul: moved to another agent",
			"from", s.reg.Addr(prev), "to", s.reg.Addr(i))
	}
	if i == 0 {
		s.learnHome(ctx) // for a move, if the first agent did not answer at start
	}
}

// learnHome learns the first agent's node address, once, when a move to
// another agent may need it: several agents, no --address.
func (s *syncer) learnHome(ctx context.Context) {
	if s.home != "" || s.reg.Agents() == 1 || s.service.Address != "" {
		return
	}
	if addr, err := s.reg.NodeAddress(ctx, 0); err == nil {
		s.home = addr
	}
}

// noAddress is why svcwrap does not register through agent i: it does not
// know this host's address (the first agent has not answered since svcwrap
// started, and --address is not set), and the entry would carry agent i's
// node address, another host's. Said once.
func (s *syncer) noAddress(ctx context.Context, i int) error {
	err := &consulclient.AgentError{Op: "register", Agent: s.reg.Addr(i), Kind: errNoAddress}
	if !s.noAddr {
		s.noAddr = true
		s.log().Log(ctx, LevelNotice, "consul: not registering through another agent: this host's address is unknown until the first agent answers (set --address)",
			"agent", s.reg.Addr(i), "first", s.reg.Addr(0))
	}
	return err
}

var errNoAddress = errors.New("this host's address is unknown")

// reaperNear reports whether the check has been critical for half of
// DeregisterAfter while svcwrap is alive. Consul's reaper would soon remove
// the service of a live child that is merely slow to become ready; registering
// again restarts the reaper's clock without changing the status, so the entry
// neither vanishes nor flaps. (Consul times a critical check from its first
// critical update after registration.)
func (s *syncer) reaperNear(current check.Result) bool {
	if current.Status != check.Critical || s.cfg.DeregisterAfter <= 0 {
		s.critical = time.Time{}
		return false
	}
	if s.critical.IsZero() {
		s.critical = time.Now()
		return false
	}
	return time.Since(s.critical) >= s.cfg.DeregisterAfter/2
}

// heldByOther reports whether h is the registration of another svcwrap that is
// still alive. On this host and in this PID namespace, the process itself is
// looked at; elsewhere, a TTL the agent saw expire means its svcwrap is gone. A registration svcwrap
// did not make (no instance mark) is taken over, as ianitor's are.
func heldByOther(h *consulclient.Holder, self instance) bool {
	other, ok := parseInstance(h.Meta[metaInstance])
	if !ok || other == self {
		return false
	}
	if other.visibleFrom(self) {
		return other.alive()
	}
	return !h.TTLExpired()
}
