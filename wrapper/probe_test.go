package wrapper

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/check"
)

var (
	up   = check.Result{Status: check.Passing, Output: "GET u: 200"}
	busy = check.Result{Status: check.Warning, Output: "GET u: 429"}
	down = check.Result{Status: check.Critical, Output: "GET u: 503"}
	gone = check.Result{Status: check.Critical, Output: "GET u: connection refused"}
)

// --fail-after and --pass-after as Consul's FailuresBeforeCritical and
// SuccessBeforePassing: each step is one run's result and what the check
// reports after it.
func TestLimits(t *testing.T) {
	type step struct{ in, want check.Result }
	for name, tc := range map[string]struct {
		fail, pass int
		steps      []step
	}{
		"defaults follow every result": {0, 0, []step{
			{down, down}, {up, up}, {busy, busy}, {down, down}, {gone, gone}, {up, up},
		}},
		"fail-after 3 absorbs a blip": {3, 1, []step{
			{up, up}, {down, up}, {down, up}, {up, up}, {down, up}, {gone, up}, {down, down},
		}},
		"fail-after counts from warning": {2, 1, []step{
			{busy, busy}, {down, busy}, {down, down},
		}},
		"the first result is critical at once": {3, 1, []step{
			{down, down}, {up, up},
		}},
		"pass-after 2": {1, 2, []step{
			{down, down}, {up, down}, {down, down}, {up, down}, {busy, busy}, {up, up},
		}},
		"critical keeps its newest reason": {3, 1, []step{
			{down, down}, {gone, gone},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			l := limits{failAfter: tc.fail, passAfter: tc.pass}
			for i, s := range tc.steps {
				got, _ := l.observe(s.in)
				assert.Equal(t, s.want, got, "step %d", i)
			}
		})
	}
}

// A result equal to the one reported is not handed in again.
func TestLimits_UnchangedNotReported(t *testing.T) {
	l := limits{}
	_, changed := l.observe(up)
	assert.True(t, changed)
	_, changed = l.observe(up)
	assert.False(t, changed)
}

// Grace turns a critical start into warning, until the first pass; the
// output names the child.
func TestHealth_GraceAndChild(t *testing.T) {
	cfg, err := Config{Name: "web", Command: []string{"web"}, Grace: time.Hour, Checks: []string{"tcp:127.0.0.1:1"}}.withDefaults()
	require.NoError(t, err)
	h := newHealth(cfg, os.Getpid())
	child := " (" + check.Describe(context.Background(), os.Getpid()) + ")"

	assert.Equal(t, check.Result{Status: check.Warning, Output: "starting (--grace 1h0m0s): GET u: 503" + child},
		h.update(report{check: 0, result: down}))
	assert.Equal(t, check.Result{Status: check.Passing, Output: "GET u: 200" + child}, h.update(report{check: 0, result: up}))
	assert.Equal(t, check.Result{Status: check.Critical, Output: "GET u: 503" + child},
		h.update(report{check: 0, result: down}), "grace ends at the first pass")

	cfg.Grace = time.Nanosecond
	h2 := newHealth(cfg, os.Getpid())
	assert.Equal(t, check.Result{Status: check.Critical, Output: "GET u: 503" + child}, h2.update(report{check: 0, result: down}), "or once its time is up")
}
