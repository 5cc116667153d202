package wrapper

import (
	"os"
	"strconv"
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
	full = check.Result{Status: check.Warning, Output: "script exited 1: disk 91% full"}
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
		// A new reason under the same status is handed in; the output the
		// syncer gets stays the same (TestHealth_OutputStable).
		"a critical check reports its newest reason": {3, 1, []step{
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

// Before its first report a check is critical, whatever the zero Result
// reads (Passing): with --pass-after 3, a first passing run leaves it
// critical, and so on the fast pace.
func TestLimits_CriticalUntilReported(t *testing.T) {
	l := limits{passAfter: 3}
	assert.True(t, l.critical())
	l.observe(up)
	assert.True(t, l.critical(), "one pass of three")
	l.observe(up)
	l.observe(up)
	assert.False(t, l.critical())
}

// The fast start lasts until the first answer; after it, a drop of an
// active check is run again at the interval, and one of the listen check
// (refast) at the fast pace again.
func TestPace(t *testing.T) {
	const interval = time.Hour
	fastStart := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond,
		8 * time.Millisecond, 16 * time.Millisecond, pendingInterval, pendingInterval}
	waits := func(p *pace, critical bool, n int) []time.Duration {
		var out []time.Duration
		for range n {
			out = append(out, p.next(critical))
		}
		return out
	}
	t.Run("active", func(t *testing.T) {
		p := pace{interval: interval}
		assert.Equal(t, fastStart, waits(&p, true, len(fastStart)), "fast until the first answer")
		assert.Equal(t, interval, p.next(false))
		assert.Equal(t, []time.Duration{interval, interval}, waits(&p, true, 2), "a drop is run again at the interval")
	})
	t.Run("listen", func(t *testing.T) {
		p := pace{interval: interval, refast: true}
		assert.Equal(t, fastStart[:3], waits(&p, true, 3))
		assert.Equal(t, interval, p.next(false))
		assert.Equal(t, fastStart[:3], waits(&p, true, 3), "a drop is looked at fast again")
	})
	t.Run("short interval", func(t *testing.T) {
		p := pace{interval: 5 * time.Millisecond}
		assert.Equal(t, []time.Duration{1, 2, 4, 5, 5}, scale(waits(&p, true, 5)))
	})
}

func scale(ds []time.Duration) []time.Duration {
	for i := range ds {
		ds[i] /= time.Millisecond
	}
	return ds
}

// testHealth is a health of the given checks (the listen check of a port
// when port is set), its child named without reading /proc.
func testHealth(t *testing.T, cfg Config) *health {
	t.Helper()
	cfg.Name, cfg.Command = "web", []string{"web"}
	cfg, err := cfg.withDefaults()
	require.NoError(t, err)
	return newHealth(cfg, 4242)
}

// The output handed to the syncer stays byte for byte the same while the
// combined status does: through a change of reason, checks joining or
// leaving the worst status. A new status brings a new output, naming the
// child, and so does each check's first report while the output holds the
// placeholders: they are no reason.
func TestHealth_OutputStable(t *testing.T) {
	h := testHealth(t, Config{Checks: []string{"tcp:127.0.0.1:1", "script:true"}})
	first := h.onFirstDue()
	assert.Equal(t, check.Result{Status: check.Critical,
		Output: "tcp:127.0.0.1:1: not passing yet; script:true: not passing yet (pid 4242)"}, first)

	t.Run("critical", func(t *testing.T) {
		reason := h.update(report{check: 0, result: down})
		assert.Equal(t, check.Result{Status: check.Critical,
			Output: "GET u: 503; script:true: not passing yet (pid 4242)"}, reason, "a placeholder replaced by a reason")
		assert.Equal(t, reason, h.update(report{check: 0, result: gone}), "503, then connection refused")
		both := h.update(report{check: 1, result: down})
		assert.Equal(t, check.Result{Status: check.Critical,
			Output: "GET u: connection refused; GET u: 503 (pid 4242)"}, both, "the last placeholder replaced: the second check's first report")
		assert.Equal(t, both, h.update(report{check: 1, result: up}), "a check leaves the worst")
	})
	t.Run("warning", func(t *testing.T) {
		warn := h.update(report{check: 0, result: busy})
		assert.Equal(t, check.Result{Status: check.Warning, Output: "GET u: 429 (pid 4242)"}, warn, "a new status, a new output")
		assert.Equal(t, warn, h.update(report{check: 1, result: full}), "a script's warning joins")
		assert.Equal(t, warn, h.update(report{check: 0, result: up}), "the first leaves")
		assert.Equal(t, warn, h.update(report{check: 1, result: check.Result{Status: check.Warning, Output: "script exited 1: disk 92% full"}}),
			"a script's first line changes")
	})
	t.Run("passing", func(t *testing.T) {
		assert.Equal(t, check.Result{Status: check.Passing, Output: "GET u: 200; GET u: 200 (pid 4242)"},
			h.update(report{check: 1, result: up}))
		assert.Equal(t, check.Result{Status: check.Critical, Output: "GET u: connection refused (pid 4242)"},
			h.update(report{check: 0, result: gone}), "back to critical: the reason of now")
	})
}

// The password of an http check's URL is in neither the output nor the
// start line.
func TestHealth_Redacted(t *testing.T) {
	cfg := Config{Checks: []string{"http://user:s3cret@127.0.0.1:1/health"}}
	h := testHealth(t, cfg)
	out := h.onFirstDue().Output
	assert.NotContains(t, out, "s3cret")
	assert.Contains(t, out, "http:http://user:xxxxx@127.0.0.1:1/health: not passing yet")
	assert.Equal(t, []string{"http:http://user:xxxxx@127.0.0.1:1/health"}, describeChecks(h.cfg))
}

// Grace turns a critical start into warning, until the first pass; the
// output names the child, read at the start.
func TestHealth_GraceAndChild(t *testing.T) {
	cfg, err := Config{Name: "web", Command: []string{"web"}, Grace: time.Hour, Checks: []string{"tcp:127.0.0.1:1"}}.withDefaults()
	require.NoError(t, err)
	h := newHealth(cfg, os.Getpid())
	h.start()
	t.Cleanup(h.stop)
	require.Eventually(t, func() bool { return h.child() != "pid "+strconv.Itoa(os.Getpid()) }, 10*time.Second, time.Millisecond)
	child := " (" + check.Describe(os.Getpid()) + ")"

	assert.Equal(t, check.Result{Status: check.Warning, Output: "starting (--grace 1h0m0s): GET u: 503" + child},
		h.update(report{check: 0, result: down}))
	assert.Equal(t, check.Result{Status: check.Passing, Output: "GET u: 200" + child}, h.update(report{check: 0, result: up}))
	assert.Equal(t, check.Result{Status: check.Critical, Output: "GET u: 503" + child},
		h.update(report{check: 0, result: down}), "grace ends at the first pass")

	h2 := testHealth(t, Config{Grace: time.Hour, Checks: []string{"tcp:127.0.0.1:1"}})
	assert.Equal(t, check.Warning, h2.update(report{check: 0, result: down}).Status)
	assert.Equal(t, check.Result{Status: check.Critical, Output: "GET u: 503 (pid 4242)"}, h2.onGraceEnd(), "or once its time is up")
}
