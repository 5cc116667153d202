package wrapper

// Telling an operator about failures: once when one is known to persist, once
// when it heals, never once per retry.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/svcwrap/svcwrap/consulclient"
)

// persistAfter is how many beats (Config.beat: a heartbeat, at most a third
// of the TTL) a failure that may heal by itself (an agent that does not
// answer, or refuses) lasts before it is worth a line at the default
// verbosity. A failure that cannot heal by retrying (a 4xx, a TLS
// error) is reported at once.
const persistAfter = 3

// trouble is the failure svcwrap is in, if any: when it began and which
// failures were reported at the default verbosity.
type trouble struct {
	since    time.Time
	reported map[string]bool
}

// failed notes a failed push. A failure is reported at LevelNotice once, when
// it is known to persist: at once if retrying cannot heal it, otherwise after
// persistAfter beats. Every attempt is logged at debug level.
func (s *syncer) failed(err error, retryIn time.Duration) {
	log := s.log()
	if s.trouble.since.IsZero() {
		s.trouble = trouble{since: time.Now(), reported: map[string]bool{}}
		log.Warn("consul", "error", err, "retry_in", retryIn.Round(time.Millisecond))
	} else {
		log.Debug("consul", "error", err, "retry_in", retryIn.Round(time.Millisecond))
	}
	key := failureKey(err)
	lasted := time.Since(s.trouble.since)
	if s.trouble.reported[key] || (!consulclient.Permanent(err) && lasted < persistAfter*s.cfg.beat()) {
		return
	}
	s.trouble.reported[key] = true
	log.Log(context.Background(), LevelNotice, "consul: failing",
		"for", lasted.Round(time.Millisecond), "error", err)
	s.tell(fmt.Sprintf("Consul failing for %s: %v", lasted.Round(time.Second), err))
}

// failureKey tells one failure from another by what was asked of which agent
// and the kind of failure, not by the text, which can change on every attempt
// (a source port, a timing).
func failureKey(err error) string {
	var b strings.Builder
	var walk func(error)
	walk = func(e error) {
		if ae, ok := e.(*consulclient.AgentError); ok {
			fmt.Fprintf(&b, "%s|%s|%v;", ae.Op, ae.Agent, ae.Kind)
			return
		}
		if errors.Is(e, errHeld) && !errors.As(e, new(*consulclient.AgentError)) {
			b.WriteString("held;")
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	if b.Len() == 0 {
		return err.Error()
	}
	return b.String()
}

// healed notes a successful push, and says so if a failure was reported.
func (s *syncer) healed() {
	if s.trouble.since.IsZero() {
		return
	}
	if len(s.trouble.reported) > 0 {
		s.log().Log(context.Background(), LevelNotice, "consul: works again",
			"agent", s.reg.Addr(s.on), "after", time.Since(s.trouble.since).Round(time.Millisecond))
	} else {
		s.log().Warn("consul agent answers again", "agent", s.reg.Addr(s.on))
	}
	s.trouble = trouble{}
}
