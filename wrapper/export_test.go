package wrapper

import (
	"context"
	"fmt"
	"time"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/consulclient"
)

// Syncer lets the external tests drive the syncer alone, with the fakes of
// fake_test.go.
type Syncer struct{ s *syncer }

// NewSyncer is newSyncer with cfg's defaults applied.
func NewSyncer(cfg Config, reg Registry) (Syncer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Syncer{}, err
	}
	return Syncer{newSyncer(cfg, reg)}, nil
}

func (s Syncer) Want(r check.Result)     { s.s.want(r) }
func (s Syncer) Run(ctx context.Context) { s.s.run(ctx) }

// Self is the svcwrap_instance meta this process registers with.
func Self() string { return currentInstance().String() }

// MetaInstance is the meta key of the instance mark.
const MetaInstance = metaInstance

// Guest is the service ID this process registers under on agents other
// than the first.
func Guest(id string) string { return guestID(id, currentInstance().host) }

// SetCatchLaterAfter sets how long Config.CatchLater waits at most for the
// first registration, until the test ends.
func SetCatchLaterAfter(t interface{ Cleanup(func()) }, d time.Duration) {
	old := catchLaterAfter
	catchLaterAfter = d
	t.Cleanup(func() { catchLaterAfter = old })
}

// NotSent is the error of a request the gate held back until its time ran
// out, as the gate makes it.
func NotSent() error {
	return &consulclient.AgentError{Op: "register", Agent: "agent0",
		Err: fmt.Errorf("%w: the host's requests to the agent are at their limit (16 calls): %w", errNotSent, context.DeadlineExceeded)}
}
