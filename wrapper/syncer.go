package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
type syncer struct {
	cfg      Config
	reg      Registry
	self     instance
	wanted   chan check.Result // capacity 1: the newest status wins
	fatal    chan error        // capacity 1: a reason to stop the child
	service  consulclient.Service
	critical time.Time // when the check was last (re-)registered while critical
	claimed  bool      // the ID was found free (or stale) and is not registered yet

	// Owned by the caller of want, not by run.
	handed     bool
	lastHanded check.Result
}

func newSyncer(cfg Config, reg Registry) *syncer {
	self := currentInstance()
	meta := maps.Clone(cfg.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[metaInstance] = self.String()
	return &syncer{
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
	}
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

// run keeps Consul in step with the wanted status until ctx ends.
func (s *syncer) run(ctx context.Context) {
	log := s.cfg.Logger
	var (
		current    check.Result
		sent       check.Result
		registered bool
		retry      = retryFirst
		lastErr    string // the last failure's text; empty after a success
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	// Look the ID up while the child starts, so that the first registration
	// waits for nothing but itself. A failed look-up is left to push, which
	// looks again before registering.
	switch err := s.claim(ctx); {
	case err == nil:
		s.claimed = true
	case errors.Is(err, ErrIDInUse):
		s.fatal <- err
		return
	}

	// Nothing can be sent before the first result.
	select {
	case current = <-s.wanted:
	case <-ctx.Done():
		return
	}
	for {
		err := s.push(ctx, current, &registered)
		s.hangUp()
		switch {
		case err == nil:
			if lastErr != "" {
				log.Warn("consul agent answers again")
				lastErr = ""
			}
			if sent != current {
				log.Info("check", "status", current.Status.String(), "output", current.Output)
			} else {
				log.Debug("heartbeat", "status", current.Status.String())
			}
			sent = current
			retry = retryFirst
			timer.Reset(s.cfg.Heartbeat)
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrIDInUse):
			s.fatal <- err
			return
		default:
			// The look-up made at start no longer stands: by the retry,
			// another svcwrap may have taken the ID, or another agent of
			// the list may answer.
			s.claimed = false
			// The first failure, and any new one, is worth a warning; the same
			// failure again every few seconds of an outage is not.
			level := slog.LevelWarn
			if err.Error() == lastErr {
				level = slog.LevelDebug
			}
			lastErr = err.Error()
			wait := jitter(retry)
			log.Log(ctx, level, "consul", "error", err, "retry_in", wait.Round(time.Millisecond))
			timer.Reset(wait)
			retry = min(2*retry, retryMax)
		}

		if !s.await(ctx, timer, &current) {
			return
		}
	}
}

// await waits for a status that differs from current, the heartbeat, or the
// retry, and reports false when ctx ends first. An unchanged status is no news:
// the check loop hands one over every check interval, and sending each would
// cost the agent a request a second per wrapper where a heartbeat every ttl/3
// keeps the TTL just as true. A failed push is retried by the timer.
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

// hangUp closes the registry's idle connection, if it keeps one, once a push
// is done: the next is a heartbeat away, and an agent admits only so many
// connections per client IP, which all the wrappers of a host share. Closing
// here rather than on an idle timer spares a wake-up per heartbeat.
func (s *syncer) hangUp() {
	if c, ok := s.reg.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// push makes the agent hold current: a TTL update when the service is
// registered, a registration when it is not (or no longer) known.
func (s *syncer) push(ctx context.Context, current check.Result, registered *bool) error {
	status := current.Status.String()
	if *registered {
		if s.reaperNear(current) {
			return s.register(ctx, current, registered, false)
		}
		err := s.reg.SetStatus(ctx, s.cfg.ID, status, current.Output)
		if !errors.Is(err, consulclient.ErrNotRegistered) {
			return err
		}
		s.cfg.Logger.Warn("the agent forgot the service: registering again", "service", s.cfg.ID)
		*registered = false
	}
	return s.register(ctx, current, registered, true)
}

// register registers the service with current as its status. With claim, it
// first makes sure the ID is not held by another svcwrap that is alive,
// unless run has just done so.
func (s *syncer) register(ctx context.Context, current check.Result, registered *bool, claim bool) error {
	if claim && !s.claimed {
		if err := s.claim(ctx); err != nil {
			return err
		}
	}
	svc := s.service
	svc.Status, svc.Output = current.Status.String(), current.Output
	if err := s.reg.Register(ctx, svc); err != nil {
		return err
	}
	*registered = true
	s.claimed = false // a later registration looks again
	s.critical = time.Time{}
	if current.Status == check.Critical {
		s.critical = time.Now()
	}
	s.cfg.Logger.Info("registered", "service", s.cfg.ID, "status", svc.Status)
	return nil
}

// claim returns an error wrapping ErrIDInUse when the service ID is held by
// another svcwrap that is alive; a stale registration left by a dead one is
// taken over.
func (s *syncer) claim(ctx context.Context) error {
	h, err := s.reg.Holder(ctx, s.cfg.ID)
	if err != nil {
		return err
	}
	if h != nil && heldByOther(h, s.self) {
		return fmt.Errorf("%w: service %q is registered by %s", ErrIDInUse, s.cfg.ID, h.Meta[metaInstance])
	}
	return nil
}

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
// still alive. On this host, the process itself is looked at; elsewhere, a
// TTL the agent saw expire means its svcwrap is gone. A registration svcwrap
// did not make (no instance mark) is taken over, as ianitor's are.
func heldByOther(h *consulclient.Holder, self instance) bool {
	other, ok := parseInstance(h.Meta[metaInstance])
	if !ok || other == self {
		return false
	}
	if other.host == self.host {
		return other.alive()
	}
	return !h.TTLExpired()
}
