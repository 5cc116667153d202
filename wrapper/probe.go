package wrapper

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svcwrap/svcwrap/check"
)

// The fast start: until a check first answers (passing, or warning), it is
// run often, the wait starting at pendingFirst and doubling up to
// pendingInterval, so that a child that becomes ready turns passing within
// pendingInterval. A not-ready listen check costs about 40 µs of CPU (one
// netlink query), which is cheap for one wrapper but not for a thousand that
// never become ready: after pendingFast without an answer the wait keeps
// doubling, up to the check interval.
const (
	pendingFirst    = time.Millisecond
	pendingInterval = 20 * time.Millisecond
	pendingFast     = 10 * time.Second
)

// health runs the checks, each in a goroutine of its own with one run at a
// time, so that the supervise loop never waits on the network or a script:
// a check hands its result in (results) only when it changes. The loop
// combines them (update): the worst status wins, --grace softens a critical
// start to warning, and the output names the child. Without checks there is
// nothing to run: the child is ready while it runs, and its end arrives as
// an event.
type health struct {
	cfg     Config
	pid     int
	checks  []*runner
	latest  []check.Result     // of each check, as it reported last
	results chan report        // from the checks' goroutines
	cancel  context.CancelFunc // abandons every run
	wg      sync.WaitGroup
	running atomic.Int32 // goroutines of wg not yet ended

	// firstDue fires when the first combined result is due, whether or not
	// every check has reported; graceEnds when --grace runs out. Each is
	// nil once handled.
	firstDue, graceEnds <-chan time.Time
	timers              []*time.Timer
	passed              bool // the combined status has been passing: grace is over
	graceOver           bool

	// handed is what the syncer was handed last: while the combined status
	// stays the same, so does the output, byte for byte (Consul writes an
	// output change to its servers).
	handed     check.Result
	handedOnce bool
	// unheard counts the checks that have not reported yet (their output
	// is the not-passing-yet placeholder); handedUnheard is what it was
	// when the syncer was handed last. A placeholder is not a reason: a
	// check's first report brings a new output even under the same status,
	// at most once per check.
	unheard, handedUnheard int
	heard                  []bool
	abandoned              time.Time // when the checks were abandoned

	// The child as Describe names it, read off the loop (a read of /proc
	// can block): once at the start, and again after each status change,
	// for the next one.
	childMu    sync.Mutex
	childName  string
	redescribe chan struct{}
}

// firstDueAfter is when the first combined result is handed over at the
// latest: a check that hangs must not keep the service out of Consul.
// Before it, the first report of a quick check (the listen check takes
// microseconds) is the first result.
const firstDueAfter = pendingInterval

// report is a check's new result.
type report struct {
	check  int
	result check.Result
}

func newHealth(cfg Config, pid int) *health {
	h := &health{cfg: cfg, pid: pid, childName: "pid " + strconv.Itoa(pid), redescribe: make(chan struct{}, 1)}
	for _, c := range plannedChecks(cfg) {
		h.add(c.name, c.make(pid), c.refast)
	}
	h.results = make(chan report, len(h.checks))
	return h
}

// plannedCheck is a check of a Config before the child runs. Its name
// (redacted) is its output until it has reported, and what the start line
// lists.
type plannedCheck struct {
	name   string
	make   func(pid int) Checker
	refast bool // see pace
}

// plannedChecks are cfg's checks, in the order they are combined: the
// listen check of Port, those of Checks, the tests' fakes.
func plannedChecks(cfg Config) []plannedCheck {
	var checks []plannedCheck
	if cfg.Port != 0 {
		// The listen check never touches the service: after a drop it
		// may look often again.
		checks = append(checks, plannedCheck{"listen on port " + strconv.Itoa(cfg.Port),
			func(pid int) Checker { return check.NewPort(pid, cfg.Port) }, true})
	}
	opts := checkOptions{timeout: cfg.CheckTimeout, skipVerify: cfg.CheckTLSSkipVerify, env: cfg.Env}
	for _, spec := range cfg.specs {
		checks = append(checks, plannedCheck{spec.String(), func(int) Checker { return opts.checker(spec) }, false})
	}
	for i, c := range cfg.checkers {
		checks = append(checks, plannedCheck{"check " + strconv.Itoa(i), func(int) Checker { return c }, false})
	}
	return checks
}

// add adds a check; name is its output until it has reported.
func (h *health) add(name string, c Checker, refast bool) {
	h.checks = append(h.checks, &runner{
		checker: c,
		pace:    pace{interval: h.cfg.CheckInterval, refast: refast},
		limits:  limits{failAfter: h.cfg.FailAfter, passAfter: h.cfg.PassAfter},
	})
	// Until a check has reported, it counts as critical: the service
	// starts critical, and passes once every check does.
	h.latest = append(h.latest, check.Result{Status: check.Critical, Output: name + ": not passing yet"})
	h.heard = append(h.heard, false)
	h.unheard++
}

