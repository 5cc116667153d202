package wrapper

// The sweeps: removing the copies of the registration left on agents the
// syncer moved away from, or where a registration's outcome is unknown. Each
// runs in a goroutine of its own, so that an agent that hangs delays nothing
// else; the syncer stops a sweep before it registers on that agent again.

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"
)

// Backoff of a sweep, the removal of the copy left on an agent svcwrap moved
// away from. An agent with a data dir restores that copy the moment it comes
// back, passing if it is inside its TTL, so the sweep looks at least every
// second: the duplicate is gone a moment after the agent answers again.
const (
	sweepFirst = 100 * time.Millisecond
	sweepMax   = time.Second
)

// sweep is the removal of the copy on one agent, running in its own goroutine.
type sweep struct {
	cancel context.CancelFunc
	done   chan struct{}
	moved  bool // svcwrap was registered there; else a registration's outcome is unknown
	parked bool // not swept yet: see park
}

// leave records that agent i may still hold a copy of the registration,
// which svcwrap no longer keeps, and starts sweeping it. moved says svcwrap
// was registered there and moved away, which is worth a notice when the copy
// goes; otherwise a registration there may or may not have been applied.
func (s *syncer) leave(i int, moved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.left[i]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	sw := &sweep{cancel: cancel, done: make(chan struct{}), moved: moved}
	s.left[i] = sw
	go func() {
		defer close(sw.done)
		s.sweep(ctx, i)
	}()
}

// park records that agent i may hold a registration svcwrap sent there and
// had no answer to (its timeout ran out, the connection broke), without
// sweeping it yet. The syncer's next attempt at that agent looks there
// first (syncer.resume): an agent slow to answer, as at a host's start, has
// most likely applied it. (With several agents the same pass may go on to
// the next one and register there; the copy is swept then.) A sweep now
// would remove the registration the agent applied, and the next attempt
// would register it again: the service would vanish for a moment, a flap.
// What is parked is swept once svcwrap holds its registration on another
// agent, registered there or confirmed by a heartbeat (sweepParked), and
// the stop looks there as at any agent of unknown outcome (unsure).
func (s *syncer) park(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.left[i]; ok {
		return
	}
	done := make(chan struct{})
	close(done) // nothing runs: stopSweep and stopSweeps need not wait
	s.left[i] = &sweep{cancel: func() {}, done: done, parked: true}
}

// isParked reports whether park left agent i to be swept later.
func (s *syncer) isParked(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.left[i]
	return sw != nil && sw.parked
}

// sweepParked starts sweeping what park left on agents other than on, the
// agent svcwrap has just registered with or heartbeated: a registration
// applied there is a duplicate now.
func (s *syncer) sweepParked(on int) {
	s.mu.Lock()
	var agents []int
	for i, sw := range s.left {
		if sw.parked && i != on {
			delete(s.left, i)
			agents = append(agents, i)
		}
	}
	s.mu.Unlock()
	for _, i := range agents {
		s.leave(i, false)
	}
}

// stopSweep ends the sweep of agent i, if one runs or is parked, and waits
// for it, so that it cannot remove a registration made there from now on.
// The copy is then the caller's again. It reports whether agent i was
// still to be swept.
func (s *syncer) stopSweep(i int) bool {
	s.mu.Lock()
	sw := s.left[i]
	delete(s.left, i)
	s.mu.Unlock()
	if sw != nil {
		sw.cancel()
		<-sw.done
	}
	return sw != nil
}

// stopSweeps ends every sweep; the agents stay in left, for the stop to
// clean up.
func (s *syncer) stopSweeps() {
	s.mu.Lock()
	all := maps.Clone(s.left)
	s.mu.Unlock()
	for _, sw := range all {
		sw.cancel()
		<-sw.done
	}
}

// sweep removes this svcwrap's copy from agent i once that agent answers,
// looking again with backoff until it does or ctx ends.
func (s *syncer) sweep(ctx context.Context, i int) {
	retry(ctx, sweepFirst, sweepMax, func() bool {
		if s.removeCopy(ctx, i) != nil {
			return false
		}
		s.mu.Lock()
		delete(s.left, i)
		s.mu.Unlock()
		return true
	})
}

// retry calls try until it reports done or ctx ends, waiting between calls
// from first, doubling up to max, with jitter.
func retry(ctx context.Context, first, max time.Duration, try func() (done bool)) {
	wait := first
	for !try() {
		t := time.NewTimer(jitter(wait))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, max)
	}
}

// removeCopy deregisters the service from agent i if the entry there is this
// svcwrap's own; an entry of another svcwrap, or none, is left as it is.
func (s *syncer) removeCopy(ctx context.Context, i int) error {
	removed, err := s.deregisterOwn(ctx, i)
	if errors.Is(err, errNotOurs) {
		return nil
	}
	if err != nil || !removed {
		return err
	}
	s.mu.Lock()
	sw := s.left[i]
	s.mu.Unlock()
	if sw != nil && !sw.moved {
		event(s.log(), "deregistered", "agent", s.reg.Addr(i))
		return nil
	}
	s.log().Log(ctx, LevelNotice, "consul: removed the copy left on an agent svcwrap moved away from",
		"agent", s.reg.Addr(i))
	return nil
}

// errNotOurs means the entry on an agent is another svcwrap's (it took the
// ID over): it is left as it is.
var errNotOurs = errors.New("the service ID is another svcwrap's now")

// deregisterOwn deregisters the service from agent i if the entry there is
// this svcwrap's own, and reports whether it did; errNotOurs if the entry is
// another's.
func (s *syncer) deregisterOwn(ctx context.Context, i int) (bool, error) {
	h, err := s.reg.Holder(ctx, i, s.idOn(i))
	if err != nil {
		return false, err
	}
	if h == nil {
		return false, nil
	}
	if !s.isOwn(h) {
		return false, errNotOurs
	}
	if err := s.reg.Deregister(ctx, i, s.idOn(i)); err != nil {
		return false, err
	}
	return true, nil
}

// deregisterOn removes the registration from agent i, the one it is on, at
// stop. If the agent did not answer since svcwrap last looked there, the ID
// may be another svcwrap's by now: it looks first (errNotOurs).
func (s *syncer) deregisterOn(ctx context.Context, i int) error {
	if !s.doubt {
		return s.reg.Deregister(ctx, i, s.idOn(i))
	}
	_, err := s.deregisterOwn(ctx, i)
	return err
}

// unsure lists, once run has returned, the agents where a registration was
// sent and its outcome is unknown (cut short by the stop, timed out): the
// service may be registered there.
func (s *syncer) unsure() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var agents []int
	for i, sw := range s.left {
		if !sw.moved {
			agents = append(agents, i)
		}
	}
	slices.Sort(agents)
	return agents
}

// holdings says, once run has returned, where the registration is (-1:
// nowhere) and which agents may still hold a copy.
func (s *syncer) holdings() (on int, left []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.left {
		left = append(left, i)
	}
	return s.on, left
}
