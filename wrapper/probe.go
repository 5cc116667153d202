package wrapper

import (
	"context"
	"time"

	"github.com/svcwrap/svcwrap/check"
)

// While the child is not ready, readiness is read often, starting at
// pendingFirst and doubling up to pendingInterval, so that a child that starts
// listening turns passing within pendingInterval. A not-ready check costs about
// 40 µs of CPU (one netlink query), which is cheap for one wrapper but not for
// a thousand that never become ready: after pendingFast without readiness the
// wait keeps doubling, up to the check interval.
const (
	pendingFirst    = time.Millisecond
	pendingInterval = 20 * time.Millisecond
	pendingFast     = 10 * time.Second
)

// probe runs the readiness check and says when to run it next.
type probe struct {
	checker  Checker
	interval time.Duration // while ready
	pending  time.Duration // next wait while not ready
	ready    bool
	since    time.Time // when the child was last seen not ready after being ready, or started
}

// running is the check without --port: the loop is only here while the child
// lives, so the child is ready.
type running struct{}

func (running) Check(context.Context) check.Result {
	return check.Result{Status: check.Passing, Output: "svcwrap: command running"}
}

func newProbe(cfg Config, pid int) *probe {
	p := &probe{checker: running{}, interval: cfg.CheckInterval, since: time.Now()}
	if cfg.Port != 0 {
		p.checker = check.NewPort(pid, cfg.Port)
	}
	return p
}

// polls reports whether readiness can change while the child runs, so that
// the check must be run again and again.
func (p *probe) polls() bool {
	_, static := p.checker.(running)
	return !static
}

func (p *probe) check(ctx context.Context) check.Result {
	r := p.checker.Check(ctx)
	ready := r.Status == check.Passing
	if !ready && p.ready {
		p.pending = 0 // lost readiness: look often again
		p.since = time.Now()
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
	case p.pending < pendingInterval || time.Since(p.since) > pendingFast:
		p.pending = min(2*p.pending, max(pendingInterval, p.interval))
	}
	return min(p.pending, p.interval)
}