// checkOptions are the settings every active check shares.
type checkOptions struct {
	timeout    time.Duration
	skipVerify bool
	env        []string
}

func (o checkOptions) checker(spec check.Spec) Checker {
	switch spec.Kind {
	case check.KindHTTP:
		return check.NewHTTP(spec.Target, check.HTTPOptions{Timeout: o.timeout, TLSSkipVerify: o.skipVerify})
	case check.KindTCP:
		return check.TCP{Addr: spec.Target, Timeout: o.timeout}
	default:
		return check.Script{Command: spec.Target, Timeout: o.timeout, Env: o.env}
	}
}

// start starts the checks and returns the first result to hand the syncer,
// if there is one already: without checks, the child is ready while it runs.
// With checks, the first result comes from the first check that reports.
func (h *health) start() (check.Result, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.startDescribing(ctx)
	if len(h.checks) == 0 {
		return h.combine(), true
	}
	h.firstDue = h.after(firstDueAfter)
	if h.cfg.Grace > 0 {
		h.graceEnds = h.after(h.cfg.Grace)
	}
	for i, r := range h.checks {
		h.spawn(func() { r.run(ctx, i, h.results) })
	}
	return check.Result{}, false
}

// spawn runs fn in a goroutine that stop waits for.
func (h *health) spawn(fn func()) {
	h.wg.Add(1)
	h.running.Add(1)
	go func() {
		defer h.wg.Done()
		defer h.running.Add(-1)
		fn()
	}()
}

func (h *health) after(d time.Duration) <-chan time.Time {
	t := time.NewTimer(d)
	h.timers = append(h.timers, t)
	return t.C
}

// startDescribing names the child in a goroutine of its own, once now and
// again on each request. It waits for the first name as long as the first
// result may take (firstDueAfter), no longer: the child is then named by its
// PID alone until the next status change.
func (h *health) startDescribing(ctx context.Context) {
	first := make(chan struct{})
	h.spawn(func() {
		h.setChild(check.Describe(h.pid))
		close(first)
		for {
			select {
			case <-h.redescribe:
				h.setChild(check.Describe(h.pid))
			case <-ctx.Done():
				return
			}
		}
	})
	t := time.NewTimer(firstDueAfter)
	defer t.Stop()
	select {
	case <-first:
	case <-t.C:
	}
}

func (h *health) setChild(name string) {
	h.childMu.Lock()
	h.childName = name
	h.childMu.Unlock()
}

func (h *health) child() string {
	h.childMu.Lock()
	defer h.childMu.Unlock()
	return h.childName
}

// update takes a check's new result in and returns the combined one.
func (h *health) update(rep report) check.Result {
	h.latest[rep.check] = rep.result
	if !h.heard[rep.check] {
		h.heard[rep.check] = true
		h.unheard--
	}
	return h.combine()
}

// onFirstDue returns the combined result when the first one is due.
func (h *health) onFirstDue() check.Result {
	h.firstDue = nil
	return h.combine()
}

// onGraceEnd returns the combined result when --grace runs out.
func (h *health) onGraceEnd() check.Result {
	h.graceEnds, h.graceOver = nil, true
	return h.combine()
}

// combine is the one result of all checks, as the syncer is to have it: the
// worst status wins, a critical one reads warning during --grace until the
// first pass, and the output is the one handed over last while the status
// is the same (see hand).
func (h *health) combine() check.Result {
	r := check.Result{Status: check.Passing, Output: "svcwrap: command running"}
	if len(h.checks) > 0 {
		r = check.Worst(h.latest...)
	}
	if r.Status == check.Passing {
		h.passed = true
	}
	if r.Status == check.Critical && h.cfg.Grace > 0 && !h.passed && !h.graceOver {
		r = check.Result{Status: check.Warning, Output: "starting (--grace " + h.cfg.Grace.String() + "): " + r.Output}
	}
	return h.hand(r)
}

// hand is the one place where a combined result becomes what the syncer is
// handed. While its status is the one handed over last, the output handed
// over last is kept, byte for byte, whatever the reasons now: a reason that
// changes under the same status (503, then connection refused), checks
// joining or leaving the worst status, a script's changing first line.
// A new status brings a new output, naming the child (pid and command), and
// so does a check's first report while the output handed over holds its
// placeholder: "not passing yet" is no reason, and an operator looking at a
// critical service is to read why (not listening, a script that times out).
// That is one write more per check at most: with several checks, each one's
// first report after the first brings one.
func (h *health) hand(r check.Result) check.Result {
	if h.handedOnce && r.Status == h.handed.Status && h.unheard == h.handedUnheard {
		return h.handed
	}
	r.Output += " (" + h.child() + ")"
	h.handed, h.handedOnce, h.handedUnheard = r, true, h.unheard
	select { // the child as it is by the next status change
	case h.redescribe <- struct{}{}:
	default:
	}
	return r
}

