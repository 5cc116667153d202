package wrapper

import (
	"context"
	"time"

	"github.com/svcwrap/svcwrap/check"
)

// While the child is not ready, readiness is read often, starting at
// pendingFirst and doubling up to pendingInterval: a child that starts
// listening turns passing within pendingInterval, and a not-ready check costs
// two small /proc reads, not a connection.
const (
	pendingFirst    = time.Millisecond
	pendingInterval = 20 * time.Millisecond
)

// probe runs the readiness check and says when to run it next.
type probe struct {
	checker  Checker
	interval time.Duration // while ready
	pending  time.Duration // next wait while not ready
	ready    bool
}

// running is the check without --port: the loop is only here while the child
// lives, so the child is ready.
type running struct{}

func (running) Check(context.Context) check.Result {
	return check.Result{Status: check.Passing, Output: "svcwrap: command running"}
}

func newProbe(cfg Config, pid int) *probe {
	p := &probe{checker: running{}, interval: cfg.CheckInterval}
	if cfg.Port != 0 {
		p.checker = check.Port{PID: pid, Port: cfg.Port}
	}
	return p
}

func (p *probe) check(ctx context.Context) check.Result {
	r := p.checker.Check(ctx)
	ready := r.Status == check.Passing
	if !ready && p.ready {
		p.pending = 0 // lost readiness: look often again
	}
	p.ready = ready
	return r
}

func (p *probe) next() time.Duration {
	if p.ready {
		return p.interval
	}
	switch {
	case p.pending == 0:
		p.pending = pendingFirst
	case p.pending < pendingInterval:
		p.pending = min(2*p.pending, pendingInterval)
	}
	return min(p.pending, p.interval)
}
