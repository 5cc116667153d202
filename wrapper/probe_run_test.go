package wrapper_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/wrapper"
)

var (
	pass = check.Result{Status: check.Passing, Output: "fake: ok"}
	fail = check.Result{Status: check.Critical, Output: "fake: down"}
)

// fakeCheck is a Checker the test drives: each run is journaled as
// "check run N" and returns the next result the test gives it, or blocks
// until its context ends.
type fakeCheck struct {
	j       *journal
	runs    atomic.Int32
	results chan check.Result
}

func newFakeCheck(j *journal, results ...check.Result) *fakeCheck {
	c := &fakeCheck{j: j, results: make(chan check.Result, 16)}
	for _, r := range results {
		c.results <- r
	}
	return c
}

func (c *fakeCheck) Check(ctx context.Context) check.Result {
	c.j.add("check run %d", c.runs.Add(1))
	select {
	case r := <-c.results:
		return r
	case <-ctx.Done():
		return check.Result{Status: check.Critical, Output: "cancelled"}
	}
}

// runWith runs the lifecycle with a fake child, registry and check, the
// check's first results given; all three share one journal.
func runWith(t *testing.T, cfg wrapper.Config, results ...check.Result) (*fakeRun, *fakeCheck) {
	t.Helper()
	j := newJournal()
	fc := newFakeCheck(j, results...)
	r := startFake(t, wrapper.WithCheckers(cfg, fc), diesOn(syscall.SIGTERM), func(r *fakeRun) {
		r.j = j
		r.reg.j = j
		r.child.j = j
	})
	return r, fc
}

// Pace: with --pass-after 3 the three passing runs that turn the check
// passing come at the fast pace, though the first already passes; after
// that the check runs at the interval (an hour): heartbeats go on, and no
// fourth run comes.
func TestChecks_FastUntilFirstPass(t *testing.T) {
	r, fc := runWith(t, wrapper.Config{CheckInterval: time.Hour, PassAfter: 3, TTL: time.Second, Heartbeat: 10 * time.Millisecond},
		pass, pass, pass)
	r.j.waitFor(t, "check run 3")
	r.j.waitFor(t, "status web passing")
	passing := is("status web passing")
	beats := r.j.countMatch(passing)
	r.j.waitUntil(t, func() bool { return r.j.countMatch(passing) >= beats+5 }, func() string { return fmt.Sprintf("%q", r.j.all()) })
	assert.GreaterOrEqual(t, r.j.countMatch(passing), beats+5, "heartbeats")
	assert.Equal(t, int32(3), fc.runs.Load(), "no run before the interval once passing")
	r.sigs <- syscall.SIGTERM
	r.wait(t)
}

// A check that has not reported by the first result's deadline does not
// keep the service out of Consul: it is registered critical while the run
// still hangs, and the stop does not wait for it.
func TestChecks_FirstResultDeadline(t *testing.T) {
	r, fc := runWith(t, wrapper.Config{CheckInterval: time.Hour})
	r.j.waitFor(t, "register web critical")
	assert.Equal(t, int32(1), fc.runs.Load(), "the first run still hangs")
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	require.NoError(t, res.err)
	assert.Equal(t, 128+int(syscall.SIGTERM), res.code)
}

// --grace: a critical start reads warning, and critical once grace ends.
func TestChecks_Grace(t *testing.T) {
	r, _ := runWith(t, wrapper.Config{CheckInterval: time.Hour, Grace: 50 * time.Millisecond}, fail)
	r.j.waitFor(t, "register web warning")
	r.j.waitFor(t, "status web critical")
	requireBefore(t, r.j, "register web warning", "status web critical")
	r.sigs <- syscall.SIGTERM
	r.wait(t)
}

// A check whose run hangs delays neither a heartbeat, nor a signal's
// forwarding, nor the stop.
func TestChecks_SlowCheckDelaysNothing(t *testing.T) {
	r, fc := runWith(t, wrapper.Config{CheckInterval: time.Millisecond, TTL: time.Second, Heartbeat: 10 * time.Millisecond}, pass)
	r.j.waitFor(t, "check run 2") // hangs
	passing := is("status web passing")
	beats := r.j.countMatch(passing)
	r.j.waitUntil(t, func() bool { return r.j.countMatch(passing) >= beats+3 }, func() string { return fmt.Sprintf("%q", r.j.all()) })
	assert.GreaterOrEqual(t, r.j.countMatch(passing), beats+3, "heartbeats while the run hangs")
	r.sigs <- syscall.SIGHUP
	r.j.waitFor(t, "signal SIGHUP")
	r.sigs <- syscall.SIGTERM
	res := r.wait(t)
	assert.Equal(t, 128+int(syscall.SIGTERM), res.code)
	assert.Equal(t, int32(2), fc.runs.Load(), "one run at a time")
}