// abandon cancels every check under way, at once: a stop never waits on a
// check. A running script's process group is killed.
func (h *health) abandon() {
	if h.cancel != nil {
		h.cancel()
	}
	for _, t := range h.timers {
		t.Stop()
	}
	h.firstDue, h.graceEnds = nil, nil
	if h.abandoned.IsZero() {
		h.abandoned = time.Now()
	}
}

// stop abandons the checks and waits for their goroutines, so that no
// process of a check outlives Run. An abandoned check ends within moments
// (a script's group is killed; its output is read for drainAfterExit at
// most); the wait is bounded by the kill timeout counted from the
// abandonment, which the stop already grants the child's group, so that a
// stuck check (a read of /proc in D state) adds nothing beyond it.
func (h *health) stop() {
	h.abandon()
	// All ended, maybe long ago: a stop that took longer than --kill-timeout
	// (a deregistration retried while the child stopped) must not find the
	// deadline below gone and report them running.
	if h.running.Load() == 0 {
		return
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	t := time.NewTimer(max(time.Until(h.abandoned.Add(h.cfg.KillTimeout)), 0))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		h.cfg.Logger.Warn("checks still running after the stop", "after", h.cfg.KillTimeout)
	}
}

// runner runs one check again and again, one run at a time, until ctx ends.
type runner struct {
	checker Checker
	pace    pace
	limits  limits
}

func (r *runner) run(ctx context.Context, i int, results chan<- report) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		res := r.checker.Check(ctx)
		if ctx.Err() != nil {
			return // abandoned: the result means nothing
		}
		if reported, changed := r.limits.observe(res); changed {
			select {
			case results <- report{check: i, result: reported}:
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(r.pace.next(r.limits.critical()))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// limits is --fail-after and --pass-after for one check, as Consul's
// FailuresBeforeCritical and SuccessBeforePassing: a critical result turns
// the check critical after failAfter of them in a row, a passing or warning
// one turns a critical check passing (or warning) after passAfter in a row.
// Until then the check keeps what it reported last. Until it first reports,
// a check is critical. They count runs: during the fast start (see pace),
// passAfter runs at the fast pace; once the check has answered, runs at the
// interval, as Consul counts its own checks' runs.
type limits struct {
	failAfter, passAfter int // zero counts as one
	fails, passes        int
	reported             check.Result // meaningful once have is set
	have                 bool
}

// critical reports whether the check, as reported, is critical: also before
// its first report.
func (l *limits) critical() bool { return !l.have || l.reported.Status == check.Critical }

// observe takes a run's result and returns what the check reports, and
// whether that changed.
func (l *limits) observe(r check.Result) (check.Result, bool) {
	critical := r.Status != check.Passing && r.Status != check.Warning
	if critical {
		l.fails, l.passes = l.fails+1, 0
	} else {
		l.passes, l.fails = l.passes+1, 0
	}
	var apply bool
	switch {
	case critical && l.critical():
		apply = true // the service starts critical
	case critical:
		apply = l.fails >= max(1, l.failAfter)
	case l.critical():
		apply = l.passes >= max(1, l.passAfter)
	default:
		apply = true
	}
	if !apply || (l.have && r == l.reported) {
		return l.reported, false
	}
	l.reported, l.have = r, true
	return r, true
}

// pace says how long a check waits before its next run. Until the check
// first answers (reports passing or warning), the fast start: pendingFirst,
// doubling to pendingInterval, and on to the interval after pendingFast.
// Once it has answered, the interval: an http, tcp or script check that
// drops is run again at the interval, not tens of times a second against a
// service that struggles. A refast check (the listen check, which never
// touches the service) starts fast again whenever it turns critical.
type pace struct {
	interval time.Duration
	refast   bool

	answered bool          // the check has reported passing or warning
	fast     time.Duration // the last wait of the fast pace; zero: it begins
	fastFrom time.Time     // when the fast pace began
}

// next is the wait before the next run of a check that is, as reported,
// critical or not.
func (p *pace) next(critical bool) time.Duration {
	if !critical {
		p.answered, p.fast = true, 0
		return p.interval
	}
	if p.answered && !p.refast {
		return p.interval
	}
	switch {
	case p.fast == 0:
		p.fast, p.fastFrom = pendingFirst, time.Now()
	case time.Since(p.fastFrom) < pendingFast:
		p.fast = min(2*p.fast, pendingInterval)
	default: // never answered: slow down to the interval
		p.fast = min(2*p.fast, max(p.interval, pendingInterval))
	}
	return min(p.fast, p.interval)
}

var (
	_ Checker = check.HTTP{}
	_ Checker = check.TCP{}
	_ Checker = check.Script{}
)
