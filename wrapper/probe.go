package wrapper

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/svcwrap/svcwrap/check"
)

// While a check is critical, it is run often, starting at pendingFirst and
// doubling up to pendingInterval, so that a child that becomes ready turns
// passing within pendingInterval. A not-ready listen check costs about 40 µs
// of CPU (one netlink query), which is cheap for one wrapper but not for a
// thousand that never become ready: after pendingFast without readiness the
// wait keeps doubling, up to the check interval.
const (
	pendingFirst    = time.Millisecond
	pendingInterval = 20 * time.Millisecond
	pendingFast     = 10 * time.Second
)

// stopWait bounds how long Run, as it returns, waits for the checks it
// abandoned to end: they were cancelled (a script's group killed) when the
// stop began, so they end within moments.
const stopWait = 2 * time.Second

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

	started time.Time
	passed  bool // the combined status has been passing
	timer   *time.Timer
	due     <-chan time.Time // the first result is due, or --grace ends
	status  check.Status     // of the last combined result; -1: none yet
	child   string           // the child as named at the last status change
}

// firstDue is when the first combined result is handed over at the latest,
// whether or not every check has reported: a check that hangs must not keep
// the service out of Consul. Before it, the first report of a quick check
// (the listen check takes microseconds) is the first result.
const firstDue = pendingInterval

// report is a check's new result.
type report struct {
	check  int
	result check.Result
}

func newHealth(cfg Config, pid int) *health {
	h := &health{cfg: cfg, pid: pid, started: time.Now(), status: -1}
	opts := checkOptions{timeout: cfg.CheckTimeout, skipVerify: cfg.CheckTLSSkipVerify, env: cfg.Env}
	if cfg.Port != 0 {
		h.add("listen on port "+strconv.Itoa(cfg.Port), check.NewPort(pid, cfg.Port))
	}
	for _, spec := range cfg.specs {
		h.add(spec.String(), opts.checker(spec))
	}
	h.results = make(chan report, len(h.checks))
	return h
}

func (h *health) add(name string, c Checker) {
	h.checks = append(h.checks, &runner{
		checker: c,
		pace:    pace{interval: h.cfg.CheckInterval},
		limits:  limits{failAfter: h.cfg.FailAfter, passAfter: h.cfg.PassAfter},
	})
	// Until a check has reported, it counts as critical: the service
	// starts critical, and passes once every check does.
	h.latest = append(h.latest, check.Result{Status: check.Critical, Output: name + ": not passing yet"})
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
	if len(h.checks) == 0 {
		return h.combine(), true
	}
	h.timer = time.NewTimer(firstDue)
	h.due = h.timer.C
	for i, r := range h.checks {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			r.run(ctx, i, h.results)
		}()
	}
	return check.Result{}, false
}

// update takes a check's new result in and returns the combined one.
func (h *health) update(rep report) check.Result {
	h.latest[rep.check] = rep.result
	return h.combine()
}

// onDue returns the combined result when the first is due, or when --grace
// ends.
func (h *health) onDue() check.Result {
	h.due = nil
	if rest := h.cfg.Grace - time.Since(h.started); rest > 0 && !h.passed {
		h.timer.Reset(rest)
		h.due = h.timer.C
	}
	return h.combine()
}

// combine is the one result of all checks: the worst status wins, a critical
// one reads warning during --grace until the first pass, and the output
// names the child (pid and command, read again at each status change, so
// that the output stays the same while the status does).
func (h *health) combine() check.Result {
	r := check.Result{Status: check.Passing, Output: "svcwrap: command running"}
	if len(h.checks) > 0 {
		r = check.Worst(h.latest...)
	}
	if r.Status == check.Passing {
		h.passed = true
	}
	if r.Status == check.Critical && !h.passed && time.Since(h.started) < h.cfg.Grace {
		r = check.Result{Status: check.Warning, Output: "starting (--grace " + h.cfg.Grace.String() + "): " + r.Output}
	}
	if r.Status != h.status || h.child == "" {
		h.status = r.Status
		h.child = check.Describe(context.Background(), h.pid)
	}
	r.Output += " (" + h.child + ")"
	return r
}

// abandon cancels every check under way, at once: a stop never waits on a
// check. A running script's process group is killed.
func (h *health) abandon() {
	if h.cancel != nil {
		h.cancel()
	}
	if h.timer != nil {
		h.timer.Stop()
		h.due = nil
	}
}

// stop abandons the checks and waits, boundedly, for their goroutines, so
// that no process of a check outlives Run.
func (h *health) stop() {
	h.abandon()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		h.cfg.Logger.Warn("checks still running after the stop", "after", stopWait)
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
		timer.Reset(r.pace.next(r.limits.reported.Status != check.Critical))
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
// Until then the check keeps what it reported last, output included.
type limits struct {
	failAfter, passAfter int // zero counts as one
	fails, passes        int
	reported             check.Result
	have                 bool
}

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
	wasCritical := !l.have || l.reported.Status == check.Critical
	switch {
	case critical && wasCritical:
		apply = true // the service starts critical
	case critical:
		apply = l.fails >= max(1, l.failAfter)
	case wasCritical:
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

// pace says when to run a check next: every interval while it is not
// critical, far more often while it is (see pendingInterval).
type pace struct {
	interval time.Duration // while not critical
	pending  time.Duration // next wait while critical
	ready    bool
	since    time.Time // when the check last turned critical, or started
}

func (p *pace) next(ready bool) time.Duration {
	if p.since.IsZero() {
		p.since = time.Now()
	}
	if !ready && p.ready {
		p.pending = 0 // lost readiness: look often again
		p.since = time.Now()
	}
	p.ready = ready
	if ready {
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

var (
	_ Checker = check.HTTP{}
	_ Checker = check.TCP{}
	_ Checker = check.Script{}
)

// checkDefaults is withDefaults for the settings of the checks.
func (cfg *Config) checkDefaults() error {
	cfg.specs = nil
	for _, c := range cfg.Checks {
		spec, err := check.ParseSpec(c)
		if err != nil {
			return usageErr(err)
		}
		cfg.specs = append(cfg.specs, spec)
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.CheckTimeout < 0 {
		return usagef("check timeout %s must be positive", cfg.CheckTimeout)
	}
	if cfg.Grace < 0 {
		return usagef("grace %s must not be negative", cfg.Grace)
	}
	if cfg.FailAfter < 0 || cfg.PassAfter < 0 {
		return usagef("fail-after %d, pass-after %d: must not be negative", cfg.FailAfter, cfg.PassAfter)
	}
	return nil
}
